"""The node's own subnets where host-gw works, of both families (no kernel)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from minicni.agent.apply.hostnet import connected_subnets
from minicni.agent.model.nodes import ClusterCidrs
from minicni.net.addresses import KernelAddress

DUAL = ClusterCidrs(IPv4Network("10.244.0.0/16"), IPv6Network("fd00:10:244::/56"))


def address(index: int, cidr: str) -> KernelAddress:
    ip = cidr.partition("/")[0]
    parsed = IPv6Address(ip) if ":" in ip else IPv4Address(ip)
    network = (IPv6Network if ":" in ip else IPv4Network)(cidr, strict=False)
    return KernelAddress(index, network, parsed)


def test_subnets_of_both_families_without_link_local_pods_loopback_or_our_devices() -> None:
    addresses = [
        address(1, "127.0.0.1/8"),
        address(1, "::1/128"),
        address(2, "192.168.50.11/24"),
        address(2, "fd00:50::11/64"),
        address(2, "fe80::1/64"),  # link-local: every link has one, it routes nothing
        address(3, "10.244.1.1/24"),  # the pod bridge
        address(3, "fd00:10:244:1::1/64"),
        address(9, "fd00:10:244:1::/128"),  # our VTEP
        address(4, "fd00:60::11/64"),  # our VXLAN device's, excluded by index
    ]
    assert connected_subnets(addresses, DUAL, [4]) == [
        IPv4Network("192.168.50.0/24"),
        IPv6Network("fd00:50::/64"),
    ]


def test_an_ipv4_cluster_checks_only_ipv4_subnets_against_its_cidr() -> None:
    four = ClusterCidrs(IPv4Network("10.244.0.0/16"))
    subnets = connected_subnets([address(2, "fd00:10:244:1::1/64")], four)
    assert subnets == [IPv6Network("fd00:10:244:1::/64")]  # not the cluster's: a plain subnet
