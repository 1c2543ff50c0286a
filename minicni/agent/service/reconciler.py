"""One reconcile: node entries -> validated node set -> plan -> kernel, firewall and conflist.

Level-triggered: every pass recomputes the whole desired state and diffs it against the kernel,
so a missed event or a manual change is corrected on the next resync. A stage that fails is
counted and reported; the others still run. Nothing here ever removes routes because the node
source failed: without a usable node set the last good one is used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from minicni.agent.apply import hostnet, rtnl_dump
from minicni.agent.apply.firewall import IptablesFirewall
from minicni.agent.apply.routes import RouteApplier, RouteResult
from minicni.agent.apply.rules import RuleApplier
from minicni.agent.apply.vxlan import PeerChanges, PeerResult, VxlanApplier, VxlanDevice, diff_peers
from minicni.agent.host import conflist, state
from minicni.agent.model.conflist import ConflistSettings
from minicni.agent.model.nodes import Node, NodeEntry, NodeProblem, validate_entries
from minicni.agent.model.plan import (
    MAIN_TABLE,
    POLICY_TABLE,
    VXLAN_DEVICE,
    VXLAN_OVERHEAD,
    Plan,
    plan_node,
    pod_mtu,
)
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.net.sysctl import ensure_sysctl

log = logging.getLogger(__name__)

PLUGIN_RECHECK_SECONDS = 300.0
"""The plugin is installed at start and checked again this often, not on every node change."""


@dataclass
class Report:
    """What one reconcile did; printed as JSON by `--once`."""

    ok: bool = True
    nodes: int = 0
    problems: list[str] = field(default_factory=list)
    routes: int = 0
    routes_added: int = 0
    routes_replaced: int = 0
    routes_deleted: int = 0
    vxlan_peers: int = 0
    vxlan_changes: int = 0
    peer_node_routes: int = 0
    peer_node_route_changes: int = 0
    policy_rule: bool = False
    policy_rule_changes: int = 0
    conflist_written: bool = False
    plugin_installed: bool = False
    firewall_rewritten: bool = False
    mtu: int | None = None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageError(Exception):
    """A reconcile stage that cannot go on; `stage` labels it in metrics."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class Reconciler:
    def __init__(self, config: AgentConfig, metrics: Metrics, ipr: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self._ipr = ipr
        self._last_good: dict[str, Node] = state.load_nodes(config.state_dir)
        self._last_problems: list[NodeProblem] = []
        self._conflist_ok = False
        self._reconciled = False
        self._plugin_ok = config.plugin_install == "none"
        self._next_install = 0.0

    @property
    def ready(self) -> bool:
        return self._conflist_ok and self._reconciled and self._plugin_ok

    def _kernel(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def reconcile(self, entries: list[NodeEntry] | None) -> Report:
        """Entries from the source, or None when the source failed (plan from the last good set)."""
        started = time.perf_counter()
        report = Report()
        try:
            nodes = self._node_set(entries, report)
            self._apply(nodes, report)
        except StageError as error:
            self._fail(report, error.stage, str(error))
        except Exception as error:  # a bug or an unforeseen kernel answer: keep the agent alive
            log.exception("reconcile failed")
            self._fail(report, "internal", f"{type(error).__name__}: {error}")
        report.seconds = round(time.perf_counter() - started, 6)
        self.metrics.inc("reconciles_total", result="ok" if report.ok else "error")
        self.metrics.observe("reconcile_duration_seconds", report.seconds)
        self.metrics.set("last_reconcile_timestamp_seconds", time.time())
        self.metrics.set("ready", 1.0 if self.ready else 0.0)
        return report

    def _fail(self, report: Report, stage: str, message: str) -> None:
        report.ok = False
        report.errors.append(f"{stage}: {message}")
        self.metrics.inc("errors_total", stage=stage)
        log.error("%s: %s", stage, message)

    def _node_set(self, entries: list[NodeEntry] | None, report: Report) -> dict[str, Node]:
        if entries is None:
            if not self._last_good:
                raise StageError("source", "no usable node set from the source, none saved")
            self._fail(report, "source", "no usable node set from the source: using the last good")
            return dict(self._last_good)
        checked = validate_entries(entries, self.config.cluster_cidr, self._last_good)
        self._record_problems(checked.problems, report)
        if checked.nodes != self._last_good:
            try:
                state.save_nodes(self.config.state_dir, checked.nodes)
            except OSError as error:
                self._fail(report, "state", f"cannot save the node set: {error}")
        self._last_good = dict(checked.nodes)
        return checked.nodes

    def _record_problems(self, problems: list[NodeProblem], report: Report) -> None:
        report.problems = [str(problem) for problem in problems]
        counts: dict[str, float] = {}
        for problem in problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        self.metrics.replace_family("bad_node_entries", counts, "reason")
        if problems != self._last_problems:  # log each problem once, not on every resync
            for problem in problems:
                log.warning("skipping bad entry: %s", problem)
                self.metrics.inc("bad_node_entries_total", reason=problem.kind)
        self._last_problems = problems

    def _apply(self, nodes: dict[str, Node], report: Report) -> None:
        config = self.config
        report.nodes = len(nodes)
        self.metrics.set("nodes", len(nodes))
        own = nodes.get(config.node_name)
        if own is None:
            raise StageError("own_node", f"node {config.node_name!r} has no valid entry yet")
        ipr = self._kernel()
        underlay = hostnet.find_underlay(ipr, own.internal_ip)
        underlay_mtu = underlay.mtu if underlay else hostnet.DEFAULT_MTU
        report.mtu = config.mtu or pod_mtu(underlay_mtu, config.backend)
        # The plugin first: a runtime that finds the conflist executes the plugin straight away.
        if time.monotonic() >= self._next_install:
            self._install_plugin(report)
        if self._plugin_ok:
            self._write_conflist(own, report.mtu, report)
        self._apply_network(nodes, own, underlay, underlay_mtu, report)
        if config.firewall == "iptables":
            self._apply_firewall(nodes, report)
        # Ready after one complete pass: a peer whose route fails is reported and retried, but
        # must not keep this node's pods (and, with Kubernetes, the whole node) off the network.
        self._reconciled = True

    def _write_conflist(self, own: Node, mtu: int, report: Report) -> None:
        settings = ConflistSettings(
            own.pod_cidr, mtu, self.config.ipam_data_dir, self.config.plugin_log_file
        )
        try:
            report.conflist_written = conflist.write_conflist(self.config.cni_conf_dir, settings)
        except OSError as error:
            self._fail(report, "conflist", str(error))
            return
        if report.conflist_written:
            self.metrics.inc("conflist_writes_total")
        self._conflist_ok = True

    def _install_plugin(self, report: Report) -> None:
        mode = self.config.plugin_install
        if mode == "none":
            return
        try:
            from minicni.agent.host.launcher import install_plugin

            report.plugin_installed = install_plugin(
                self.config.cni_bin_dir, mode=mode, runtime_dir=self.config.plugin_dir
            )
            self._plugin_ok = True
            self._next_install = time.monotonic() + PLUGIN_RECHECK_SECONDS
        except Exception as error:  # reported and retried on the next resync
            self._fail(report, "plugin_install", f"{type(error).__name__}: {error}")

    def _apply_network(
        self,
        nodes: dict[str, Node],
        own: Node,
        underlay: hostnet.Underlay | None,
        underlay_mtu: int,
        report: Report,
    ) -> None:
        """Plan, then the VXLAN device if a peer needs it, the peers' FDB/neighbour entries, the
        routes (which need them), the policy rule (which needs its table filled and emptied of
        stale routes) and last the stale entries (which routes no longer use)."""
        ipr = self._kernel()
        self._ensure_forwarding(report)
        vxlan = VxlanApplier(ipr)
        vxlan_index = vxlan.ifindex()
        plan = self._plan(nodes, own, vxlan_index)
        if plan.vxlan_peers:
            vxlan_index = self._ensure_vxlan(vxlan, own, underlay, underlay_mtu, report)
            if vxlan_index is None:  # no tunnel (reported): do not route into a missing device
                plan = plan.without_vxlan()
        peers = PeerChanges()
        if vxlan_index is not None:
            peers = diff_peers(plan.vxlan_peers, *vxlan.current_peers(vxlan_index))
            self._count_peer_changes(report, vxlan.upsert_peers(vxlan_index, peers))
        routes = RouteApplier(ipr).reconcile(plan.all_routes(), vxlan_index, VXLAN_DEVICE)
        self._report_failures(report, "routes", routes.failures)
        self._apply_rule(plan, routes, report)
        if vxlan_index is not None:
            self._count_peer_changes(report, vxlan.delete_stale(vxlan_index, peers))
        report.vxlan_peers = len(plan.vxlan_peers)
        self._record_route_counts(routes, report)
        self._record_route_metrics(plan, report)

    def _apply_rule(self, plan: Plan, routes: RouteResult, report: Report) -> None:
        """The rule only while our table holds peer routes, and never over a stale one: if a
        stale route could not be deleted, the rule goes (pod <-> VXLAN peer node traffic falls
        back to the main table, asymmetric but still routed) until a later pass fixes it."""
        wanted = plan.rule
        if wanted is not None and routes.failed_deletes(POLICY_TABLE):
            self._fail(report, "policy_rule", "stale routes left in our table: rule withdrawn")
            wanted = None
        result = RuleApplier(self._kernel()).reconcile(wanted)
        self._report_failures(report, "policy_rule", result.failures)
        report.policy_rule = result.present
        report.policy_rule_changes = result.changed
        if result.changed:
            self.metrics.inc("policy_rule_changes_total", result.changed)

    @staticmethod
    def _record_route_counts(routes: RouteResult, report: Report) -> None:
        main = routes.counts(MAIN_TABLE)
        report.routes = main.total
        report.routes_added = main.added
        report.routes_replaced = main.replaced
        report.routes_deleted = main.deleted
        policy = routes.counts(POLICY_TABLE)
        report.peer_node_routes = policy.total
        report.peer_node_route_changes = policy.added + policy.replaced + policy.deleted

    def _ensure_forwarding(self, report: Report) -> None:
        """Pod traffic is forwarded by the node (the plugin sets this too, on its first pod).
        Read first: where /proc/sys is read-only (a container) and it is already on, fine."""
        try:
            ensure_sysctl("net.ipv4.ip_forward", "1")
        except OSError as error:
            self._fail(report, "sysctl", f"cannot enable net.ipv4.ip_forward: {error}")

    def _ensure_vxlan(
        self,
        vxlan: VxlanApplier,
        own: Node,
        underlay: hostnet.Underlay | None,
        underlay_mtu: int,
        report: Report,
    ) -> int | None:
        """Our VXLAN device's index, created or corrected; None if it cannot be had."""
        if underlay is None:
            self._fail(report, "vxlan", f"no interface holds {own.internal_ip}")
            return vxlan.ifindex()
        device = VxlanDevice(
            own.internal_ip, underlay.ifindex, own.pod_cidr, underlay_mtu - VXLAN_OVERHEAD
        )
        try:
            index, _ = vxlan.ensure_device(device)
        except Exception as error:  # netlink refused: report, route what host-gw can
            self._fail(report, "vxlan", f"cannot set up {device.name}: {error}")
            return vxlan.ifindex()
        return index

    def _plan(self, nodes: dict[str, Node], own: Node, vxlan_index: int | None) -> Plan:
        subnets = hostnet.connected_subnets(
            rtnl_dump.dump_addresses(),
            self.config.cluster_cidr,
            [vxlan_index] if vxlan_index is not None else [],
        )
        return plan_node(nodes, own.name, self.config.backend, subnets)

    def _count_peer_changes(self, report: Report, result: PeerResult) -> None:
        report.vxlan_changes += result.changed
        if result.changed:
            self.metrics.inc("vxlan_peer_changes_total", result.changed)
        self._report_failures(report, "vxlan", result.failures)

    def _record_route_metrics(self, plan: Plan, report: Report) -> None:
        vxlan_routes = sum(1 for route in plan.routes if route.device is not None)
        by_backend = {"host-gw": len(plan.routes) - vxlan_routes, "vxlan": vxlan_routes}
        self.metrics.replace_family("routes", by_backend, "backend")
        self.metrics.set("peer_node_routes", report.peer_node_routes)
        self.metrics.set("policy_rules", 1.0 if report.policy_rule else 0.0)
        if report.peer_node_route_changes:
            self.metrics.inc("peer_node_route_changes_total", report.peer_node_route_changes)
        for op, count in (
            ("add", report.routes_added),
            ("replace", report.routes_replaced),
            ("delete", report.routes_deleted),
        ):
            if count:
                self.metrics.inc("route_changes_total", count, op=op)

    def _report_failures(self, report: Report, stage: str, failures: list[Any]) -> None:
        for failure in failures:
            self._fail(report, stage, f"{failure.item}: {failure.reason}")

    def _apply_firewall(self, nodes: dict[str, Node], report: Report) -> None:
        try:
            report.firewall_rewritten = IptablesFirewall().apply(
                self.config.cluster_cidr, (node.internal_ip for node in nodes.values())
            )
        except Exception as error:  # missing iptables, a failed restore: reported, retried
            self._fail(report, "firewall", f"{type(error).__name__}: {error}")
            return
        if report.firewall_rewritten:
            self.metrics.inc("firewall_rewrites_total")
