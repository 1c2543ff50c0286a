"""Benchmarks: each prints figures and asserts nothing (`make bench`, `make bench-agent`, ...)."""
