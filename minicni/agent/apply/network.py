"""One pass over the node's pod network: plan from the node set and the node's own subnets, then
bring the kernel in line, in the order that keeps traffic flowing: forwarding on, the VXLAN device
if a peer needs it, the peers' FDB and neighbour entries, the routes (which need them), the policy
rule (which needs its table filled and emptied of stale routes) and last the stale entries (which
routes no longer use).

Each step that fails is recorded with its stage and the others still run; the caller reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from minicni.agent.apply import hostnet
from minicni.agent.apply.changes import Failure
from minicni.agent.apply.routes import RouteApplier, RouteResult
from minicni.agent.apply.rules import RuleApplier, RuleResult
from minicni.agent.apply.vxlan import PeerChanges, PeerResult, VxlanApplier, VxlanDevice, diff_peers
from minicni.agent.model.nodes import Node
from minicni.agent.model.plan import (
    POLICY_TABLE,
    VXLAN_DEVICE,
    VXLAN_OVERHEAD,
    Backend,
    Plan,
    plan_node,
)
from minicni.net.addresses import KernelAddress
from minicni.net.rtnl import Rtnl
from minicni.net.sysctl import ensure_sysctl


@dataclass(frozen=True)
class NodeView:
    """What the pass starts from: the node set, this node, and what the kernel said of the node's
    own network (its IPv4 addresses, dumped once per pass, and its underlay)."""

    nodes: Mapping[str, Node]
    own: Node
    backend: Backend
    cluster_cidr: IPv4Network
    addresses: tuple[KernelAddress, ...]
    underlay: hostnet.Underlay | None


@dataclass
class NetworkResult:
    plan: Plan
    routes: RouteResult = field(default_factory=RouteResult)
    rule: RuleResult = field(default_factory=RuleResult)
    vxlan_changes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(stage, message) of everything that failed, in the order it happened."""

    def fail(self, stage: str, message: str) -> None:
        self.failures.append((stage, message))

    def fail_each(self, stage: str, failures: Iterable[Failure[object]]) -> None:
        for failure in failures:
            self.fail(stage, f"{failure.item}: {failure.reason}")


class NetworkApplier:
    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl
        self._vxlan = VxlanApplier(rtnl)

    def apply(self, view: NodeView) -> NetworkResult:
        forwarding_error = _ensure_forwarding()
        vxlan_index = self._vxlan.ifindex()
        result = NetworkResult(self._plan(view, vxlan_index))
        if forwarding_error:
            result.fail("sysctl", forwarding_error)
        if result.plan.vxlan_peers:
            vxlan_index = self._ensure_vxlan(view, result)
            if vxlan_index is None:  # no tunnel (reported): do not route into a missing device
                result.plan = result.plan.without_vxlan()
        peers = PeerChanges()
        if vxlan_index is not None:
            peers = diff_peers(result.plan.vxlan_peers, *self._vxlan.current_peers(vxlan_index))
            self._count(result, self._vxlan.upsert_peers(vxlan_index, peers))
        routes = RouteApplier(self._rtnl).reconcile(
            result.plan.all_routes(), vxlan_index, VXLAN_DEVICE
        )
        result.routes = routes
        result.fail_each("routes", routes.failures)
        self._apply_rule(result)
        if vxlan_index is not None:
            self._count(result, self._vxlan.delete_stale(vxlan_index, peers))
        return result

    @staticmethod
    def _plan(view: NodeView, vxlan_index: int | None) -> Plan:
        subnets = hostnet.connected_subnets(
            view.addresses,
            view.cluster_cidr,
            [vxlan_index] if vxlan_index is not None else [],
        )
        return plan_node(view.nodes, view.own.name, view.backend, subnets)

    def _ensure_vxlan(self, view: NodeView, result: NetworkResult) -> int | None:
        """Our VXLAN device's index, created or corrected; None if it cannot be had."""
        own, underlay = view.own, view.underlay
        if underlay is None:
            result.fail("vxlan", f"no interface holds {own.internal_ip}")
            return self._vxlan.ifindex()
        device = VxlanDevice(
            own.internal_ip, underlay.ifindex, own.pod_cidr, underlay.mtu - VXLAN_OVERHEAD
        )
        try:
            index, _ = self._vxlan.ensure_device(device, view.addresses)
        except Exception as error:  # netlink refused: report, route what host-gw can
            result.fail("vxlan", f"cannot set up {device.name}: {error}")
            return self._vxlan.ifindex()
        return index

    def _apply_rule(self, result: NetworkResult) -> None:
        """The rule only while our table holds peer routes, and never over a stale one: if a
        stale route could not be deleted, the rule goes (pod <-> VXLAN peer node traffic falls
        back to the main table, asymmetric but still routed) until a later pass fixes it."""
        wanted = result.plan.rule
        if wanted is not None and result.routes.failed_deletes(POLICY_TABLE):
            result.fail("policy_rule", "stale routes left in our table: rule withdrawn")
            wanted = None
        result.rule = RuleApplier(self._rtnl).reconcile(wanted)
        result.fail_each("policy_rule", result.rule.failures)

    @staticmethod
    def _count(result: NetworkResult, peers: PeerResult) -> None:
        result.vxlan_changes += peers.changed
        result.fail_each("vxlan", peers.failures)


def _ensure_forwarding() -> str | None:
    """Pod traffic is forwarded by the node (the plugin sets this too, on its first pod). Read
    first: where /proc/sys is read-only (a container) and it is already on, fine."""
    try:
        ensure_sysctl("net.ipv4.ip_forward", "1")
    except OSError as error:
        return f"cannot enable net.ipv4.ip_forward: {error}"
    return None
