"""Apply our iptables chains in the iptables backend the node's other components use (`xtables`,
detected on every resync; after a switch our chains leave the backend we left): with iptables for
an IPv4 cluster CIDR, with ip6tables for an IPv6 one, both in a dual-stack cluster, one
ip(6)tables-restore per family (the same backend for both, as iptables-wrappers picks it).

Each resync reads back only our chains and the built-in chains that jump to them (`iptables -S
CHAIN`: never a dump of kube-proxy's tables, which hold tens of thousands of rules on a large
cluster) and, if they differ from what they should be, rewrites them in one `iptables-restore
--noflush` transaction (declaring a chain flushes it), adding the jump from the built-in chain only
when it is missing, so reapplying is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from minicni.agent.apply.xtables import Backend, Detector, Runner, run, tool
from minicni.agent.model.firewall import (
    ChainSpec,
    ChainState,
    forward_spec,
    masquerade_spec,
    parse_chain,
    removal_section,
    render_restore,
    restore_section,
)
from minicni.agent.model.nodes import ClusterCidrs, IPAddress

log = logging.getLogger(__name__)


class IptablesFirewall:
    """Keeps our chains in the node's iptables backend. One instance lives as long as the agent:
    it remembers the backend it wrote to, to clean up after a switch."""

    def __init__(self, detector: Detector | None = None, runner: Runner = run) -> None:
        self._run = runner
        self._detector = detector or Detector(runner)
        self.backend: Backend | None = None
        self.reason = ""

    def _listing(self, backend: Backend, table: str, chain: str, version: int = 4) -> str | None:
        """`iptables -S <chain>` (ip6tables for IPv6) in one table; None when the chain does not
        exist (exit 1)."""
        argv = [backend.binary(tool("iptables", version)), "-w", "5", "-t", table, "-S", chain]
        done = self._run(argv)
        if done.returncode == 1:
            return None
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def read_state(self, backend: Backend, spec: ChainSpec) -> ChainState:
        legacy = self._detector.legacy_tables(spec.version)
        if backend is Backend.LEGACY and spec.table not in legacy:
            return ChainState((), exists=False, jumps=0)  # reading would create the table
        own = self._listing(backend, spec.table, spec.chain, spec.version)
        builtin = self._listing(backend, spec.table, spec.builtin, spec.version) or ""
        return parse_chain(f"{own or ''}\n{builtin}", spec)

    def _restore(self, backend: Backend, payload: str, version: int = 4) -> None:
        argv = [backend.binary(tool("iptables-restore", version)), "--noflush", "--wait", "5"]
        completed = self._run(argv, payload)
        if completed.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {completed.stderr.strip()}")

    def _leave(self, backend: Backend, specs: list[ChainSpec]) -> None:
        """Remove our chains from a backend the node no longer uses."""
        for version in sorted({spec.version for spec in specs}):
            sections: dict[str, list[str]] = {}
            for spec in (s for s in specs if s.version == version):
                section = removal_section(spec, self.read_state(backend, spec))
                sections.setdefault(spec.table, []).extend(section)
            payload = render_restore(sections)
            if payload:
                self._restore(backend, payload, version)
                log.info(
                    "removed our %s chains from the %s backend",
                    tool("iptables", version),
                    backend.value,
                )

    def apply(self, cluster_cidr: ClusterCidrs, node_ips: Iterable[IPAddress]) -> bool:
        """Make our chains right, for each family of the cluster CIDR; returns True if anything
        had to be rewritten."""
        detection = self._detector.detect()
        backend = detection.backend
        addresses = list(node_ips)
        specs = [
            spec
            for network in cluster_cidr.networks
            for spec in (forward_spec(network), masquerade_spec(network, addresses))
        ]
        if backend is not self.backend:
            log.info("iptables backend: %s (%s)", backend.value, detection.reason)
            for other in self._detector.available:
                if other is not backend:
                    self._leave(other, specs)
            self.backend = backend
        self.reason = detection.reason
        rewritten = False
        for version in cluster_cidr.versions:
            sections: dict[str, list[str]] = {}
            for spec in (s for s in specs if s.version == version):
                state = self.read_state(backend, spec)
                sections.setdefault(spec.table, []).extend(restore_section(spec, state))
            payload = render_restore(sections)
            if payload:
                self._restore(backend, payload, version)
                rewritten = True
        return rewritten
