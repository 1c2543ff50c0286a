"""Facts about the node's own network that planning needs: connected subnets, underlay, MTU."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from minicni.net import links, routes
from minicni.net.addresses import KernelAddress
from minicni.net.rtnl import Rtnl

DEFAULT_MTU = links.DEFAULT_MTU


@dataclass(frozen=True)
class Underlay:
    ifindex: int
    mtu: int


def connected_subnets(
    addresses: Iterable[KernelAddress],
    cluster_cidr: IPv4Network,
    exclude_ifindexes: Iterable[int] = (),
) -> list[IPv4Network]:
    """Subnets the node reaches without a router: where host-gw routing works.

    Loopback, host routes (/32), our own devices and anything inside the cluster CIDR (the pod
    bridge) are left out.
    """
    excluded = set(exclude_ifindexes)
    subnets: set[IPv4Network] = set()
    for address in addresses:
        network = address.network
        if (
            not isinstance(network, IPv4Network)
            or address.ifindex in excluded
            or address.local.is_loopback
            or network.prefixlen >= 32
            or network.overlaps(cluster_cidr)
        ):
            continue
        subnets.add(network)
    return sorted(subnets)


def ifindex_of_address(addresses: Iterable[KernelAddress], ip: IPv4Address) -> int | None:
    for address in addresses:
        if address.local == ip:
            return address.ifindex
    return None


def find_underlay(
    rtnl: Rtnl, node_ip: IPv4Address, addresses: Iterable[KernelAddress]
) -> Underlay | None:
    """The interface carrying the node's own address, else the default route's interface."""
    index = ifindex_of_address(addresses, node_ip)
    if index is None:
        index = routes.default_route_ifindex(rtnl)
    link = links.get_link(rtnl, index=index) if index is not None else None
    if link is None:
        return None
    return Underlay(link.index, int(link.mtu))
