"""Forward-accept and masquerade rules for pod traffic, in iptables chains of our own.

FORWARD: `MINICNI-FWD` accepts traffic from and to the cluster CIDR, so pods keep working where
the FORWARD policy is DROP (Docker sets it). This has to live in the iptables `filter` table
itself: an accept in a separate nftables table would not override another table's drop.
POSTROUTING: `MINICNI-POSTRTG` masquerades pod traffic only when it leaves the cluster: pod->pod
and pod->node (every node address is listed) keep the pod's source address.

Each resync reads back only our chains and the built-in chains that jump to them (`iptables -S
CHAIN`: never a dump of kube-proxy's tables, which hold tens of thousands of rules on a large
cluster) and, if they differ from what they should be, rewrites them in one `iptables-restore
--noflush` transaction (declaring a chain flushes it), adding the jump from the built-in chain only
when it is missing, so reapplying is idempotent.

The rules go into the iptables backend the node's other components use (`xtables`), detected on
every resync; when it changes, our chains are removed from the backend we left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from minicni.agent.xtables import Backend, Detector, Runner, run

log = logging.getLogger(__name__)

FORWARD_CHAIN = "MINICNI-FWD"
MASQUERADE_CHAIN = "MINICNI-POSTRTG"
MULTICAST = IPv4Network("224.0.0.0/4")


@dataclass(frozen=True)
class ChainSpec:
    table: str
    builtin: str
    chain: str
    rules: tuple[str, ...]

    @property
    def jump(self) -> str:
        return f"-A {self.builtin} -j {self.chain}"


@dataclass(frozen=True)
class ChainState:
    rules: tuple[str, ...]
    exists: bool
    jumps: int


def forward_spec(cluster_cidr: IPv4Network) -> ChainSpec:
    return ChainSpec(
        "filter",
        "FORWARD",
        FORWARD_CHAIN,
        (
            f"-A {FORWARD_CHAIN} -s {cluster_cidr} -j ACCEPT",
            f"-A {FORWARD_CHAIN} -d {cluster_cidr} -j ACCEPT",
        ),
    )


def masquerade_spec(cluster_cidr: IPv4Network, node_ips: Iterable[IPv4Address]) -> ChainSpec:
    chain = MASQUERADE_CHAIN
    rules = [
        f"-A {chain} -s {cluster_cidr} -d {cluster_cidr} -j RETURN",
        f"-A {chain} -d {MULTICAST} -j RETURN",
    ]
    rules += [f"-A {chain} -s {cluster_cidr} -d {ip}/32 -j RETURN" for ip in sorted(set(node_ips))]
    rules.append(f"-A {chain} -s {cluster_cidr} -j MASQUERADE")
    return ChainSpec("nat", "POSTROUTING", chain, tuple(rules))


def parse_chain(save_output: str, spec: ChainSpec) -> ChainState:
    """Our chain's rules and the number of jumps to it, from `iptables-save -t <table>` or from
    `iptables -S <our chain>` and `iptables -S <built-in chain>` (the same rule syntax)."""
    rules: list[str] = []
    exists = False
    jumps = 0
    own_prefix = f"-A {spec.chain} "
    for line in save_output.splitlines():
        line = line.strip()
        if line.startswith(f":{spec.chain} ") or line == f"-N {spec.chain}":
            exists = True
        elif line.startswith(own_prefix):
            rules.append(line)
        elif line == spec.jump:
            jumps += 1
    return ChainState(tuple(rules), exists, jumps)


def restore_section(spec: ChainSpec, state: ChainState) -> list[str]:
    """iptables-restore lines that bring one chain (and its jump) from `state` to `spec`;
    empty when nothing needs to change."""
    if state.exists and state.rules == spec.rules and state.jumps == 1:
        return []
    lines = [f":{spec.chain} - [0:0]", *spec.rules]
    if state.jumps == 0:
        lines.append(f"-I {spec.builtin} 1 -j {spec.chain}")
    lines += [f"-D {spec.builtin} -j {spec.chain}"] * max(0, state.jumps - 1)
    return lines


def render_restore(sections: dict[str, list[str]]) -> str:
    text = []
    for table, lines in sections.items():
        if lines:
            text += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(text) + "\n" if text else ""


def removal_section(spec: ChainSpec, state: ChainState) -> list[str]:
    """iptables-restore lines that remove our chain and its jumps (from a backend we left)."""
    if not state.exists:
        return []
    lines = [f":{spec.chain} - [0:0]"]  # declaring it flushes it
    lines += [f"-D {spec.builtin} -j {spec.chain}"] * state.jumps
    return [*lines, f"-X {spec.chain}"]


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
