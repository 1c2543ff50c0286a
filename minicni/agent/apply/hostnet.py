"""Facts about the node's own network that planning needs: connected subnets, underlay, MTU."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from minicni.agent.model.nodes import ClusterCidrs, IPAddress, IPNetwork, overlap
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
    cluster_cidr: ClusterCidrs,
    exclude_ifindexes: Iterable[int] = (),
) -> list[IPNetwork]:
    """Subnets the node reaches without a router, of both families: where host-gw routing works.

    Loopback, link-local, host routes (/32, /128), our own devices and anything overlapping the
    cluster CIDR of its family (the pod bridge) are left out.
    """
    excluded = set(exclude_ifindexes)
    subnets: set[IPNetwork] = set()
    for address in addresses:
        network = address.network
        cluster = cluster_cidr.of_version(network.version)
        if (
            address.ifindex in excluded
            or address.local.is_loopback
            or (network.version == 6 and address.local.is_link_local)
            or network.prefixlen >= network.max_prefixlen
            or (cluster is not None and overlap(network, cluster))
        ):
            continue
        subnets.add(network)
    return sorted(subnets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def ifindex_of_address(addresses: Iterable[KernelAddress], ip: IPAddress) -> int | None:
    for address in addresses:
        if address.local == ip:
            return address.ifindex
    return None


def find_underlay(
    rtnl: Rtnl, node_ip: IPAddress, addresses: Iterable[KernelAddress]
) -> Underlay | None:
    """The interface carrying the node's own address, else the default route's interface."""
    index = ifindex_of_address(addresses, node_ip)
    if index is None:
        index = routes.default_route_ifindex(rtnl)
    link = links.get_link(rtnl, index=index) if index is not None else None
    if link is None:
        return None
    return Underlay(link.index, int(link.mtu))
