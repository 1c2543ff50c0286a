"""Benchmarks that print figures (run as root): `python -m lab.bench.plugin` (`make bench`) and
`python -m lab.bench.agent` (`make bench-agent`)."""
