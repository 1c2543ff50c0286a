"""Benchmarks that print figures (run as root): `python -m lab.bench.plugin` (`make bench`),
`python -m lab.bench.agent` (`make bench-agent`), `python -m lab.bench.cri` (`make bench-cri`)."""
