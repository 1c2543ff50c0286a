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
from ipaddress import IPv4Address, IPv4Network


@dataclass(frozen=True)
class NodeEntry:
    """One node as a source reported it, before validation."""

    name: str
    internal_ip: str | None
    pod_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Node:
    """A node the agent can route to: its underlay address and its pod CIDR (IPv4).

    The hash is computed once: planning looks nodes up in caches on every resync, and hashing
    `ipaddress` objects runs in Python.
    """

    name: str
    internal_ip: IPv4Address
    pod_cidr: IPv4Network
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.name, self.internal_ip, self.pod_cidr)))

    def __hash__(self) -> int:
        return self._hash


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


def _ipv4_cidr(entry: NodeEntry) -> IPv4Network | None:
    for text in entry.pod_cidrs:
        network = ipaddress.ip_network(text, strict=True)
        if isinstance(network, IPv4Network):
            return network
    return None


@functools.lru_cache(maxsize=1 << 16)
def validate_entry(entry: NodeEntry, cluster_cidr: IPv4Network) -> Node | NodeProblem | None:
    """A `Node`, a `NodeProblem`, or None when the node has no pod CIDR yet.

    Cached: a resync sees the same entries again, and parsing addresses dominates its cost.
    """
    if not entry.name:
        return NodeProblem("", "no_name", "entry without a name")
    if not entry.internal_ip:
        return NodeProblem(entry.name, "no_address", "no internal IP address")
    try:
        address = ipaddress.ip_address(entry.internal_ip)
    except ValueError:
        return NodeProblem(
            entry.name, "bad_address", f"internal IP {entry.internal_ip!r} is not an address"
        )
    if not isinstance(address, IPv4Address):
        return NodeProblem(entry.name, "bad_address", f"internal IP {address} is not IPv4")
    if not entry.pod_cidrs:
        return None
    try:
        pod_cidr = _ipv4_cidr(entry)
    except ValueError as error:
        return NodeProblem(entry.name, "bad_pod_cidr", f"pod CIDR is not a network: {error}")
    if pod_cidr is None:
        return NodeProblem(entry.name, "bad_pod_cidr", "no IPv4 pod CIDR")
    if not pod_cidr.subnet_of(cluster_cidr):
        return NodeProblem(
            entry.name,
            "pod_cidr_outside_cluster",
            f"pod CIDR {pod_cidr} is outside the cluster CIDR {cluster_cidr}",
        )
    if address in cluster_cidr:
        return NodeProblem(
            entry.name, "bad_address", f"internal IP {address} is inside the cluster CIDR"
        )
    return Node(entry.name, address, pod_cidr)


def validate_entries(
    entries: Iterable[NodeEntry],
    cluster_cidr: IPv4Network,
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
            result.problems.append(
                NodeProblem(
                    checked.name,
                    "pod_cidr_overlap",
                    f"pod CIDR {checked.pod_cidr} overlaps {clash.name}'s {clash.pod_cidr}",
                )
            )
            continue
        result.nodes[checked.name] = checked
    return result


class _ClaimedRanges:
    """Pod CIDRs accepted so far, as sorted non-overlapping address ranges: a new CIDR can only
    overlap its neighbours in that order, so each check is a bisection (O(n log n) in all)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._owners: list[Node] = []

    def claim(self, node: Node) -> Node | None:
        """Record `node`'s CIDR and return None, or return the node whose CIDR it overlaps."""
        start = int(node.pod_cidr.network_address)
        end = int(node.pod_cidr.broadcast_address)
        at = bisect.bisect_left(self._starts, start)
        if at > 0 and int(self._owners[at - 1].pod_cidr.broadcast_address) >= start:
            return self._owners[at - 1]
        if at < len(self._starts) and self._starts[at] <= end:
            return self._owners[at]
        self._starts.insert(at, start)
        self._owners.insert(at, node)
        return None
