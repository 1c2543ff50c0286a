"""What the kernel of one node should hold, computed from the node set: pure functions only.

Every pod family (IPv4, IPv6) is planned on its own: a dual-stack peer gets a route to each of its
pod CIDRs.

host-gw: `podCIDR via <node IP of the same family>`, which needs the peer on a directly
connected subnet of that family.
vxlan (as flannel does it): a VXLAN device per underlay family, like flannel's flannel.1 and
flannel-v6.1: `minicni-vxlan` over IPv4, `minicni-vxlan6` over IPv6. A pod family travels over the
underlay of its own family when both nodes have an address of it, else over the other one (IPv6
pods over an IPv4 underlay: VXLAN carries Ethernet frames, whatever they hold). Per remote node
and pod family, an onlink route `podCIDR via <its VTEP address> dev <device> src <our node IP of
the pod family>`, a neighbour entry (VTEP address -> VTEP MAC), and per remote node and device an
FDB entry (VTEP MAC -> node IP). A node's VTEP address of a family is the network address of its
pod CIDR of that family (never given to a pod); its VTEP MAC on a device is derived from its
underlay address of the device's family, so every agent computes its peers' MACs without
publishing anything. `src` makes node -> remote pod traffic carry the node's own address, as it
does with host-gw.

Policy routing keeps VXLAN paths symmetric, so strict reverse-path filtering (rp_filter=1, kind's
setting) accepts them: without it, pod -> remote node left on the underlay (the main table's route
to the node IP) while the remote node's route back to our pod CIDR is the tunnel, and node ->
remote pod arrived through the tunnel while the receiver's route back to that node IP is the
underlay; both were dropped on arrival. So, per VXLAN peer and pod family, a route `<node IP of
that family>/32 (/128) via <its VTEP address> dev <device> onlink` in a table of our own, and per
family one rule `from <own pod CIDR> lookup <that table>`. Pod -> peer node now goes through the
tunnel, where the peer's route back to our pod CIDR points. The reverse-path check is a lookup
with the packet's addresses swapped, so a peer node's packet to one of our pods is checked with
source = our pod: the same rule matches and the route points at the tunnel it came in on. The
node's own traffic (source = its underlay address) never matches the rule and keeps using the
main table; host-gw peers share our L2 segment and are symmetric already, so they get no entry.
(IPv6 has no rp_filter; its paths are kept symmetric all the same, for firewalls that check.)
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_network

from minicni.agent.model.nodes import (
    IPAddress,
    IPNetwork,
    Node,
    family_name,
    other_version,
)

VXLAN_DEVICE = "minicni-vxlan"
"""The VXLAN device over the IPv4 underlay. No dot in the name: sysctl keys name devices with
dots as path separators."""
VXLAN_DEVICE6 = "minicni-vxlan6"
"""The VXLAN device over the IPv6 underlay."""
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
"""Outer Ethernet-less IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers."""
VXLAN_OVERHEAD6 = 70
"""The same over IPv6, whose header is 40 bytes."""
VTEP_MAC_PREFIX = (0x0E, 0x6D)
"""Locally administered, unicast; the remaining four bytes are the node's IPv4 address."""
VTEP6_MAC_FIRST = 0x0A
"""Locally administered, unicast; the remaining five bytes are a digest of the node's IPv6
address (too long to embed: the five bytes keep two of 5,000 nodes apart with odds of 1 in
100,000 of a clash)."""

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


RouteKey = tuple[int, int, int, int, int, str | None, int | None]
"""(table, IP version, destination, prefix length, gateway, device, preferred source)."""
DstKey = tuple[int, int, int, int]
"""(table, IP version, destination, prefix length): what identifies a route."""


def vxlan_device(underlay_version: int) -> str:
    """Our VXLAN device over the underlay of IP version `underlay_version`."""
    return VXLAN_DEVICE6 if underlay_version == 6 else VXLAN_DEVICE


def vxlan_overhead(underlay_version: int) -> int:
    return VXLAN_OVERHEAD6 if underlay_version == 6 else VXLAN_OVERHEAD


@dataclass(frozen=True)
class Route:
    """A route to a remote pod CIDR (main table) or to a VXLAN peer's node IP (our table), of
    either family. `device` is set for VXLAN routes (onlink), `src` for those in the main table.

    Compared and hashed by `key`, plain integers: a resync compares thousands of routes and
    `ipaddress` objects hash and compare in Python, ten times slower.
    """

    dst: IPNetwork
    gateway: IPAddress
    device: str | None = None
    src: IPAddress | None = None
    table: int = MAIN_TABLE
    key: RouteKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = int(self.src) if self.src is not None else None
        key = (
            self.table,
            self.dst.version,
            int(self.dst.network_address),
            self.dst.prefixlen,
            int(self.gateway),
            self.device,
            src,
        )
        object.__setattr__(self, "key", key)

    @property
    def dst_key(self) -> DstKey:
        return self.key[0], self.key[1], self.key[2], self.key[3]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class VxlanPeer:
    """A remote node on one of our VXLAN devices, for one pod family: frames for `vtep_mac` go
    to `node_ip` (of the device's family); `vtep_ip` (of the pod family) answers to `vtep_mac`."""

    node_ip: IPAddress
    vtep_ip: IPAddress
    vtep_mac: str
    device: str = VXLAN_DEVICE
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.vtep_mac, self.vtep_ip, self.device)))

    def __hash__(self) -> int:
        """Computed once, as for `Route` and `Node`."""
        return self._hash


