"""The connectivity matrix's cells and verdicts: cases -> observations -> verdicts.

A cell is (family, protocol, source endpoint, destination endpoint): a dual-stack cluster has
every cell twice, once per IP family, named `tcp` and `tcp6` (`icmp6` is ICMPv6). It passes only if
the probe arrived, the receiver saw the sender's own address as source, and the reply came back.
Verdicts:

    .  ok            X  unreachable (or the reply never came back)
    N  reachable, but the receiver saw another source address (NAT)
    !  the probe itself failed          -  not applicable (no case for this pair)

`judge` is pure: it runs nothing and sees only what the two probe processes printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.matrix.executors import FAMILIES, IPV4, IPV6, NODE, POD, Endpoint, Inventory

OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE = ".", "X", "N", "!", "-"
VERDICTS = (OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE)
PROTOCOLS = ("icmp", "tcp", "udp")

POD_POD_SAME = "pod->pod same node"
POD_POD_OTHER = "pod->pod other node"
POD_OWN_NODE = "pod->own node"
POD_OTHER_NODE = "pod->other node"
NODE_POD_SAME = "node->pod same node"
NODE_POD_OTHER = "node->pod other node"
CASE_KINDS = (
    POD_POD_SAME,
    POD_POD_OTHER,
    POD_OWN_NODE,
    POD_OTHER_NODE,
    NODE_POD_SAME,
    NODE_POD_OTHER,
)


def case_kind(src: Endpoint, dst: Endpoint) -> str | None:
    """Which case a (source, destination) pair is, or None when the matrix has no such case."""
    if src.name == dst.name:
        return None
    same = src.node == dst.node
    if src.kind == POD and dst.kind == POD:
        return POD_POD_SAME if same else POD_POD_OTHER
    if src.kind == POD and dst.kind == NODE:
        return POD_OWN_NODE if same else POD_OTHER_NODE
    if src.kind == NODE and dst.kind == POD:
        return NODE_POD_SAME if same else NODE_POD_OTHER
    return None  # node -> node is the underlay's business, not the CNI's


def grid_name(family: str, proto: str) -> str:
    """`tcp` for IPv4, `tcp6` for IPv6 (`icmp6` is ICMPv6): how cells, grids and suites are
    named, so an IPv4 matrix reads as it always did."""
    return f"{proto}6" if family == IPV6 else proto


@dataclass(frozen=True)
class Case:
    kind: str
    proto: str
    src: Endpoint
    dst: Endpoint
    port: int
    family: str = IPV4

    @property
    def grid(self) -> str:
        return grid_name(self.family, self.proto)

    @property
    def label(self) -> str:
        return f"{self.grid} {self.src.name} -> {self.dst.name}"

    @property
    def src_ip(self) -> str:
        return self.src.address(self.family) or ""

    @property
    def dst_ip(self) -> str:
        return self.dst.address(self.family) or ""


def build_cases(
    inventory: Inventory,
    protocols: Sequence[str] = PROTOCOLS,
    kinds: Sequence[str] = CASE_KINDS,
    port_base: int = 31000,
    families: Sequence[str] | None = None,
) -> list[Case]:
    """Every applicable cell, each with its own port so cells can run in parallel: per family
    (by default each the inventory's pods have), every pair whose two ends have an address of it."""
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols: {', '.join(sorted(unknown))}")
    families = inventory.families if families is None else families
    if set(families) - set(FAMILIES):
        raise ValueError(f"unknown families: {', '.join(sorted(set(families) - set(FAMILIES)))}")
    cases: list[Case] = []
    for family in families:
        for proto in protocols:
            for src in inventory.endpoints:
                for dst in inventory.endpoints:
                    kind = case_kind(src, dst)
                    if kind is None or kind not in kinds:
                        continue
                    if src.address(family) and dst.address(family):
                        cases.append(Case(kind, proto, src, dst, port_base + len(cases), family))
    return cases


@dataclass(frozen=True)
class Observation:
    """What the two probe processes printed (their JSON lines), or why there is nothing."""

    sender: dict[str, Any] | None = None
    receiver: dict[str, Any] | None = None
    error: str | None = None


def judge(case: Case, observation: Observation) -> tuple[str, str]:
    """(verdict, explanation) for one attempt. Pure: the heart of the gate, unit-tested."""
    if observation.error:
        return PROBE_ERROR, observation.error
    sender, receiver = observation.sender, observation.receiver
    if sender is None or receiver is None:
        return PROBE_ERROR, "a probe printed no result"
    for role, result in (("sender", sender), ("receiver", receiver)):
        if result.get("error"):
            return PROBE_ERROR, f"{role}: {result['error']}"
    if not receiver.get("received"):
        return UNREACHABLE, "the probe never arrived"
    observed = receiver.get("observed_src")
    own = case.src_ip if case.src.kind == POD else sender.get("local")
    if not same_address(observed, own):
        return NATED, f"the receiver saw source {observed}, the sender is {own}"
    if not sender.get("reply"):
        return UNREACHABLE, "the probe arrived with the right source, but no reply came back"
    return OK, ""


def same_address(first: object, second: object) -> bool:
    """Equal as addresses: an IPv6 address has many spellings (fd00:0::2, fd00::2)."""
    try:
        return ipaddress.ip_address(str(first)) == ipaddress.ip_address(str(second))
    except ValueError:
        return False


@dataclass
class CellResult:
    case: Case
    verdict: str
    detail: str
    attempts: int
    observation: Observation
    duration_s: float
    reproduce: str = ""

    @property
    def flaky(self) -> bool:
        return self.verdict == OK and self.attempts > 1


@dataclass
class MatrixReport:
    inventory: Inventory
    protocols: tuple[str, ...]
    cells: list[CellResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(cell.verdict == OK for cell in self.cells)

    def wrong(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.verdict != OK]

    def flaky(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.flaky]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for cell in self.cells:
            counts[cell.verdict] += 1
        return counts

    @property
    def families(self) -> tuple[str, ...]:
        present = {cell.case.family for cell in self.cells}
        if not present:  # nothing probed: the grids of what the inventory has, all `-`
            return self.inventory.families or (IPV4,)
        return tuple(family for family in FAMILIES if family in present)

    def grids(self) -> list[tuple[str, str]]:
        """(family, protocol) of every grid, IPv4's first; a family without cells has none."""
        return [(family, proto) for family in self.families for proto in self.protocols]

    def verdict(self, proto: str, src: Endpoint, dst: Endpoint, family: str = IPV4) -> str:
        for cell in self.cells:
            case = cell.case
            if (case.proto, case.family, case.src, case.dst) == (proto, family, src, dst):
                return cell.verdict
        return NOT_APPLICABLE
