"""Benchmarks that print figures: `python -m lab.bench.plugin` (`make bench`, root),
`python -m lab.bench.agent` (`make bench-agent`, root), `python -m lab.bench.cri` (`make bench-cri`,
root), `python -m lab.bench.node_source` (`make bench-node-source`) and
`python -m lab.bench.firewall_read` (`make bench-firewall-read`, root)."""
