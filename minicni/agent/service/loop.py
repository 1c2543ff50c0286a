"""The long-running agent: reconcile on every node change and every resync period until stopped.

Stopping leaves routes, VXLAN entries, rules and the conflist in place, so pod traffic keeps
flowing while the agent restarts or is upgraded.
"""

from __future__ import annotations

import logging
import threading

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.reconciler import Reconciler
from minicni.agent.service.report import Report
from minicni.agent.service.sources import NodeSource, SourceError
from minicni.agent.service.sources.backoff import Backoff

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_SECONDS = 5.0


def fetch_entries(source: NodeSource) -> list[NodeEntry] | None:
    try:
        return source.fetch()
    except SourceError as error:
        log.error("node source: %s (keeping the last good node set)", error)
        return None


def reconcile_once(source: NodeSource, reconciler: Reconciler) -> Report:
    return reconciler.reconcile(fetch_entries(source))


def install(source: NodeSource, reconciler: Reconciler, stop: threading.Event) -> Report:
    """`--install-only`: the plugin and the conflist, retried (with backoff) until this node is
    in the node set with a pod CIDR, as flannel's init waits for its lease. A plugin that cannot
    be installed ends it at once: retrying would not give the container more rights."""
    backoff = Backoff()
    while True:
        report = reconciler.install(fetch_entries(source))
        if reconciler.installed or reconciler.plugin_failed or stop.is_set():
            return report
        delay = backoff.next_delay()
        log.info("install: %s; retrying in %.1f s", "; ".join(report.errors), delay)
        stop.wait(delay)


def run(
    source: NodeSource,
    reconciler: Reconciler,
    stop: threading.Event,
    resync_seconds: float,
) -> None:
    reported_ready = False
    source_health = source.health()
    while not stop.is_set():
        report = reconciler.reconcile(fetch_entries(source))
        _log_report(report)
        health = source.health()
        reconciler.metrics.set("node_source_ready", 1.0 if health.ready else 0.0)
        if health != source_health:
            if health.reason:
                log.warning("%s", health.reason)
            else:
                log.info("node source: keeping the node set current again")
        source_health = health
        if reconciler.ready and not reported_ready:
            try:
                source.report_ready(reconciler.config.node_name)
                reported_ready = True
            except SourceError:
                pass  # retried after the next reconcile
        wait = resync_seconds if report.ok else min(resync_seconds, RETRY_AFTER_ERROR_SECONDS)
        source.wait(wait, stop)


def _log_report(report: Report) -> None:
    policy_changes = report.peer_node_route_changes + report.policy_rule_changes
    changed = (
        report.routes_added
        + report.routes_replaced
        + report.routes_deleted
        + report.vxlan_changes
        + policy_changes
    )
    if changed or report.conflist_written or report.firewall_rewritten or report.plugin_installed:
        log.info(
            "reconciled %d nodes in %.3f s: routes %d (+%d ~%d -%d), vxlan changes %d, "
            "policy routing changes %d%s%s",
            report.nodes,
            report.seconds,
            report.routes,
            report.routes_added,
            report.routes_replaced,
            report.routes_deleted,
            report.vxlan_changes,
            policy_changes,
            ", conflist written" if report.conflist_written else "",
            ", firewall rewritten" if report.firewall_rewritten else "",
        )
    else:
        log.debug("reconciled %d nodes in %.3f s, nothing changed", report.nodes, report.seconds)
