"""One reconcile: node entries -> validated node set -> plan -> kernel, firewall and conflist.

Level-triggered: every pass recomputes the whole desired state and diffs it against the kernel,
so a missed event or a manual change is corrected on the next resync. A stage that fails is
counted and reported; the others still run. Nothing here ever removes routes because the node
source failed: without a usable node set the last good one is used.
"""

from __future__ import annotations

import logging
import time

from minicni import defaults
from minicni.agent.apply import hostnet
from minicni.agent.apply.firewall import IptablesFirewall
from minicni.agent.apply.network import NetworkApplier, NodeView
from minicni.agent.apply.services import check_services, service_warnings
from minicni.agent.host import conflist, state
from minicni.agent.host.companions import missing_loopback
from minicni.agent.host.launcher import host_write_error
from minicni.agent.host.portmap import PortmapProbe
from minicni.agent.model.conflist import ConflistSettings, chains_portmap
from minicni.agent.model.nodes import VERSIONS, Node, NodeEntry, NodeProblem, validate_entries
from minicni.agent.model.plan import pod_mtu, tunnel_versions
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.report import Report, record_failure, record_network
from minicni.net import wire
from minicni.net.addresses import KernelAddress, dump_addresses
from minicni.net.rtnl import Rtnl

log = logging.getLogger(__name__)

PLUGIN_RECHECK_SECONDS = 300.0
"""The plugin is installed at start and checked again this often, not on every node change."""
RECEIVE_BUFFER = 1 << 20
"""Room for the acks of a batch of BATCH_SIZE requests (a few hundred bytes of buffer each)."""


