"""The connectivity matrix's cells and verdicts: cases -> observations -> verdicts.

A cell is (protocol, source endpoint, destination endpoint). It passes only if the probe arrived,
the receiver saw the sender's own address as source, and the reply came back. Verdicts:

    .  ok            X  unreachable (or the reply never came back)
    N  reachable, but the receiver saw another source address (NAT)
    !  the probe itself failed          -  not applicable (no case for this pair)

`judge` is pure: it runs nothing and sees only what the two probe processes printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.matrix.executors import NODE, POD, Endpoint, Inventory

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


@dataclass(frozen=True)
class Case:
    kind: str
    proto: str
    src: Endpoint
    dst: Endpoint
    port: int

    @property
    def label(self) -> str:
        return f"{self.proto} {self.src.name} -> {self.dst.name}"


def build_cases(
    inventory: Inventory,
    protocols: Sequence[str] = PROTOCOLS,
    kinds: Sequence[str] = CASE_KINDS,
    port_base: int = 31000,
) -> list[Case]:
    """Every applicable cell, each with its own port so cells can run in parallel."""
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols: {', '.join(sorted(unknown))}")
    cases: list[Case] = []
    for proto in protocols:
        for src in inventory.endpoints:
            for dst in inventory.endpoints:
                kind = case_kind(src, dst)
                if kind is not None and kind in kinds:
                    cases.append(Case(kind, proto, src, dst, port_base + len(cases)))
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
    own = case.src.ip if case.src.kind == POD else sender.get("local")
    if observed != own:
        return NATED, f"the receiver saw source {observed}, the sender is {own}"
    if not sender.get("reply"):
        return UNREACHABLE, "the probe arrived with the right source, but no reply came back"
    return OK, ""


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

    def verdict(self, proto: str, src: Endpoint, dst: Endpoint) -> str:
        for cell in self.cells:
            if cell.case.proto == proto and cell.case.src == src and cell.case.dst == dst:
                return cell.verdict
        return NOT_APPLICABLE
