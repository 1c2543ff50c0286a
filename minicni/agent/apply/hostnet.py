"""Facts about the node's own network that planning needs: connected subnets, underlay, MTU."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from minicni.agent.apply import rtnl_dump

DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Underlay:
    ifindex: int
    mtu: int


def connected_subnets(
    addresses: Iterable[rtnl_dump.KernelAddress],
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
            address.ifindex in excluded
            or address.local.is_loopback
            or network.prefixlen >= 32
            or network.overlaps(cluster_cidr)
        ):
            continue
        subnets.add(network)
    return sorted(subnets)


def ifindex_of_address(addresses: Iterable[rtnl_dump.KernelAddress], ip: IPv4Address) -> int | None:
    for address in addresses:
        if address.local == ip:
            return address.ifindex
    return None


def link_mtu(ipr: Any, ifindex: int) -> int:
    return int(ipr.link("get", index=ifindex)[0].get("mtu"))


def default_route_ifindex(ipr: Any) -> int | None:
    for route in ipr.route("dump", table=254):
        if route["dst_len"] == 0 and route.get("oif"):
            return int(route.get("oif"))
    return None


def find_underlay(ipr: Any, node_ip: IPv4Address) -> Underlay | None:
    """The interface carrying the node's own address, else the default route's interface."""
    index = ifindex_of_address(rtnl_dump.dump_addresses(), node_ip)
    if index is None:
        index = default_route_ifindex(ipr)
    if index is None:
        return None
    return Underlay(index, link_mtu(ipr, index))
