"""Apply our iptables chains in the iptables backend the node's other components use (`xtables`,
detected on every resync; after a switch our chains leave the backend we left).

Each resync reads back only our chains and the built-in chains that jump to them (`iptables -S
CHAIN`: never a dump of kube-proxy's tables, which hold tens of thousands of rules on a large
cluster) and, if they differ from what they should be, rewrites them in one `iptables-restore
--noflush` transaction (declaring a chain flushes it), adding the jump from the built-in chain only
when it is missing, so reapplying is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from minicni.agent.apply.xtables import Backend, Detector, Runner, run
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

log = logging.getLogger(__name__)


class IptablesFirewall:
    """Keeps our chains in the node's iptables backend. One instance lives as long as the agent:
    it remembers the backend it wrote to, to clean up after a switch."""

    def __init__(self, detector: Detector | None = None, runner: Runner = run) -> None:
        self._run = runner
        self._detector = detector or Detector(runner)
        self.backend: Backend | None = None
        self.reason = ""

    def _listing(self, backend: Backend, table: str, chain: str) -> str | None:
        """`iptables -S <chain>` in one table; None when the chain does not exist (exit 1)."""
        argv = [backend.binary("iptables"), "-w", "5", "-t", table, "-S", chain]
        done = self._run(argv)
        if done.returncode == 1:
            return None
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def read_state(self, backend: Backend, spec: ChainSpec) -> ChainState:
        if backend is Backend.LEGACY and spec.table not in self._detector.legacy_tables():
            return ChainState((), exists=False, jumps=0)  # reading would create the table
        own = self._listing(backend, spec.table, spec.chain)
        builtin = self._listing(backend, spec.table, spec.builtin) or ""
        return parse_chain(f"{own or ''}\n{builtin}", spec)

    def _restore(self, backend: Backend, payload: str) -> None:
        argv = [backend.binary("iptables-restore"), "--noflush", "--wait", "5"]
        completed = self._run(argv, payload)
        if completed.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {completed.stderr.strip()}")

    def _leave(self, backend: Backend, specs: list[ChainSpec]) -> None:
        """Remove our chains from a backend the node no longer uses."""
        sections: dict[str, list[str]] = {}
        for spec in specs:
            section = removal_section(spec, self.read_state(backend, spec))
            sections.setdefault(spec.table, []).extend(section)
        payload = render_restore(sections)
        if payload:
            self._restore(backend, payload)
            log.info("removed our iptables chains from the %s backend", backend.value)

    def apply(self, cluster_cidr: IPv4Network, node_ips: Iterable[IPv4Address]) -> bool:
        """Make our chains right; returns True if anything had to be rewritten."""
        detection = self._detector.detect()
        backend = detection.backend
        specs = [forward_spec(cluster_cidr), masquerade_spec(cluster_cidr, node_ips)]
        if backend is not self.backend:
            log.info("iptables backend: %s (%s)", backend.value, detection.reason)
            for other in self._detector.available:
                if other is not backend:
                    self._leave(other, specs)
            self.backend = backend
        self.reason = detection.reason
        sections: dict[str, list[str]] = {}
        for spec in specs:
            state = self.read_state(backend, spec)
            sections.setdefault(spec.table, []).extend(restore_section(spec, state))
        payload = render_restore(sections)
        if not payload:
            return False
        self._restore(backend, payload)
        return True
