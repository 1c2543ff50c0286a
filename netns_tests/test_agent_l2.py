"""minicni-agent on three node namespaces sharing one L2 segment (host-gw through `auto`).

Each node runs the agent from its documented flags with one shared nodes file; pods are added
through the plugin the agent installed. Assertions read the kernel, the files and the packets.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from minicni.agent.model.plan import VXLAN_DEVICE
from netns_tests.lab_support import AgentCluster, health_get, peer_seen_by, wait_for


@pytest.fixture
def cluster(agent_cluster: Callable[[str], AgentCluster]) -> AgentCluster:
    return agent_cluster("l2")


def our_chains(cluster: AgentCluster, ns: str) -> list[str]:
    saved = cluster.in_ns(ns, "iptables-save").stdout
    return [line for line in saved.splitlines() if "MINICNI" in line]


def test_once_writes_conflist_installs_plugin_and_routes(cluster: AgentCluster) -> None:
    reports = cluster.run_once_everywhere()
    assert all(report["ok"] for report in reports)
    n1, n2, n3 = cluster.nodes

    conflist = json.loads(n1.conflist.read_text())
    assert conflist["cniVersion"] == "1.0.0"  # what libcni 1.1 runtimes accept
    assert conflist["cniVersions"][-1] == "1.1.0"  # what libcni >= 1.2 picks
    plugin = conflist["plugins"][0]
    assert (plugin["type"], plugin["subnet"], plugin["dataDir"]) == (
        "minicni",
        "10.244.1.0/24",
        str(n1.data_dir),
    )
    assert plugin["mtu"] == 1450  # underlay 1500 less the VXLAN header (auto may tunnel)
    assert (n1.bin_dir / "minicni").stat().st_mode & 0o111

    assert cluster.routes(n1) == {
        "10.244.2.0/24": {"gateway": n2.ip, "dev": "eth0", "onlink": False},
        "10.244.3.0/24": {"gateway": n3.ip, "dev": "eth0", "onlink": False},
    }
    assert set(cluster.routes(n3)) == {"10.244.1.0/24", "10.244.2.0/24"}
    assert "-A FORWARD -j MINICNI-FWD" in our_chains(cluster, n1.ns)
    assert "-A POSTROUTING -j MINICNI-POSTRTG" in our_chains(cluster, n1.ns)


def test_restart_changes_nothing(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1 = cluster.nodes[0]
    routes, chains = cluster.routes(n1), our_chains(cluster, n1.ns)
    conflist_inode = n1.conflist.stat().st_ino

    again = cluster.run_once(n1)
    assert again["ok"]
    changes = ("routes_added", "routes_replaced", "routes_deleted", "vxlan_changes")
    assert [again[key] for key in changes] == [0, 0, 0, 0]
    assert not again["conflist_written"] and not again["firewall_rewritten"]
    assert not again["plugin_installed"]
    assert cluster.routes(n1) == routes
    assert our_chains(cluster, n1.ns) == chains
    assert n1.conflist.stat().st_ino == conflist_inode


def test_routes_of_others_are_left_alone(cluster: AgentCluster) -> None:
    n1 = cluster.nodes[0]
    # A foreign route to a pod CIDR the agent will not plan, and one it will (a conflict).
    cluster.in_ns(n1.ns, "ip", "route", "add", "10.244.9.0/24", "via", "192.168.50.99")
    cluster.in_ns(n1.ns, "ip", "route", "add", "10.244.3.0/24", "via", "192.168.50.98")
    code, report, _ = cluster.once(n1)
    assert code == 1  # the conflict is reported as an error...
    assert any("10.244.3.0/24" in error for error in report["errors"])
    shown = cluster.in_ns(n1.ns, "ip", "route", "show", "root", "10.244.0.0/16").stdout
    assert "10.244.9.0/24 via 192.168.50.99" in shown  # ...and nothing foreign is touched
    assert "10.244.3.0/24 via 192.168.50.98" in shown
    assert "10.244.2.0/24" in cluster.routes(n1)


def test_pods_across_nodes_keep_their_address(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    c = cluster.add_pod(n3, "pc")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip  # pod -> pod, other node
    assert peer_seen_by(a.ns, a.ip, c.ns) == c.ip
    assert peer_seen_by(n2.ns, n2.ip, a.ns) == a.ip  # pod -> other node: no masquerade
    assert peer_seen_by(b.ns, b.ip, n1.ns) == n1.ip  # node -> pod on another node


def test_forward_policy_drop_still_forwards_pod_traffic(cluster: AgentCluster) -> None:
    for node in cluster.nodes:
        cluster.in_ns(node.ns, "iptables", "-P", "FORWARD", "DROP")
    n1, n2, _ = cluster.nodes
    cluster.run_once_everywhere("--firewall", "none")
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    with pytest.raises(OSError):  # the DROP policy bites without our rules
        peer_seen_by(b.ns, b.ip, a.ns)

    cluster.run_once_everywhere()
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip
    policy = cluster.in_ns(n1.ns, "iptables", "-S", "FORWARD").stdout
    assert "-P FORWARD DROP" in policy  # we accept our traffic, we do not change the policy


def test_only_traffic_leaving_the_cluster_is_masqueraded(cluster: AgentCluster) -> None:
    outsider = cluster.add_outsider()
    cluster.run_once_everywhere()
    n1, n2, _ = cluster.nodes
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    assert peer_seen_by(outsider, "192.168.50.200", a.ns) == n1.ip  # leaves the cluster: NAT
    assert peer_seen_by(n2.ns, n2.ip, a.ns) == a.ip  # pod -> node: kept
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip  # pod -> pod: kept


def test_bad_entries_are_skipped_and_reported(cluster: AgentCluster) -> None:
    n1, n2, _ = cluster.nodes
    cluster.write_nodes(
        [
            n1.entry(),
            n2.entry(),
            {"name": "outside", "internalIP": "192.168.50.40", "podCIDR": "10.9.0.0/24"},
            {"name": "noaddr", "podCIDR": "10.244.50.0/24"},
        ]
    )
    report = cluster.run_once(n1)
    assert report["ok"]
    assert len(report["problems"]) == 2
    assert set(cluster.routes(n1)) == {"10.244.2.0/24"}


def test_background_agents_follow_the_nodes_file(cluster: AgentCluster) -> None:
    n1, n2, _ = cluster.nodes
    for node in cluster.nodes:
        cluster.start_agent(node)
    wait_for(lambda: len(cluster.routes(n1)) == 2 and len(cluster.routes(n2)) == 2, what="routes")

    cluster.write_nodes([n1.entry(), n2.entry()])  # node3 leaves
    wait_for(lambda: "10.244.3.0/24" not in cluster.routes(n1), what="node3's route on node1")
    wait_for(lambda: "10.244.3.0/24" not in cluster.routes(n2), what="node3's route on node2")

    moved = {**n2.entry(), "podCIDR": "10.244.22.0/24"}  # node2's podCIDR changes
    cluster.write_nodes([n1.entry(), moved])
    wait_for(lambda: set(cluster.routes(n1)) == {"10.244.22.0/24"}, what="the moved route")
    assert cluster.routes(n1)["10.244.22.0/24"]["gateway"] == n2.ip
    wait_for(
        lambda: '"10.244.22.0/24"' in n2.conflist.read_text(), what="node2's conflist to follow"
    )

    cluster.write_nodes("{ this is not json")  # garbage keeps the last good node set
    cluster.write_nodes('{"nodes": [}')
    wait_for(lambda: b"node set" in (n1.home / "agent.log").read_bytes(), what="the error logged")
    assert set(cluster.routes(n1)) == {"10.244.22.0/24"}

    assert cluster.stop_agent(n1) == 0
    assert set(cluster.routes(n1)) == {"10.244.22.0/24"}  # exiting leaves routes in place


def test_health_endpoints(cluster: AgentCluster) -> None:
    n1 = cluster.nodes[0]
    cluster.start_agent(n1, "--health-addr", "127.0.0.1:28109")

    def get(url: str) -> tuple[int, str]:
        return health_get(n1, url, 28109)

    def ready() -> bool:
        try:
            return get("/readyz")[0] == 200
        except OSError:
            return False

    wait_for(ready, what="/readyz")
    assert get("/healthz") == (200, "ok\n")
    status, metrics = get("/metrics")
    assert status == 200
    assert 'minicni_agent_routes{backend="host-gw"} 2' in metrics
    assert 'minicni_agent_reconciles_total{result="ok"}' in metrics
    assert "minicni_agent_ready 1" in metrics


def test_switching_backend_replaces_routes_and_clears_the_tunnel(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere("--backend", "vxlan")
    n1, n2, _ = cluster.nodes
    assert cluster.routes(n1)["10.244.2.0/24"]["dev"] == VXLAN_DEVICE
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip  # VXLAN on one segment works too

    report = cluster.run_once(n1)  # back to auto: every peer is on our subnet
    assert report["routes_replaced"] == 2
    assert cluster.routes(n1)["10.244.2.0/24"] == {"gateway": n2.ip, "dev": "eth0", "onlink": False}
    fdb = cluster.in_ns(n1.ns, "bridge", "fdb", "show", "dev", VXLAN_DEVICE).stdout
    assert n2.ip not in fdb  # peers' tunnel entries are gone with their tunnel routes
    cluster.run_once(n2)
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip


def test_bundle_install_needs_no_host_python(cluster: AgentCluster) -> None:
    """The DaemonSet's mode: the plugin and its runtime under --plugin-dir, a launcher in the
    CNI bin dir; a pod is then added through that launcher."""
    n1, n2, _ = cluster.nodes
    runtime = n1.home / "opt-minicni"
    report = cluster.run_once(n1, "--plugin-install", "bundle", "--plugin-dir", str(runtime))
    assert report["plugin_installed"]
    launcher = (n1.bin_dir / "minicni").read_text()
    assert str(runtime) in launcher
    assert not cluster.run_once(n1, "--plugin-install", "bundle", "--plugin-dir", str(runtime))[
        "plugin_installed"
    ]
    cluster.run_once(n2)
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip


def test_a_restart_on_a_broken_file_plans_from_the_saved_node_set(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1 = cluster.nodes[0]
    routes = cluster.routes(n1)
    cluster.write_nodes('{"nodes": [')
    code, report, _ = cluster.once(n1)
    assert code == 1
    assert report["errors"][0].startswith("source:")
    assert (report["nodes"], report["routes_deleted"]) == (3, 0)
    assert cluster.routes(n1) == routes