class StageError(Exception):
    """A reconcile stage that cannot go on; `stage` labels it in metrics."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class Reconciler:
    def __init__(self, config: AgentConfig, metrics: Metrics, rtnl: Rtnl | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._rtnl = rtnl
        self._last_good: dict[str, Node] = state.load_nodes(config.state_dir)
        self._last_problems: list[NodeProblem] = []
        self._conflist_ok = False
        self._reconciled = False
        self._plugin_ok = config.plugin_install == "none"
        self._next_install = 0.0
        self._firewall: IptablesFirewall | None = None
        self._portmap = PortmapProbe(config.cni_bin_dir)
        self._own_problem: str | None = None
        self._shadowed_by: str | None = None
        self._plugin_error: str | None = None
        self._conflist_written = False
        self._warnings: dict[str, str] = {}
        self.last_pass = time.monotonic()
        """When the last reconcile ended (monotonic): the liveness check reads it."""

    @property
    def installed(self) -> bool:
        """The plugin is installed and our conflist written (in effect or not)."""
        return self._plugin_ok and self._conflist_written

    @property
    def plugin_failed(self) -> bool:
        return self._plugin_error is not None

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self._own_problem:
            reasons.append(self._own_problem)
        if not self._plugin_ok:
            reasons.append(f"the plugin is not installed: {self._plugin_error or 'not yet'}")
        if self._shadowed_by:
            reasons.append(
                f"conflist not in effect: the runtime loads {self._shadowed_by} "
                f"(the first config file), not {defaults.CONFLIST_NAME}"
            )
        elif not self._conflist_ok:
            reasons.append("the conflist is not written yet")
        if not self._reconciled:
            reasons.append("no complete reconcile yet")
        return reasons

    def warnings(self) -> list[str]:
        """What the node lacks that minicni cannot fix and that does not hold the node back."""
        return list(self._warnings.values())

    def _warn(self, check: str, message: str | None, report: Report) -> None:
        """Keep a warning while it holds; log it when it appears and when it clears."""
        before = self._warnings.pop(check, None)
        if message is not None:
            self._warnings[check] = message
            if message != before:
                log.warning("%s", message)
        elif before is not None:
            log.info("%s: resolved", check)
        report.warnings = self.warnings()

    def _kernel(self) -> Rtnl:
        """One socket for the agent's life. Strict: the kernel filters the route dump by our
        protocol. Its receive buffer holds the acks of a whole batch."""
        if self._rtnl is None:
            self._rtnl = Rtnl(strict=True, receive_buffer=RECEIVE_BUFFER)
        return self._rtnl

    def close(self) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

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
        self.last_pass = time.monotonic()
        return report

    def _fail(self, report: Report, stage: str, message: str, *, log_it: bool = True) -> None:
        record_failure(report, self.metrics, stage, message, log_it=log_it)

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
        own, addresses, underlays = self._install_host(nodes, report)
        view = NodeView(
            nodes, own, self.config.backend, self.config.cluster_cidr, addresses, underlays
        )
        record_network(report, self.metrics, NetworkApplier(self._kernel()).apply(view))
        if self.config.firewall == "iptables":
            self._apply_firewall(nodes, report)
        self._check_services(report)
        # Ready after one complete pass: a peer whose route fails is reported and retried, but
        # must not keep this node's pods (and, with Kubernetes, the whole node) off the network.
        self._reconciled = True

    def _check_services(self, report: Report) -> None:
        """What Services need from the node: warnings, never a reason to be unready (pods'
        own traffic does not need it; see `minicni.agent.apply.services`)."""
        checks = check_services(self._kernel())
        report.br_netfilter = checks.br_netfilter
        report.bridge_netfilter = checks.bridge_netfilter
        report.bridge_ports_without_hairpin = len(checks.ports_without_hairpin)
        self.metrics.set("br_netfilter", 1.0 if checks.br_netfilter else 0.0)
        if checks.bridge_netfilter is not None:
            self.metrics.set("bridge_nf_call_iptables", 1.0 if checks.bridge_netfilter else 0.0)
        if checks.bridge_found:
            hairpinless = float(len(checks.ports_without_hairpin))
            self.metrics.set("bridge_ports_without_hairpin", hairpinless)
        if checks.netfilter_turned_on:
            log.info("turned on nf_call_iptables and nf_call_ip6tables on the pod bridge")
            self.metrics.inc("bridge_netfilter_changes_total")
        for check, message in service_warnings(checks).items():
            self._warn(check, message, report)

    def install(self, entries: list[NodeEntry] | None) -> Report:
        """What `--install-only` does: the plugin and the conflist, written into the host's
        directories (by an init container with the capabilities writing there needs), and
        nothing of the network."""
        started = time.perf_counter()
        report = Report()
        self._next_install = 0.0
        try:
            self._install_host(self._node_set(entries, report), report)
        except StageError as error:
            self._fail(report, error.stage, str(error))
        report.seconds = round(time.perf_counter() - started, 6)
        return report

    def _own_node(self, nodes: dict[str, Node]) -> Node:
        own = nodes.get(self.config.node_name)
        if own is not None:
            self._own_problem = None
            return own
        problem = next((p for p in self._last_problems if p.node == self.config.node_name), None)
        if problem is None:
            self._own_problem = (
                f"node {self.config.node_name!r} is not in the node set or has no pod CIDR yet"
            )
        elif problem.kind == "pod_cidr_outside_cluster":
            self._own_problem = (
                f"node {self.config.node_name!r}: {problem.detail}: --cluster-cidr "
                "(MINICNI_CLUSTER_CIDR) must be the cluster's pod CIDR (kube-controller-manager "
                "--cluster-cidr, kubeadm networking.podSubnet), or `auto` to read it"
            )
        else:
            self._own_problem = f"node {self.config.node_name!r} is unusable: {problem.detail}"
        raise StageError("own_node", self._own_problem)

    def _install_host(
        self, nodes: dict[str, Node], report: Report
    ) -> tuple[Node, tuple[KernelAddress, ...], dict[int, hostnet.Underlay]]:
        """The plugin, then the conflist (a runtime that finds the conflist executes the plugin
        straight away), then whether the runtime will use it."""
        config = self.config
        report.nodes = len(nodes)
        self.metrics.set("nodes", len(nodes))
        own = self._own_node(nodes)
        rtnl = self._kernel()
        addresses = tuple(dump_addresses(rtnl, wire.AF_UNSPEC))
        underlays: dict[int, hostnet.Underlay] = {}
        for version in VERSIONS:
            node_ip = own.address(version)
            underlay = hostnet.find_underlay(rtnl, node_ip, addresses) if node_ip else None
            if underlay is not None:
                underlays[version] = underlay
        report.mtu = config.mtu or self._pod_mtu(own, underlays)
        if time.monotonic() >= self._next_install:
            self._install_plugin(report)
        if self._plugin_ok:
            self._write_conflist(own, report.mtu, report)
        loopback = missing_loopback(config.cni_bin_dir)
        self.metrics.set("loopback_plugin_present", 0.0 if loopback else 1.0)
        self._warn("loopback", loopback, report)
        return own, addresses, underlays

    def _pod_mtu(self, own: Node, underlays: dict[int, hostnet.Underlay]) -> int:
        """The underlay's MTU (the smallest, with one of each family), less the VXLAN headers
        when a tunnel may carry pod traffic: the IPv6 ones when it may run over IPv6."""
        mtus = [underlay.mtu for underlay in underlays.values()]
        tunnels = tunnel_versions(own, self.config.cluster_cidr.versions)
        return pod_mtu(min(mtus, default=hostnet.DEFAULT_MTU), self.config.backend, tunnels)

    def _write_conflist(self, own: Node, mtu: int, report: Report) -> None:
        settings = ConflistSettings(
            own.pod_cidrs,
            mtu,
            self.config.ipam_data_dir,
            self.config.plugin_log_file,
            portmap_versions=self._portmap.versions(),
        )
        report.portmap_chained = chains_portmap(settings)
        try:
            report.conflist_written = conflist.write_conflist(self.config.cni_conf_dir, settings)
        except OSError as error:
            self._conflist_ok = False
            self._fail(report, "conflist", host_write_error(error))
            return
        if report.conflist_written:
            self.metrics.inc("conflist_writes_total")
        self._conflist_written = True
        self._conflist_ok = self._in_effect(report)

    def _in_effect(self, report: Report) -> bool:
        """Whether the runtime will use our conflist: it loads only the first config file."""
        try:
            placement = conflist.ensure_first(self.config.cni_conf_dir, self.config.cni_exclusive)
        except OSError as error:
            self._fail(report, "conflist", host_write_error(error))
            return False
        if placement.moved:
            self.metrics.inc("conflists_moved_aside_total", len(placement.moved))
        shadowed = placement.shadowed_by
        report.conflist_shadowed_by = shadowed
        self.metrics.set("conflist_in_effect", 0.0 if shadowed else 1.0)
        by_file = {shadowed: 1.0} if shadowed else {}
        self.metrics.replace_family("conflist_shadowed", by_file, "file")
        changed = shadowed != self._shadowed_by
        self._shadowed_by = shadowed
        if shadowed is None:
            return True
        self._fail(report, "conflist", conflist.shadowing_message(shadowed), log_it=changed)
        return False

    def _install_plugin(self, report: Report) -> None:
        mode = self.config.plugin_install
        if mode == "none":
            return
        try:
            from minicni.agent.host.launcher import install_plugin

            report.plugin_installed = install_plugin(
                self.config.cni_bin_dir,
                mode=mode,
                runtime_dir=self.config.plugin_dir,
                cni_socket=self.config.cni_socket,
            )
            self._plugin_ok = True
            self._plugin_error = None
            self._next_install = time.monotonic() + PLUGIN_RECHECK_SECONDS
        except OSError as error:  # reported and retried on the next resync
            self._plugin_ok = False
            self._plugin_error = host_write_error(error)
            self._fail(report, "plugin_install", self._plugin_error)
        except Exception as error:
            self._plugin_ok = False
            self._plugin_error = f"{type(error).__name__}: {error}"
            self._fail(report, "plugin_install", self._plugin_error)

    def _apply_firewall(self, nodes: dict[str, Node], report: Report) -> None:
        if self._firewall is None:
            self._firewall = IptablesFirewall()
        try:
            report.firewall_rewritten = self._firewall.apply(
                self.config.cluster_cidr,
                (ip for node in nodes.values() for ip in node.internal_ips),
            )
        except Exception as error:  # missing iptables, a failed restore: reported, retried
            self._fail(report, "firewall", f"{type(error).__name__}: {error}")
            return
        finally:
            backend = self._firewall.backend
            report.firewall_backend = backend.value if backend else None
            if backend is not None:
                self.metrics.replace_family("iptables_backend", {backend.value: 1.0}, "backend")
        if report.firewall_rewritten:
            self.metrics.inc("firewall_rewrites_total")
