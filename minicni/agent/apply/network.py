"""One pass over the node's pod network: plan from the node set and the node's own subnets, then
bring the kernel in line, in the order that keeps traffic flowing: forwarding on (of each family
the cluster has), the VXLAN devices some peer needs, the peers' FDB and neighbour entries, the
routes (which need them), the policy rules (which need their table filled and emptied of stale
routes) and last the stale entries (which routes no longer use).

Each step that fails is recorded with its stage and the others still run; the caller reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from minicni.agent.apply import hostnet
from minicni.agent.apply.changes import Failure
from minicni.agent.apply.routes import RouteApplier, RouteResult
from minicni.agent.apply.rules import RuleApplier, RuleResult
from minicni.agent.apply.vxlan import PeerChanges, PeerResult, VxlanApplier, VxlanDevice, diff_peers
from minicni.agent.model.nodes import ClusterCidrs, Node
from minicni.agent.model.plan import (
    POLICY_TABLE,
    VXLAN_DEVICE,
    VXLAN_DEVICE6,
    Backend,
    Plan,
    plan_node,
    vxlan_overhead,
)
from minicni.net.addresses import KernelAddress
from minicni.net.rtnl import Rtnl
from minicni.net.sysctl import FORWARDING, ensure_sysctl

DEVICES = {VXLAN_DEVICE: 4, VXLAN_DEVICE6: 6}
"""Our VXLAN devices and the underlay family of each."""


@dataclass(frozen=True)
class NodeView:
    """What the pass starts from: the node set, this node, and what the kernel said of the node's
    own network (its addresses of both families, dumped once per pass, and its underlay
    interface of each family it has an address of)."""

    nodes: Mapping[str, Node]
    own: Node
    backend: Backend
    cluster_cidr: ClusterCidrs
    addresses: tuple[KernelAddress, ...]
    underlays: Mapping[int, hostnet.Underlay]


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
        forwarding_errors = _ensure_forwarding(view.cluster_cidr.versions)
        devices = {name: self._vxlan.ifindex(name) for name in DEVICES}
        present = {name: index for name, index in devices.items() if index is not None}
        result = NetworkResult(self._plan(view, present.values()))
        for error in forwarding_errors:
            result.fail("sysctl", error)
        for message in result.plan.unroutable:
            result.fail("routes", message)
        lost = []
        for name in sorted(result.plan.devices()):
            index = self._ensure_vxlan(view, name, result)
            if index is None:
                lost.append(name)
            else:
                present[name] = index
        if lost:  # no tunnel (reported): do not route into a missing device
            result.plan = result.plan.without_vxlan(lost)
        peers = {}
        for name, index in present.items():
            planned = (p for p in result.plan.vxlan_peers if p.device == name)
            peers[name] = diff_peers(planned, *self._vxlan.current_peers(index))
            self._count(result, self._vxlan.upsert_peers(index, peers[name]))
        routes = RouteApplier(self._rtnl).reconcile(result.plan.all_routes(), present)
        result.routes = routes
        result.fail_each("routes", routes.failures)
        self._apply_rules(result)
        for name, index in present.items():
            self._count(result, self._vxlan.delete_stale(index, peers.get(name, PeerChanges())))
        return result

    @staticmethod
    def _plan(view: NodeView, vxlan_indexes: Iterable[int]) -> Plan:
        subnets = hostnet.connected_subnets(view.addresses, view.cluster_cidr, vxlan_indexes)
        return plan_node(view.nodes, view.own.name, view.backend, subnets)

    def _ensure_vxlan(self, view: NodeView, name: str, result: NetworkResult) -> int | None:
        """The VXLAN device `name`'s index, created or corrected; None if it cannot be had."""
        version = DEVICES[name]
        own, underlay = view.own, view.underlays.get(version)
        local_ip = own.address(version)
        if underlay is None or local_ip is None:
            result.fail("vxlan", f"no interface holds {local_ip or f'an IPv{version} address'}")
            return self._vxlan.ifindex(name)
        device = VxlanDevice(
            local_ip,
            underlay.ifindex,
            own.pod_cidrs,
            underlay.mtu - vxlan_overhead(version),
            name,
        )
        try:
            index, _ = self._vxlan.ensure_device(device, view.addresses)
        except Exception as error:  # netlink refused: report, route what host-gw can
            result.fail("vxlan", f"cannot set up {device.name}: {error}")
            return self._vxlan.ifindex(name)
        return index

    def _apply_rules(self, result: NetworkResult) -> None:
        """A family's rule only while our table holds peer routes of that family, and never
        over a stale one: if a stale route could not be deleted, that family's rule goes (pod
        <-> VXLAN peer node traffic falls back to the main table, asymmetric but still routed)
        until a later pass fixes it."""
        wanted = set(result.plan.rules)
        for rule in result.plan.rules:
            if result.routes.failed_deletes(POLICY_TABLE, rule.src.version):
                result.fail(
                    "policy_rule",
                    f"stale IPv{rule.src.version} routes left in our table: rule withdrawn",
                )
                wanted.discard(rule)
        result.rule = RuleApplier(self._rtnl).reconcile(wanted)
        result.fail_each("policy_rule", result.rule.failures)

    @staticmethod
    def _count(result: NetworkResult, peers: PeerResult) -> None:
        result.vxlan_changes += peers.changed
        result.fail_each("vxlan", peers.failures)


def _ensure_forwarding(versions: Iterable[int]) -> list[str]:
    """Pod traffic is forwarded by the node, for each family of the cluster (the plugin sets
    this too, on its first pod). Read first: where /proc/sys is read-only (a container) and it
    is already on, fine."""
    errors = []
    for version in versions:
        key = FORWARDING[version]
        try:
            ensure_sysctl(key, "1")
        except OSError as error:
            errors.append(f"cannot enable {key}: {error}")
    return errors
