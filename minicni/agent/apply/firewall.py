"""Apply our iptables chains: read them back with iptables-save and, if they differ from what they
should be, rewrite them in one `iptables-restore --noflush` transaction (declaring a chain flushes
it), adding the jump from the built-in chain only when it is missing, so reapplying is idempotent.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from minicni.agent.model.firewall import (
    forward_spec,
    masquerade_spec,
    parse_chain,
    render_restore,
    restore_section,
)


class IptablesFirewall:
    def __init__(self, save: str = "iptables-save", restore: str = "iptables-restore") -> None:
        self._save = save
        self._restore = restore

    def _saved(self, table: str) -> str:
        return subprocess.run(
            [self._save, "-t", table], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def apply(self, cluster_cidr: IPv4Network, node_ips: Iterable[IPv4Address]) -> bool:
        """Make our chains right; returns True if anything had to be rewritten."""
        specs = [forward_spec(cluster_cidr), masquerade_spec(cluster_cidr, node_ips)]
        sections: dict[str, list[str]] = {}
        for spec in specs:
            state = parse_chain(self._saved(spec.table), spec)
            sections.setdefault(spec.table, []).extend(restore_section(spec, state))
        payload = render_restore(sections)
        if not payload:
            return False
        completed = subprocess.run(
            [self._restore, "--noflush", "--wait", "5"],
            input=payload,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{self._restore} failed: {completed.stderr.strip()}")
        return True
