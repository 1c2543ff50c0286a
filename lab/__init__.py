"""The minicni lab: virtual clusters in network namespaces, probes and the connectivity matrix.

Kept free of imports: `python -m lab.probes` runs once per probe, and every millisecond counts.
"""
