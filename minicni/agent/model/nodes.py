"""Nodes as the agent plans with them, and the validation that turns raw entries into them.

Both node sources (the static file and the Kubernetes API) produce `NodeEntry` values holding the
strings they found; `validate_entries` turns them into `Node` values and a list of problems. A node
whose entry turned bad keeps its last good value, so a typo never tears down a working route.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
VERSIONS = (4, 6)


def family_name(version: int) -> str:
    return f"IPv{version}"


def other_version(version: int) -> int:
    """The other IP version: 6 for 4, 4 for 6."""
    return 6 if version == 4 else 4


def overlap(first: IPNetwork, second: IPNetwork) -> bool:
    """Two networks of one family share an address (integers: no mixed-family comparisons)."""
    return (
        first.version == second.version
        and int(first.network_address) <= int(second.broadcast_address)
        and int(second.network_address) <= int(first.broadcast_address)
    )


@dataclass(frozen=True)
class ClusterCidrs:
    """The cluster's pod CIDR of each family it has: IPv4, IPv6 or both (dual-stack), as
    kube-controller-manager's `--cluster-cidr 10.244.0.0/16,fd00:10:244::/56`."""

    v4: IPv4Network | None = None
    v6: IPv6Network | None = None
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.v4 is None and self.v6 is None:
            raise ValueError("a cluster CIDR is needed")
        object.__setattr__(self, "_hash", hash((self.v4, self.v6)))

    def __hash__(self) -> int:
        """Computed once: validation looks every entry up in a cache keyed with it."""
        return self._hash

    @classmethod
    def of(cls, networks: Iterable[IPNetwork]) -> ClusterCidrs:
        """From networks of distinct families; ValueError for two of one family, or none."""
        v4: IPv4Network | None = None
        v6: IPv6Network | None = None
        for network in networks:
            if isinstance(network, IPv4Network):
                if v4 is not None:
                    raise ValueError(f"two IPv4 cluster CIDRs: {v4} and {network}")
                v4 = network
            else:
                if v6 is not None:
                    raise ValueError(f"two IPv6 cluster CIDRs: {v6} and {network}")
                v6 = network
        return cls(v4, v6)

    @classmethod
    def parse(cls, text: str) -> ClusterCidrs:
        """`10.244.0.0/16`, `fd00:10:244::/56` or both, comma separated; ValueError if not."""
        networks = [ipaddress.ip_network(part.strip(), strict=True) for part in text.split(",")]
        return cls.of(networks)

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """IPv4 first, as Kubernetes lists a dual-stack cluster's."""
        return tuple(n for n in (self.v4, self.v6) if n is not None)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(n.version for n in self.networks)

    def of_version(self, version: int) -> IPNetwork | None:
        return self.v4 if version == 4 else self.v6

    def contains(self, address: IPAddress) -> bool:
        network = self.of_version(address.version)
        return network is not None and address in network

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks)


@dataclass(frozen=True)
class NodeEntry:
    """One node as a source reported it, before validation: its InternalIP (`internal_ip`, the
    nodes file's `internalIP`) and any others (`internal_ips`: a Node's InternalIPs, one per
    family), and its pod CIDRs (a Node's `spec.podCIDRs`)."""

    name: str
    internal_ip: str | None
    pod_cidrs: tuple[str, ...] = ()
    internal_ips: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every InternalIP given, `internal_ip` first, each once."""
        first = (self.internal_ip,) if self.internal_ip else ()
        return tuple(dict.fromkeys((*first, *self.internal_ips)))


@dataclass(frozen=True)
class Node:
    """A node the agent can route to: its underlay address and its pod CIDR of each family it
    has (an IPv4-only node: `internal_ip` and `pod_cidr`; IPv6 in `internal_ip6`, `pod_cidr6`).
    At least one address and one pod CIDR; a family may have a pod CIDR and no address (IPv6
    pods over an IPv4 underlay) or the reverse.

    The hash is computed once: planning looks nodes up in caches on every resync, and hashing
    `ipaddress` objects runs in Python.
    """

    name: str
    internal_ip: IPv4Address | None
    pod_cidr: IPv4Network | None
    internal_ip6: IPv6Address | None = None
    pod_cidr6: IPv6Network | None = None
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.name, self.internal_ip, self.pod_cidr, self.internal_ip6, self.pod_cidr6)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def address(self, version: int) -> IPAddress | None:
        """The node's InternalIP of IP version `version` (4 or 6), if it has one."""
        return self.internal_ip if version == 4 else self.internal_ip6

    def cidr(self, version: int) -> IPNetwork | None:
        """The node's pod CIDR of IP version `version`, if it has one."""
        return self.pod_cidr if version == 4 else self.pod_cidr6

    @property
    def internal_ips(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.internal_ip, self.internal_ip6) if a is not None)

    @property
    def pod_cidrs(self) -> tuple[IPNetwork, ...]:
        return tuple(c for c in (self.pod_cidr, self.pod_cidr6) if c is not None)


