"""What the kernel of one node should hold, computed from the node set: pure functions only.

host-gw: `podCIDR via <node IP>`, which needs the peer on a directly connected subnet.
vxlan (as flannel does it): one VXLAN device whose address is our pod CIDR's network address
(/32); per remote node an onlink route `podCIDR via <its VTEP address> dev <vxlan> src <our node
IP>`, a neighbour entry (VTEP address -> VTEP MAC) and an FDB entry (VTEP MAC -> node IP). The
VTEP MAC is derived from the node IP, so every agent can compute its peers' MACs without
publishing anything. `src` makes node -> remote pod traffic carry the node's own address, as it
does with host-gw.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from minicni.agent.nodes import Node

VXLAN_DEVICE = "minicni-vxlan"
"""No dot in the name: sysctl keys name devices with dots as path separators."""
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
VTEP_MAC_PREFIX = (0x0E, 0x6D)
"""Locally administered, unicast; the remaining four bytes are the node's IPv4 address."""


class Backend(enum.StrEnum):
    HOST_GW = "host-gw"
    VXLAN = "vxlan"
    AUTO = "auto"


RouteKey = tuple[int, int, int, str | None, int | None]


@dataclass(frozen=True, order=True)
class Route:
    """A route to a remote pod CIDR. `device` and `src` are set for VXLAN routes (onlink).

    Compared and hashed by `key`, plain integers: a resync compares thousands of routes and
    `ipaddress` objects hash and compare in Python, ten times slower.
    """

    dst: IPv4Network
    gateway: IPv4Address
    device: str | None = None
    src: IPv4Address | None = None
    key: RouteKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = int(self.src) if self.src is not None else None
        key = (
            int(self.dst.network_address),
            self.dst.prefixlen,
            int(self.gateway),
            self.device,
            src,
        )
        object.__setattr__(self, "key", key)

    @property
    def dst_key(self) -> tuple[int, int]:
        return self.key[0], self.key[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True, order=True)
class VxlanPeer:
    node_ip: IPv4Address
    vtep_ip: IPv4Address
    vtep_mac: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.vtep_mac) ^ hash(self.vtep_ip))

    def __hash__(self) -> int:
        """Computed once, as for `Route` and `Node`."""
        return self._hash


@dataclass(frozen=True)
class Plan:
    routes: frozenset[Route]
    vxlan_peers: frozenset[VxlanPeer]

    def routes_by_dst(self) -> dict[IPv4Network, Route]:
        return {route.dst: route for route in self.routes}


@functools.lru_cache(maxsize=1 << 16)
def vtep_mac(node_ip: IPv4Address) -> str:
    return (bytes(VTEP_MAC_PREFIX) + node_ip.packed).hex(":")


def vtep_address(pod_cidr: IPv4Network) -> IPv4Address:
    """The VTEP address of a node: the network address of its pod CIDR (never given to a pod)."""
    return pod_cidr.network_address


def on_local_subnet(address: IPv4Address, local_subnets: Iterable[IPv4Network]) -> bool:
    return any(address in subnet for subnet in local_subnets)


def uses_vxlan(peer: Node, backend: Backend, local_subnets: Iterable[IPv4Network]) -> bool:
    if backend is Backend.VXLAN:
        return True
    if backend is Backend.HOST_GW:
        return False
    return not on_local_subnet(peer.internal_ip, local_subnets)


def plan_node(
    nodes: Mapping[str, Node],
    self_name: str,
    backend: Backend,
    local_subnets: Iterable[IPv4Network] = (),
) -> Plan:
    """Desired routes and VXLAN peers on node `self_name` for the validated node set.

    With host-gw, a peer that is not on a local subnet still gets its route; the kernel refuses
    it if the gateway is unreachable, and the apply step reports that.
    """
    subnets = tuple(local_subnets)
    own = nodes.get(self_name)
    routes: set[Route] = set()
    peers: set[VxlanPeer] = set()
    for node in nodes.values():
        if node.name == self_name:
            continue
        if own is not None and node.pod_cidr.overlaps(own.pod_cidr):
            continue
        if uses_vxlan(node, backend, subnets):
            route, peer = _tunnel_to(node, own.internal_ip if own is not None else None)
            routes.add(route)
            peers.add(peer)
        else:
            routes.add(_host_gw_to(node))
    return Plan(routes=frozenset(routes), vxlan_peers=frozenset(peers))


@functools.lru_cache(maxsize=1 << 16)
def _tunnel_to(node: Node, src: IPv4Address | None) -> tuple[Route, VxlanPeer]:
    """Cached, like `_host_gw_to`: a resync plans the same peers again."""
    vtep_ip = vtep_address(node.pod_cidr)
    peer = VxlanPeer(node.internal_ip, vtep_ip, vtep_mac(node.internal_ip))
    return Route(node.pod_cidr, vtep_ip, VXLAN_DEVICE, src), peer


@functools.lru_cache(maxsize=1 << 16)
def _host_gw_to(node: Node) -> Route:
    return Route(node.pod_cidr, node.internal_ip)


def pod_mtu(underlay_mtu: int, backend: Backend) -> int:
    """Pod MTU: the underlay's, less the VXLAN header whenever VXLAN may carry pod traffic."""
    return underlay_mtu - VXLAN_OVERHEAD if backend is not Backend.HOST_GW else underlay_mtu
