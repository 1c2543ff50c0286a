"""A small inventory the matrix tests share: two nodes, two pods on n1, one on n2."""

from __future__ import annotations

from lab.matrix.executors import NODE, POD, Endpoint, Inventory, Service

N1 = Endpoint("n1", NODE, "n1", "172.30.0.11", "ml1-n1")
N2 = Endpoint("n2", NODE, "n2", "172.30.0.12", "ml1-n2")
P10 = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "ml1-n1p0")
P11 = Endpoint("n1/p1", POD, "n1", "10.244.1.3", "ml1-n1p1")
P20 = Endpoint("n2/p0", POD, "n2", "10.244.2.2", "ml1-n2p0")
INVENTORY = Inventory.build([N1, N2, P10, P11, P20])

# Services in front of n1/p0 and n2/p0, as the lab puts them in front of every node's first pod
TCP_SERVICE = Service("probe-tcp", "tcp", "10.96.0.20", 80, 30080, ("n1/p0", "n2/p0"))
UDP_SERVICE = Service("probe-udp", "udp", "10.96.0.21", 53, 30080, ("n1/p0", "n2/p0"))
SERVICE_INVENTORY = Inventory.build([N1, N2, P10, P11, P20], services=[TCP_SERVICE, UDP_SERVICE])