def node_to_mapping(node: Node) -> dict[str, Any]:
    """A node in the nodes file's format: `internalIP` and `podCIDR` (the first of each, as a
    Node's `spec.podCIDR`), and the `internalIPs` and `podCIDRs` lists when there is IPv6."""
    addresses = [str(a) for a in node.internal_ips]
    cidrs = [str(c) for c in node.pod_cidrs]
    mapping: dict[str, Any] = {"name": node.name, "internalIP": addresses[0], "podCIDR": cidrs[0]}
    if node.internal_ip6 is not None or node.pod_cidr6 is not None:
        mapping.update(internalIPs=addresses, podCIDRs=cidrs)
    return mapping


def node_from_mapping(item: Mapping[str, Any]) -> Node:
    """`node_to_mapping` read back (ValueError, KeyError or TypeError when it does not parse)."""
    addresses = [ipaddress.ip_address(a) for a in item.get("internalIPs") or [item["internalIP"]]]
    cidrs = [ipaddress.ip_network(c) for c in item.get("podCIDRs") or [item["podCIDR"]]]
    return Node(
        str(item["name"]),
        _first(addresses, IPv4Address),
        _first(cidrs, IPv4Network),
        _first(addresses, IPv6Address),
        _first(cidrs, IPv6Network),
    )


def _first(values: Iterable[object], kind: type[Any]) -> Any:
    return next((value for value in values if isinstance(value, kind)), None)


@dataclass(frozen=True)
class NodeProblem:
    """Why an entry was skipped. `kind` is a short label used in metrics."""

    node: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"node {self.node!r}: {self.detail}"


@dataclass
class Validation:
    nodes: dict[str, Node] = field(default_factory=dict)
    problems: list[NodeProblem] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    """Nodes without a pod CIDR yet (normal while Kubernetes allocates one); not an error."""


def _pod_cidrs(entry: NodeEntry, cluster: ClusterCidrs) -> list[IPNetwork] | NodeProblem:
    """The entry's pod CIDR of each family the cluster has (one of another family is not this
    cluster's business, as a dual-stack node's IPv6 CIDR in an IPv4 cluster)."""
    found: dict[int, IPNetwork] = {}
    for text in entry.pod_cidrs:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as error:
            return NodeProblem(entry.name, "bad_pod_cidr", f"pod CIDR is not a network: {error}")
        if network.version not in cluster.versions:
            continue
        if network.version in found:
            first = found[network.version]
            family = family_name(network.version)
            return NodeProblem(
                entry.name, "bad_pod_cidr", f"two {family} pod CIDRs: {first} and {network}"
            )
        found[network.version] = network
    if not found:
        wanted = " or ".join(family_name(v) for v in cluster.versions)
        return NodeProblem(entry.name, "bad_pod_cidr", f"no {wanted} pod CIDR")
    return list(found.values())


def _inside(network: IPNetwork, outer: IPNetwork) -> bool:
    return (
        network.version == outer.version
        and int(outer.network_address) <= int(network.network_address)
        and int(network.broadcast_address) <= int(outer.broadcast_address)
    )