@dataclass(frozen=True)
class PolicyRule:
    """`from <src> lookup <table>` at `priority` (one per pod family)."""

    src: IPNetwork
    table: int = POLICY_TABLE
    priority: int = POLICY_RULE_PRIORITY


@dataclass(frozen=True)
class Plan:
    """`routes`: to remote pod CIDRs (main table); `peer_node_routes`: to VXLAN peers' node IPs
    (our table), which `rules` send our pods' traffic through. A family's rule exists only while
    the table has a route of that family: with no VXLAN peer left, it goes too. `unroutable`:
    why a peer's pod CIDR has no route (host-gw without an underlay address of its family)."""

    routes: frozenset[Route]
    vxlan_peers: frozenset[VxlanPeer]
    peer_node_routes: frozenset[Route] = frozenset()
    rules: frozenset[PolicyRule] = frozenset()
    unroutable: tuple[str, ...] = ()

    def all_routes(self) -> frozenset[Route]:
        return self.routes | self.peer_node_routes

    def devices(self) -> frozenset[str]:
        """The VXLAN devices some peer needs."""
        return frozenset(peer.device for peer in self.vxlan_peers)

    def without_vxlan(self, devices: Iterable[str] | None = None) -> Plan:
        """What is left when a tunnel cannot be had (`devices`, by default every one): the
        other routes; no rule of a family that lost a peer route."""
        gone = set(self.devices() if devices is None else devices)
        routes = frozenset(r for r in self.routes if r.device not in gone)
        peers = frozenset(p for p in self.vxlan_peers if p.device not in gone)
        node_routes = frozenset(r for r in self.peer_node_routes if r.device not in gone)
        versions = {route.dst.version for route in node_routes}
        rules = frozenset(rule for rule in self.rules if rule.src.version in versions)
        return Plan(routes, peers, node_routes, rules, self.unroutable)


@functools.lru_cache(maxsize=1 << 16)
def vtep_mac(node_ip: IPAddress) -> str:
    """The VTEP MAC of a node on the device of `node_ip`'s family."""
    if isinstance(node_ip, IPv4Address):
        return (bytes(VTEP_MAC_PREFIX) + node_ip.packed).hex(":")
    digest = hashlib.sha256(node_ip.packed).digest()
    return (bytes([VTEP6_MAC_FIRST]) + digest[:5]).hex(":")


def vtep_address(pod_cidr: IPNetwork) -> IPAddress:
    """The VTEP address of a node: the network address of its pod CIDR (never given to a pod)."""
    return pod_cidr.network_address


def on_local_subnet(address: IPAddress, local_subnets: Iterable[IPNetwork]) -> bool:
    return any(address in subnet for subnet in local_subnets if subnet.version == address.version)


def tunnel_version(own: Node | None, peer: Node, pod_version: int) -> int | None:
    """The underlay family that carries `pod_version` traffic to `peer`: its own, when both ends
    have an address of it, else the other one; None when the two share no underlay family."""
    for version in (pod_version, other_version(pod_version)):
        if peer.address(version) is not None and (own is None or own.address(version)):
            return version
    return None


def uses_vxlan(
    peer: Node, backend: Backend, local_subnets: Iterable[IPNetwork], pod_version: int = 4
) -> bool:
    """Whether `peer`'s pod CIDR of `pod_version` is reached through VXLAN: always with vxlan,
    never with host-gw, and with auto unless its address of that family is on a local subnet."""
    if backend is Backend.VXLAN:
        return True
    if backend is Backend.HOST_GW:
        return False
    address = peer.address(pod_version)
    return address is None or not on_local_subnet(address, local_subnets)


