"""The agent writes its firewall into the iptables backend the node's other components use.

A node whose FORWARD DROP and kube-proxy rules live in the legacy backend (kind picks legacy or
nft per node at boot) drops forwarded pod traffic unless our ACCEPT is in the legacy backend too:
an ACCEPT in nft does not override a DROP in legacy, a packet must pass both.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netns_tests.lab_support import AgentCluster, peer_seen_by

KUBE_PROXY_LIKE = [
    ["-t", "nat", "-N", "KUBE-SERVICES"],
    ["-t", "nat", "-N", "KUBE-POSTROUTING"],
    ["-t", "nat", "-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals",
     "-j", "KUBE-SERVICES"],
    ["-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules",
     "-j", "KUBE-POSTROUTING"],
    ["-t", "nat", "-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000",
     "-j", "RETURN"],
    ["-t", "filter", "-N", "KUBE-FORWARD"],
    ["-t", "filter", "-A", "FORWARD", "-j", "KUBE-FORWARD"],
    ["-t", "filter", "-P", "FORWARD", "DROP"],
]  # fmt: skip


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    return agent_cluster("l2", nodes=2)


def legacy(cluster: AgentCluster, ns: str, *argv: str) -> str:
    done = cluster.in_ns(ns, "iptables-legacy", "-w", "5", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("kubelet_hint", [True, False], ids=["kubelet-hint", "rule-count"])
def test_legacy_forward_drop_node_still_forwards_pod_traffic(
    cluster: AgentCluster, kubelet_hint: bool
) -> None:
    for node in cluster.nodes:
        for rule in KUBE_PROXY_LIKE:
            legacy(cluster, node.ns, *rule)
        if kubelet_hint:  # kubelet >= 1.17 marks the backend it uses
            legacy(cluster, node.ns, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
    reports = cluster.run_once_everywhere()
    assert [report["firewall_backend"] for report in reports] == ["legacy", "legacy"]

    n1, n2 = cluster.nodes
    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip  # across nodes, through both FORWARD DROPs
    assert peer_seen_by(a.ns, a.ip, b.ns) == b.ip

    assert "-A FORWARD -j MINICNI-FWD" in legacy(cluster, n1.ns, "-S", "FORWARD")
    assert "-j MINICNI-POSTRTG" in legacy(cluster, n1.ns, "-t", "nat", "-S", "POSTROUTING")
    nft = cluster.in_ns(n1.ns, "iptables-nft-save").stdout
    assert "MINICNI" not in nft  # nothing of ours where nothing else is


def test_our_chains_follow_a_backend_switch(cluster: AgentCluster) -> None:
    """First an empty node (nft); then kube-proxy arrives in legacy: our chains move."""
    n1, _ = cluster.nodes
    assert cluster.run_once(n1)["firewall_backend"] == "nft"
    assert "MINICNI-FWD" in cluster.in_ns(n1.ns, "iptables-nft-save").stdout
    for rule in KUBE_PROXY_LIKE:
        legacy(cluster, n1.ns, *rule)
    legacy(cluster, n1.ns, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
    assert cluster.run_once(n1)["firewall_backend"] == "legacy"
    assert "MINICNI" not in cluster.in_ns(n1.ns, "iptables-nft-save").stdout
    assert "-A FORWARD -j MINICNI-FWD" in legacy(cluster, n1.ns, "-S", "FORWARD")
