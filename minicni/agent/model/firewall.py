"""Forward-accept and masquerade rules for pod traffic, in iptables chains of our own: what the
chains must hold, read back from iptables-save, and the iptables-restore input that fixes them.

FORWARD: `MINICNI-FWD` accepts traffic from and to the cluster CIDR, so pods keep working where
the FORWARD policy is DROP (Docker sets it). This has to live in the iptables `filter` table
itself: an accept in a separate nftables table would not override another table's drop.
POSTROUTING: `MINICNI-POSTRTG` masquerades pod traffic only when it leaves the cluster: pod->pod
and pod->node (every node address is listed) keep the pod's source address.
A dual-stack cluster has both chains in iptables for IPv4 and in ip6tables for IPv6, each with
the cluster CIDR and the node addresses of its family.

Pure: `minicni.agent.apply.firewall` reads our chains back (`iptables -S`) and runs
iptables-restore with what this module computes, in the backend `minicni.agent.apply.xtables`
finds the node using.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

FORWARD_CHAIN = "MINICNI-FWD"
MASQUERADE_CHAIN = "MINICNI-POSTRTG"
MULTICAST = IPv4Network("224.0.0.0/4")
MULTICAST6 = IPv6Network("ff00::/8")


@dataclass(frozen=True)
class ChainSpec:
    table: str
    builtin: str
    chain: str
    rules: tuple[str, ...]
    version: int = 4
    """The IP version: iptables (4) or ip6tables (6) holds the chain."""

    @property
    def jump(self) -> str:
        return f"-A {self.builtin} -j {self.chain}"


@dataclass(frozen=True)
class ChainState:
    rules: tuple[str, ...]
    exists: bool
    jumps: int


def forward_spec(cluster_cidr: IPv4Network | IPv6Network) -> ChainSpec:
    return ChainSpec(
        "filter",
        "FORWARD",
        FORWARD_CHAIN,
        (
            f"-A {FORWARD_CHAIN} -s {cluster_cidr} -j ACCEPT",
            f"-A {FORWARD_CHAIN} -d {cluster_cidr} -j ACCEPT",
        ),
        cluster_cidr.version,
    )


def masquerade_spec(
    cluster_cidr: IPv4Network | IPv6Network, node_ips: Iterable[IPv4Address | IPv6Address]
) -> ChainSpec:
    """Pod traffic to anywhere but the cluster CIDR, multicast and the nodes (addresses of the
    cluster CIDR's family; others are ignored) leaves with the node's address."""
    chain, version = MASQUERADE_CHAIN, cluster_cidr.version
    host = 32 if version == 4 else 128
    multicast = MULTICAST if version == 4 else MULTICAST6
    rules = [
        f"-A {chain} -s {cluster_cidr} -d {cluster_cidr} -j RETURN",
        f"-A {chain} -d {multicast} -j RETURN",
    ]
    own_family = sorted({int(ip): ip for ip in node_ips if ip.version == version}.items())
    rules += [f"-A {chain} -s {cluster_cidr} -d {ip}/{host} -j RETURN" for _, ip in own_family]
    rules.append(f"-A {chain} -s {cluster_cidr} -j MASQUERADE")
    return ChainSpec("nat", "POSTROUTING", chain, tuple(rules), version)


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