@functools.lru_cache(maxsize=1 << 16)
def validate_entry(entry: NodeEntry, cluster: ClusterCidrs) -> Node | NodeProblem | None:
    """A `Node`, a `NodeProblem`, or None when the node has no pod CIDR yet.

    Cached: a resync sees the same entries again, and parsing addresses dominates its cost.
    """
    if not entry.name:
        return NodeProblem("", "no_name", "entry without a name")
    if not entry.addresses:
        return NodeProblem(entry.name, "no_address", "no internal IP address")
    addresses: list[IPAddress] = []
    for text in entry.addresses:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            return NodeProblem(entry.name, "bad_address", f"internal IP {text!r} is not an address")
    if not entry.pod_cidrs:
        return None
    cidrs = _pod_cidrs(entry, cluster)
    if isinstance(cidrs, NodeProblem):
        return cidrs
    for pod_cidr in cidrs:
        cluster_cidr = cluster.of_version(pod_cidr.version)
        if cluster_cidr is None or not _inside(pod_cidr, cluster_cidr):
            return NodeProblem(
                entry.name,
                "pod_cidr_outside_cluster",
                f"pod CIDR {pod_cidr} is outside the cluster CIDR {cluster_cidr}",
            )
    for address in addresses:
        if cluster.contains(address):
            inside = cluster.of_version(address.version)
            return NodeProblem(
                entry.name,
                "bad_address",
                f"internal IP {address} is inside the cluster CIDR {inside}",
            )
    return Node(
        entry.name,
        _first(addresses, IPv4Address),
        _first(cidrs, IPv4Network),
        _first(addresses, IPv6Address),
        _first(cidrs, IPv6Network),
    )


def validate_entries(
    entries: Iterable[NodeEntry],
    cluster_cidr: ClusterCidrs,
    last_good: Mapping[str, Node] | None = None,
) -> Validation:
    """Validate every entry; a node whose entry is bad keeps its `last_good` value if it had one.

    Nodes are considered in name order so that, of two nodes claiming overlapping pod CIDRs or
    the same name, the outcome does not depend on the source's ordering: the first one wins.
    """
    last_good = last_good or {}
    result = Validation()
    seen: set[str] = set()
    claimed = _ClaimedRanges()
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name and entry.name in seen:
            result.problems.append(NodeProblem(entry.name, "duplicate_name", "listed twice"))
            continue
        seen.add(entry.name)
        checked = validate_entry(entry, cluster_cidr)
        if checked is None:
            result.pending.append(entry.name)
            continue
        if isinstance(checked, NodeProblem):
            result.problems.append(checked)
            previous = last_good.get(entry.name)
            if previous is None:
                continue
            checked = previous
        clash = claimed.claim(checked)
        if clash is not None:
            mine, owner, theirs = clash
            result.problems.append(
                NodeProblem(
                    checked.name,
                    "pod_cidr_overlap",
                    f"pod CIDR {mine} overlaps {owner.name}'s {theirs}",
                )
            )
            continue
        result.nodes[checked.name] = checked
    return result


class _ClaimedRanges:
    """Pod CIDRs accepted so far, per family, as sorted non-overlapping address ranges: a new
    CIDR can only overlap its neighbours in that order, so each check is a bisection (O(n log n)
    in all)."""

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._owners: dict[int, list[tuple[IPNetwork, Node]]] = {4: [], 6: []}

    def claim(self, node: Node) -> tuple[IPNetwork, Node, IPNetwork] | None:
        """Record `node`'s CIDRs and return None, or return (its CIDR, the node whose CIDR it
        overlaps, that CIDR) and record nothing."""
        found = []
        for version, cidr in ((4, node.pod_cidr), (6, node.pod_cidr6)):
            if cidr is None:
                continue
            starts, owners = self._starts[version], self._owners[version]
            start = int(cidr.network_address)
            at = bisect.bisect_left(starts, start)
            if at > 0 and int(owners[at - 1][0].broadcast_address) >= start:
                return (cidr, owners[at - 1][1], owners[at - 1][0])
            if at < len(starts) and starts[at] <= int(cidr.broadcast_address):
                return (cidr, owners[at][1], owners[at][0])
            found.append((version, cidr, at, start))
        for version, cidr, at, start in found:
            self._starts[version].insert(at, start)
            self._owners[version].insert(at, (cidr, node))
        return None
