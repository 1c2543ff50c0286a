"""The agent's counters and gauges, rendered in the Prometheus text exposition format."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "minicni_agent_"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Family:
    name: str
    kind: str
    help: str


FAMILIES = (
    _Family("reconciles_total", "counter", "Reconciles run, by result (ok or error)."),
    _Family("reconcile_duration_seconds", "summary", "Time spent in reconciles."),
    _Family("last_reconcile_timestamp_seconds", "gauge", "Unix time of the last reconcile."),
    _Family("routes", "gauge", "Routes to remote pod CIDRs in place, by backend."),
    _Family("route_changes_total", "counter", "Routes added, replaced or deleted."),
    _Family("vxlan_peer_changes_total", "counter", "VXLAN FDB and neighbour entries changed."),
    _Family(
        "peer_node_routes",
        "gauge",
        "Routes to VXLAN peers' node IPs in our policy table (pod <-> node symmetry).",
    ),
    _Family(
        "peer_node_route_changes_total",
        "counter",
        "Routes in our policy table added, replaced or deleted.",
    ),
    _Family(
        "policy_rules",
        "gauge",
        "Our `from <pod CIDR> lookup` rules in place (one per pod family with a VXLAN peer).",
    ),
    _Family("policy_rule_changes_total", "counter", "Times our policy rule was added or deleted."),
    _Family("nodes", "gauge", "Valid nodes in the current node set."),
    _Family("bad_node_entries", "gauge", "Node entries skipped in the last node set, by reason."),
    _Family("bad_node_entries_total", "counter", "Node entries skipped, by reason."),
    _Family("errors_total", "counter", "Errors, by stage."),
    _Family("firewall_rewrites_total", "counter", "Times our iptables chains were rewritten."),
    _Family(
        "iptables_backend",
        "gauge",
        "1 for the iptables backend our chains are in (legacy or nft), as the node's other "
        "components use it.",
    ),
    _Family("conflist_writes_total", "counter", "Times the CNI conflist was (re)written."),
    _Family(
        "conflist_in_effect",
        "gauge",
        "1 while our conflist is the first config file, the one the runtime loads.",
    ),
    _Family(
        "conflist_shadowed",
        "gauge",
        "1 for the config file the runtime loads instead of ours (its path in `file`).",
    ),
    _Family(
        "conflists_moved_aside_total",
        "counter",
        "Other config files renamed to *.minicni_bak (--cni-exclusive).",
    ),
    _Family("ready", "gauge", "1 once the conflist is written and the first reconcile is done."),
    _Family(
        "loopback_plugin_present",
        "gauge",
        "1 when the CNI bin dir has the `loopback` plugin containerd runs for every sandbox.",
    ),
    _Family(
        "br_netfilter",
        "gauge",
        "1 when br_netfilter is loaded: bridged pod traffic can pass iptables (Services to an "
        "endpoint on the same node need it).",
    ),
    _Family(
        "bridge_nf_call_iptables",
        "gauge",
        "1 when the pod bridge's own nf_call_iptables and nf_call_ip6tables are on (ORed with "
        "the node's bridge-nf-call-iptables sysctl); absent until the bridge exists.",
    ),
    _Family(
        "bridge_netfilter_changes_total",
        "counter",
        "Times the agent turned the pod bridge's nf_call_iptables/ip6tables on.",
    ),
    _Family(
        "bridge_ports_without_hairpin",
        "gauge",
        "Ports of the pod bridge without hairpin mode: pods that cannot reach themselves "
        "through their own Service.",
    ),
    _Family(
        "node_source_ready",
        "gauge",
        "1 while the node source keeps the node set current (0: stale, see /readyz).",
    ),
    _Family(
        "cni_requests_total",
        "counter",
        "CNI requests served through --cni-socket, by command and outcome (ok: exit 0; "
        "error: a CNI error was answered).",
    ),
    _Family(
        "cni_request_duration_seconds",
        "histogram",
        "Time to serve a CNI request, from the shim's go to the answer, by command (a DEL's "
        "kernel work comes after its answer).",
    ),
    _Family(
        "cni_refusals_total",
        "counter",
        "CNI requests refused, by reason; the shim then runs the plugin in-process (its log "
        "says so: 'fast path unavailable').",
    ),
    _Family(
        "cni_abandoned_total",
        "counter",
        "CNI requests taken but never confirmed by the shim (it had given up waiting and ran "
        "the plugin in-process); nothing was done for them.",
    ),
    _Family(
        "cni_connections_lost_total",
        "counter",
        "CNI connections that ended before a request was read or answered.",
    ),
    _Family(
        "cni_deferred_failures_total",
        "counter",
        "DELs answered whose kernel work then failed; finished by the next request for the pod, "
        "GC or the agent's next start.",
    ),
)

HISTOGRAM_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Seconds; a served ADD takes a few milliseconds of agent time, one that waits for the kernel's
rtnl lock on a busy node tens."""


class Metrics:
    """Thread-safe: the reconcile loop writes, the HTTP thread renders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def replace_family(self, name: str, values: Mapping[str, float], label: str) -> None:
        """Set a labelled gauge to exactly `values` (labels missing now are dropped)."""
        with self._lock:
            for key in [k for k in self._values if k[0] == name]:
                del self._values[key]
            for label_value, value in values.items():
                self._values[(name, ((label, label_value),))] = value

    def observe(self, name: str, seconds: float) -> None:
        self.inc(f"{name}_sum", seconds)
        self.inc(f"{name}_count")

    def observe_histogram(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram family: cumulative buckets, sum and count."""
        base = tuple(sorted(labels.items()))
        with self._lock:
            for bound in (*HISTOGRAM_BUCKETS, float("inf")):
                key = (f"{name}_bucket", (*base, ("le", _number(bound))))
                self._values[key] = self._values.get(key, 0.0) + (1 if value <= bound else 0)
            for suffix, amount in (("_sum", value), ("_count", 1.0)):
                key = (name + suffix, base)
                self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        with self._lock:
            values = dict(self._values)
        lines: list[str] = []
        for family in FAMILIES:
            samples = sorted(
                (
                    (key, value)
                    for key, value in values.items()
                    if key[0] == family.name
                    or (family.kind in _SUFFIXED and key[0].startswith(f"{family.name}_"))
                ),
                key=_sample_order,
            )
            lines.append(f"# HELP {PREFIX}{family.name} {family.help}")
            lines.append(f"# TYPE {PREFIX}{family.name} {family.kind}")
            for (name, labels), value in samples:
                lines.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


_SUFFIXED = ("summary", "histogram")  # their samples are name_sum, name_count, name_bucket


def _sample_order(sample: tuple[tuple[str, Labels], float]) -> tuple[object, ...]:
    """By name and labels, a histogram's buckets by their bound (so +Inf comes last)."""
    (name, labels), _ = sample
    others = tuple(pair for pair in labels if pair[0] != "le")
    bound = next((float(value) for key, value in labels if key == "le"), 0.0)
    return name, others, bound


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(value)
