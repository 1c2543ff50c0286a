"""Connectivity probes, run as `python -m lab.probes recv|send` once per matrix cell.

Kept free of imports: hundreds of probe processes start per matrix, and every millisecond counts.
`__main__` is the one entry point; `wire` the ICMP wire format; `sockets` the default engine;
`scapy_engine` the cross-check that sniffs probes off the wire.
"""
