"""What one reconcile did: the report `--once` prints as JSON, and the metrics a pass updates."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from minicni.agent.apply.network import NetworkResult
from minicni.agent.model.plan import MAIN_TABLE, POLICY_TABLE
from minicni.agent.service.metrics import Metrics

log = logging.getLogger(__name__)


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
    """Whether our policy rules (one per pod family with a VXLAN peer) are all in place."""
    policy_rules: int = 0
    policy_rule_changes: int = 0
    conflist_written: bool = False
    plugin_installed: bool = False
    portmap_chained: bool = False
    conflist_shadowed_by: str | None = None
    firewall_rewritten: bool = False
    firewall_backend: str | None = None
    br_netfilter: bool | None = None
    bridge_netfilter: bool | None = None
    bridge_ports_without_hairpin: int = 0
    mtu: int | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_failure(
    report: Report, metrics: Metrics, stage: str, message: str, *, log_it: bool = True
) -> None:
    report.ok = False
    report.errors.append(f"{stage}: {message}")
    metrics.inc("errors_total", stage=stage)
    if log_it:
        log.error("%s: %s", stage, message)


def record_network(report: Report, metrics: Metrics, result: NetworkResult) -> None:
    """The network pass into the report (counts per table) and the metrics (gauges of what is in
    place, counters of what changed); each failure is reported under its stage."""
    for stage, message in result.failures:
        record_failure(report, metrics, stage, message)
    main = result.routes.counts(MAIN_TABLE)
    report.routes = main.total
    report.routes_added = main.added
    report.routes_replaced = main.replaced
    report.routes_deleted = main.deleted
    policy = result.routes.counts(POLICY_TABLE)
    report.peer_node_routes = policy.total
    report.peer_node_route_changes = policy.added + policy.replaced + policy.deleted
    report.vxlan_peers = len(result.plan.vxlan_peers)
    report.vxlan_changes = result.vxlan_changes
    report.policy_rules = result.rule.present
    report.policy_rule = bool(result.plan.rules) and result.rule.present == len(result.plan.rules)
    report.policy_rule_changes = result.rule.changed
    _record_network_metrics(report, metrics, result)


def _record_network_metrics(report: Report, metrics: Metrics, result: NetworkResult) -> None:
    routes = result.plan.routes
    vxlan_routes = sum(1 for route in routes if route.device is not None)
    metrics.replace_family(
        "routes", {"host-gw": len(routes) - vxlan_routes, "vxlan": vxlan_routes}, "backend"
    )
    metrics.set("peer_node_routes", report.peer_node_routes)
    metrics.set("policy_rules", float(report.policy_rules))
    for name, count in (
        ("vxlan_peer_changes_total", report.vxlan_changes),
        ("peer_node_route_changes_total", report.peer_node_route_changes),
        ("policy_rule_changes_total", report.policy_rule_changes),
    ):
        if count:
            metrics.inc(name, count)
    for op, count in (
        ("add", report.routes_added),
        ("replace", report.routes_replaced),
        ("delete", report.routes_deleted),
    ):
        if count:
            metrics.inc("route_changes_total", count, op=op)
