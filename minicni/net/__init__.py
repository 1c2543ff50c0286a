"""Kernel layer: netlink (pyroute2) and sysctl helpers. Knows nothing of the CNI protocol."""