def plan_node(
    nodes: Mapping[str, Node],
    self_name: str,
    backend: Backend,
    local_subnets: Iterable[IPNetwork] = (),
) -> Plan:
    """Desired routes and VXLAN peers on node `self_name` for the validated node set.

    With host-gw, a peer that is not on a local subnet still gets its route; the kernel refuses
    it if the gateway is unreachable, and the apply step reports that.
    """
    subnets = tuple(local_subnets)
    own = nodes.get(self_name)
    # our pod CIDRs as integer ranges, once: every peer's CIDR is checked against them
    own_ranges: dict[int, tuple[int, int]] = {
        cidr.version: (int(cidr.network_address), int(cidr.broadcast_address))
        for cidr in (own.pod_cidrs if own is not None else ())
    }
    routes: set[Route] = set()
    peers: set[VxlanPeer] = set()
    peer_node_routes: dict[IPAddress, Route] = {}
    unroutable: list[str] = []
    for node in nodes.values():
        if node.name == self_name:
            continue
        for version, pod_cidr in ((4, node.pod_cidr), (6, node.pod_cidr6)):
            if pod_cidr is None:
                continue
            own_range = own_ranges.get(version)
            if own_range is not None and _overlaps(pod_cidr, own_range):
                continue
            if not uses_vxlan(node, backend, subnets, version):
                if node.address(version) is None:
                    unroutable.append(_no_host_gw(node, version))
                else:
                    routes.add(_host_gw_to(node, version))
                continue
            underlay = tunnel_version(own, node, version)
            if underlay is None:
                unroutable.append(_no_tunnel(node, version))
                continue
            src = own.address(version) if own is not None else None
            route, peer = _tunnel_to(node, version, underlay, src)
            routes.add(route)
            peers.add(peer)
            peer_ip = node.address(version)
            if own is not None and peer_ip is not None and peer_ip != own.address(version):
                peer_node_routes[peer_ip] = _peer_node_route(node, version, route)
    rules = frozenset(
        PolicyRule(cidr)
        for cidr in (own.pod_cidrs if own is not None else ())
        if any(ip.version == cidr.version for ip in peer_node_routes)
    )
    return Plan(
        routes=frozenset(routes),
        vxlan_peers=frozenset(peers),
        peer_node_routes=frozenset(peer_node_routes.values()),
        rules=rules,
        unroutable=tuple(sorted(unroutable)),
    )


def _overlaps(network: IPNetwork, bounds: tuple[int, int]) -> bool:
    return int(network.network_address) <= bounds[1] and bounds[0] <= int(network.broadcast_address)


def _no_host_gw(node: Node, version: int) -> str:
    family = family_name(version)
    return (
        f"node {node.name!r} has no {family} address: host-gw cannot route its {family} pod CIDR "
        f"{node.cidr(version)} (backend vxlan or auto carry it over the other family)"
    )


def _no_tunnel(node: Node, version: int) -> str:
    return (
        f"node {node.name!r} shares no underlay family with this node: no route to its "
        f"{family_name(version)} pod CIDR {node.cidr(version)}"
    )


@functools.lru_cache(maxsize=1 << 16)
def _tunnel_to(
    node: Node, version: int, underlay: int, src: IPAddress | None
) -> tuple[Route, VxlanPeer]:
    """Cached, like `_host_gw_to` (a Node hashes in one step): a resync plans the same peers
    again."""
    node_ip = node.address(underlay)
    pod_cidr = node.cidr(version)
    assert node_ip is not None and pod_cidr is not None  # plan_node checked both
    device = vxlan_device(underlay)
    vtep_ip = vtep_address(pod_cidr)
    peer = VxlanPeer(node_ip, vtep_ip, vtep_mac(node_ip), device)
    return Route(pod_cidr, vtep_ip, device, src), peer


@functools.lru_cache(maxsize=1 << 16)
def _peer_node_route(node: Node, version: int, pod_route: Route) -> Route:
    """Through the tunnel, with the same gateway (and so neighbour) as the pod CIDR route. No
    `src`: only traffic that already has a pod address as its source is routed here."""
    peer_ip = node.address(version)
    assert peer_ip is not None
    return Route(
        ip_network(peer_ip),
        pod_route.gateway,
        pod_route.device,
        table=POLICY_TABLE,
    )


@functools.lru_cache(maxsize=1 << 16)
def _host_gw_to(node: Node, version: int) -> Route:
    pod_cidr, gateway = node.cidr(version), node.address(version)
    assert pod_cidr is not None and gateway is not None  # plan_node checked both
    return Route(pod_cidr, gateway)


def tunnel_versions(own: Node, pod_versions: Iterable[int]) -> frozenset[int]:
    """The underlay families this node may carry pod traffic of `pod_versions` over: each pod
    family's own when the node has an address of it, else the other family's."""
    found = set()
    for version in pod_versions:
        for underlay in (version, other_version(version)):
            if own.address(underlay) is not None:
                found.add(underlay)
                break
    return frozenset(found)


def pod_mtu(underlay_mtu: int, backend: Backend, underlay_versions: Iterable[int] = (4,)) -> int:
    """Pod MTU: the underlay's, less the VXLAN headers whenever VXLAN may carry pod traffic --
    the larger IPv6 ones when it may run over the IPv6 underlay (`underlay_versions`)."""
    if backend is Backend.HOST_GW:
        return underlay_mtu
    return underlay_mtu - vxlan_overhead(6 if 6 in underlay_versions else 4)
