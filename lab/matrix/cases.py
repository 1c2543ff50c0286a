"""The connectivity matrix's cells and verdicts: cases -> observations -> verdicts.

A cell is (family, protocol, source endpoint, destination endpoint): a dual-stack cluster has
every cell twice, once per IP family, named `tcp` and `tcp6` (`icmp6` is ICMPv6). It passes only if
the probe arrived, the receiver saw the sender's own address as source, and the reply came back.
Verdicts:

    .  ok            X  unreachable (or the reply never came back)
    N  reachable, but a source address was not the one expected (NAT where there should be
       none, or a reply from the endpoint's address instead of the Service's)
    !  the probe itself failed          -  not applicable (no case for this pair)

Service cells (a Service of the inventory, a client, one of the Service's endpoints) pass when
the client's probe reached that endpoint through the Service's ClusterIP, the endpoint saw the
source it should, and the reply came back from the ClusterIP (conntrack undid the DNAT). The
source an endpoint should see follows from kube-proxy's rules (`lab.cluster.kubeproxy`):

- a pod, endpoint on its node or another: the pod's own address (nothing masquerades it);
- a pod reaching itself (hairpin): its node's bridge address, the pod's default gateway -- the
  endpoint chain marks traffic from the endpoint itself and the node masquerades it to the
  address of the interface it leaves by, the bridge;
- a node: its own traffic leaves with its underlay address, outside the cluster CIDR, so the
  Service chain marks it and POSTROUTING masquerades it to the address of the interface towards
  the endpoint: the bridge's (endpoint on this node), the underlay's (host-gw) or the VXLAN
  device's. The client reports that address (`egress`), read from its own routes.

`judge` is pure: it runs nothing and sees only what the probe processes printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.matrix.executors import (
    FAMILIES,
    IPV4,
    IPV6,
    NODE,
    POD,
    Endpoint,
    Inventory,
    Service,
    family_of,
)

OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE = ".", "X", "N", "!", "-"
VERDICTS = (OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE)
PROTOCOLS = ("icmp", "tcp", "udp")

POD_POD_SAME = "pod->pod same node"
POD_POD_OTHER = "pod->pod other node"
POD_OWN_NODE = "pod->own node"
POD_OTHER_NODE = "pod->other node"
NODE_POD_SAME = "node->pod same node"
NODE_POD_OTHER = "node->pod other node"
PAIR_KINDS = (
    POD_POD_SAME,
    POD_POD_OTHER,
    POD_OWN_NODE,
    POD_OTHER_NODE,
    NODE_POD_SAME,
    NODE_POD_OTHER,
)
POD_SVC_SAME = "pod->ClusterIP endpoint same node"
POD_SVC_OTHER = "pod->ClusterIP endpoint other node"
POD_SVC_SELF = "pod->ClusterIP endpoint itself (hairpin)"
NODE_SVC = "node->ClusterIP"
SERVICE_KINDS = (POD_SVC_SAME, POD_SVC_OTHER, POD_SVC_SELF, NODE_SVC)
CASE_KINDS = PAIR_KINDS + SERVICE_KINDS


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


def service_case_kind(client: Endpoint, endpoint: Endpoint) -> str:
    """Which Service cell a client reaching a Service's endpoint (a pod) is."""
    if client.kind == NODE:
        return NODE_SVC
    if client.name == endpoint.name:
        return POD_SVC_SELF
    return POD_SVC_SAME if client.node == endpoint.node else POD_SVC_OTHER


def grid_name(family: str, proto: str) -> str:
    """`tcp` for IPv4, `tcp6` for IPv6 (`icmp6` is ICMPv6): how cells, grids and suites are
    named, so an IPv4 matrix reads as it always did."""
    return f"{proto}6" if family == IPV6 else proto


