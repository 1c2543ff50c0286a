"""The connectivity matrix: `cases` (cells and the pure judge), `executors` (where a probe runs:
a namespace or a Kubernetes pod), `runner` (probe processes -> observations -> verdicts) and
`report` (grids, JSON, JUnit)."""
