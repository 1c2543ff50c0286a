"""What the kernel of one node should hold, computed from the node set: pure functions only.

host-gw: `podCIDR via <node IP>`, which needs the peer on a directly connected subnet.
vxlan (as flannel does it): one VXLAN device whose address is our pod CIDR's network address
(/32); per remote node an onlink route `podCIDR via <its VTEP address> dev <vxlan> src <our node
IP>`, a neighbour entry (VTEP address -> VTEP MAC) and an FDB entry (VTEP MAC -> node IP). The
VTEP MAC is derived from the node IP, so every agent can compute its peers' MACs without
publishing anything. `src` makes node -> remote pod traffic carry the node's own address, as it
does with host-gw.

Policy routing keeps VXLAN paths symmetric, so strict reverse-path filtering (rp_filter=1, kind's
setting) accepts them: without it, pod -> remote node left on the underlay (the main table's route
to the node IP) while the remote node's route back to our pod CIDR is the tunnel, and node ->
remote pod arrived through the tunnel while the receiver's route back to that node IP is the
underlay; both were dropped on arrival. So, per VXLAN peer, a route `<node IP>/32 via <its VTEP
address> dev <vxlan> onlink` in a table of our own, and one rule `from <own pod CIDR> lookup
<that table>`. Pod -> peer node now goes through the tunnel, where the peer's route back to our
pod CIDR points. The reverse-path check is a lookup with the packet's addresses swapped, so a
peer node's packet to one of our pods is checked with source = our pod: the same rule matches and
the route points at the tunnel it came in on. The node's own traffic (source = its underlay
address) never matches the rule and keeps using the main table; host-gw peers share our L2
segment and are symmetric already, so they get no entry.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from minicni.agent.model.nodes import Node

VXLAN_DEVICE = "minicni-vxlan"
"""No dot in the name: sysctl keys name devices with dots as path separators."""
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
VTEP_MAC_PREFIX = (0x0E, 0x6D)
"""Locally administered, unicast; the remaining four bytes are the node's IPv4 address."""

MAIN_TABLE = 254
POLICY_TABLE = 0x6D63
"""Our routing table ("mc", 28003): routes to VXLAN peers' node IPs for traffic from our pods.
Clear of the numbers others use: 253-255 (kernel), 1-250 (Calico's default range), 52
(Tailscale), 51820 (WireGuard), 2004/2005 (Cilium)."""
POLICY_RULE_PRIORITY = 32109
"""Our rule's place: after `local` (0), before `main` (32766) and before the rules tools add at
the bottom of the list (wg-quick and Istio use 32764/32765; pyroute2's default is 32000). It only
matches traffic from our pod CIDR and our table only holds peer node addresses, so it cannot
capture anything else: everything it does not find falls through to the next rule."""


class Backend(enum.StrEnum):
    HOST_GW = "host-gw"
    VXLAN = "vxlan"
    AUTO = "auto"


RouteKey = tuple[int, int, int, int, str | None, int | None]
"""(table, destination, prefix length, gateway, device, preferred source)."""
DstKey = tuple[int, int, int]
"""(table, destination, prefix length): what identifies a route."""


@dataclass(frozen=True, order=True)
class Route:
    """A route to a remote pod CIDR (main table) or to a VXLAN peer's node IP (our table).
    `device` is set for VXLAN routes (onlink), `src` for those in the main table.

    Compared and hashed by `key`, plain integers: a resync compares thousands of routes and
    `ipaddress` objects hash and compare in Python, ten times slower.
    """

    dst: IPv4Network
    gateway: IPv4Address
    device: str | None = None
    src: IPv4Address | None = None
    table: int = MAIN_TABLE
    key: RouteKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = int(self.src) if self.src is not None else None
        key = (
            self.table,
            int(self.dst.network_address),
            self.dst.prefixlen,
            int(self.gateway),
            self.device,
            src,
        )
        object.__setattr__(self, "key", key)

    @property
    def dst_key(self) -> DstKey:
        return self.key[0], self.key[1], self.key[2]

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
class PolicyRule:
    """`from <src> lookup <table>` at `priority`."""

    src: IPv4Network
    table: int = POLICY_TABLE
    priority: int = POLICY_RULE_PRIORITY


@dataclass(frozen=True)
class Plan:
    """`routes`: to remote pod CIDRs (main table); `peer_node_routes`: to VXLAN peers' node IPs
    (our table), which `rule` sends our pods' traffic through. The rule exists only while the
    table has something in it: with no VXLAN peer left, it goes too."""

    routes: frozenset[Route]
    vxlan_peers: frozenset[VxlanPeer]
    peer_node_routes: frozenset[Route] = frozenset()
    rule: PolicyRule | None = None

    def all_routes(self) -> frozenset[Route]:
        return self.routes | self.peer_node_routes

    def without_vxlan(self) -> Plan:
        """What is left when the tunnel cannot be had: host-gw routes only, no rule."""
        return Plan(frozenset(r for r in self.routes if r.device is None), frozenset())


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
    peer_node_routes: dict[IPv4Address, Route] = {}
    for node in nodes.values():
        if node.name == self_name:
            continue
        if own is not None and node.pod_cidr.overlaps(own.pod_cidr):
            continue
        if uses_vxlan(node, backend, subnets):
            route, peer = _tunnel_to(node, own.internal_ip if own is not None else None)
            routes.add(route)
            peers.add(peer)
            if own is not None and node.internal_ip != own.internal_ip:
                peer_node_routes[node.internal_ip] = _peer_node_route(node)
        else:
            routes.add(_host_gw_to(node))
    rule = PolicyRule(own.pod_cidr) if own is not None and peer_node_routes else None
    return Plan(
        routes=frozenset(routes),
        vxlan_peers=frozenset(peers),
        peer_node_routes=frozenset(peer_node_routes.values()),
        rule=rule,
    )


@functools.lru_cache(maxsize=1 << 16)
def _tunnel_to(node: Node, src: IPv4Address | None) -> tuple[Route, VxlanPeer]:
    """Cached, like `_host_gw_to`: a resync plans the same peers again."""
    vtep_ip = vtep_address(node.pod_cidr)
    peer = VxlanPeer(node.internal_ip, vtep_ip, vtep_mac(node.internal_ip))
    return Route(node.pod_cidr, vtep_ip, VXLAN_DEVICE, src), peer


@functools.lru_cache(maxsize=1 << 16)
def _peer_node_route(node: Node) -> Route:
    """Through the tunnel, with the same gateway (and so neighbour) as the pod CIDR route. No
    `src`: only traffic that already has a pod address as its source is routed here."""
    return Route(
        IPv4Network(node.internal_ip),
        vtep_address(node.pod_cidr),
        VXLAN_DEVICE,
        table=POLICY_TABLE,
    )


@functools.lru_cache(maxsize=1 << 16)
def _host_gw_to(node: Node) -> Route:
    return Route(node.pod_cidr, node.internal_ip)


def pod_mtu(underlay_mtu: int, backend: Backend) -> int:
    """Pod MTU: the underlay's, less the VXLAN header whenever VXLAN may carry pod traffic."""
    return underlay_mtu - VXLAN_OVERHEAD if backend is not Backend.HOST_GW else underlay_mtu