@dataclass(frozen=True)
class Case:
    kind: str
    proto: str
    src: Endpoint
    dst: Endpoint  # a Service cell: the endpoint (pod) the probe must reach
    port: int  # a Service cell: the Service's port
    service: Service | None = None
    family: str = IPV4

    @property
    def grid(self) -> str:
        return grid_name(self.family, self.proto)

    @property
    def label(self) -> str:
        if self.service is not None:
            return f"{self.grid} {self.src.name} -> {self.service.name} ({self.dst.name})"
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
    """Every applicable cell, each pair cell with its own port so cells can run in parallel: per
    family (by default each the inventory's pods have), every pair whose two ends have an address
    of it; then the Service cells of the Services whose protocol and family are asked for: every
    endpoint of the inventory with an address of the Service's family as a client of every
    endpoint of the Service."""
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
                        port = port_base + len(cases)
                        cases.append(Case(kind, proto, src, dst, port, family=family))
    for service in inventory.services:
        family = family_of(service.cluster_ip)
        if service.proto not in protocols or family not in families:
            continue
        for client in inventory.endpoints:
            if not client.address(family):
                continue
            for name in service.endpoints:
                endpoint = inventory.endpoint(name)
                kind = service_case_kind(client, endpoint)
                if kind in kinds:
                    cases.append(
                        Case(kind, service.proto, client, endpoint, service.port, service, family)
                    )
    return cases


@dataclass(frozen=True)
class Observation:
    """What the two probe processes printed (their JSON lines), or why there is nothing."""

    sender: dict[str, Any] | None = None
    receiver: dict[str, Any] | None = None
    error: str | None = None


def expected_source(case: Case, sender: dict[str, Any]) -> str | None:
    """The source address the receiving end should see (see the module's docstring)."""
    if case.service is None or case.kind in (POD_SVC_SAME, POD_SVC_OTHER):
        return case.src_ip if case.src.kind == POD else sender.get("local")
    if case.kind == POD_SVC_SELF:
        return sender.get("gateway")
    return (sender.get("egress") or {}).get(case.dst.name)


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
        if case.service is not None:
            return UNREACHABLE, _missed(case, sender)
        return UNREACHABLE, "the probe never arrived"
    observed = receiver.get("observed_src")
    expected = expected_source(case, sender)
    if expected is None:
        return PROBE_ERROR, "the sender reported no address to expect"
    if not same_address(observed, expected):
        who = "the sender is" if case.kind in PAIR_KINDS else "expected"
        return NATED, f"the receiver saw source {observed}, {who} {expected}"
    if not sender.get("reply"):
        return UNREACHABLE, "the probe arrived with the right source, but no reply came back"
    if case.service is not None and sender.get("reply_src") != case.service.cluster_ip:
        return NATED, (
            f"the reply came from {sender.get('reply_src')}, not from the Service's address "
            f"{case.service.cluster_ip} (the DNAT was not undone)"
        )
    return OK, ""


def same_address(first: object, second: object) -> bool:
    """Equal as addresses: an IPv6 address has many spellings (fd00:0::2, fd00::2)."""
    try:
        return ipaddress.ip_address(str(first)) == ipaddress.ip_address(str(second))
    except ValueError:
        return False


def _missed(case: Case, sender: dict[str, Any]) -> str:
    attempts, lost = sender.get("attempts", 0), len(sender.get("unanswered") or ())
    return (
        f"no probe through {case.service.name if case.service else '?'} reached "
        f"{case.dst.name} ({attempts} attempts, {lost} unanswered)"
    )


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
        """(family, protocol) of every grid of pair cells, IPv4's first; a family without cells
        has none."""
        pairs = {(c.case.family, c.case.proto) for c in self.cells if c.case.service is None}
        if not self.cells:
            pairs = {(family, proto) for family in self.families for proto in self.protocols}
        return [(f, p) for f in self.families for p in self.protocols if (f, p) in pairs]

    @property
    def services(self) -> tuple[Service, ...]:
        """The Services probed, in the inventory's order."""
        probed = {cell.case.service for cell in self.cells if cell.case.service is not None}
        return tuple(s for s in self.inventory.services if s in probed)

    def verdict(
        self,
        proto: str,
        src: Endpoint,
        dst: Endpoint,
        service: Service | None = None,
        family: str = IPV4,
    ) -> str:
        """A pair cell's verdict; with `service`, the Service cell of `src` reaching `dst`."""
        for cell in self.cells:
            case = cell.case
            key = (case.proto, case.src, case.dst, case.service, case.family)
            if key == (proto, src, dst, service, family):
                return cell.verdict
        return NOT_APPLICABLE
