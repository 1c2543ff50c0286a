"""From the lab's plan to kube-proxy's input and the matrix's Services (pure parts)."""

from __future__ import annotations

from lab.cluster.kubeproxy import ServiceEndpoint
from lab.cluster.services import matrix_services, service_ports
from lab.topology import Topology, plan

LAB = plan(Topology(nodes=2, pods_per_node=2), "ml1")
POD_IPS = {"n1/p0": "10.244.1.3", "n1/p1": "10.244.1.2", "n2/p0": "10.244.2.2", "n2/p1": "x"}


def test_kube_proxy_gets_each_service_port_with_the_endpoints_addresses() -> None:
    ports = service_ports(LAB.services, POD_IPS)
    assert [(p.port_name_string, p.protocol, p.cluster_ip, p.port) for p, _ in ports] == [
        ("lab/probe-tcp:probe", "tcp", "10.96.0.20", 80),
        ("lab/probe-udp:probe", "udp", "10.96.0.21", 53),
    ]
    expected = [ServiceEndpoint("10.244.1.3", 30080), ServiceEndpoint("10.244.2.2", 30080)]
    assert all(endpoints == expected for _, endpoints in ports)


def test_the_matrix_gets_the_same_services_by_endpoint_name() -> None:
    tcp, udp = matrix_services(LAB.services)
    assert (tcp.name, tcp.proto, tcp.cluster_ip, tcp.port, tcp.target_port) == (
        "probe-tcp",
        "tcp",
        "10.96.0.20",
        80,
        30080,
    )
    assert tcp.endpoints == udp.endpoints == ("n1/p0", "n2/p0")
