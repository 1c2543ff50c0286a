"""minicni-agent on three nodes that sit on routed subnets (a router namespace between them), so
host-gw cannot work and `auto` must tunnel: VXLAN device, FDB, neighbour and onlink routes, and
the policy rule and table that keep pod <-> other-node traffic symmetric under rp_filter=1."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from minicni.agent.model.plan import POLICY_RULE_PRIORITY, POLICY_TABLE, VXLAN_DEVICE
from netns_tests.lab_support import AgentCluster, ClusterNode, peer_seen_by


@pytest.fixture
def cluster(agent_cluster: Callable[[str], AgentCluster]) -> AgentCluster:
    return agent_cluster("routed")


def fdb(cluster: AgentCluster, ns: str) -> str:
    return cluster.in_ns(ns, "bridge", "fdb", "show", "dev", VXLAN_DEVICE).stdout


def neighbours(cluster: AgentCluster, ns: str) -> str:
    return cluster.in_ns(ns, "ip", "neigh", "show", "dev", VXLAN_DEVICE).stdout


def our_rules(cluster: AgentCluster, node: ClusterNode) -> list[dict[str, Any]]:
    """Rules that look up our table, whoever made them, as `ip -j rule` shows them."""
    rules = json.loads(cluster.in_ns(node.ns, "ip", "-j", "rule", "show").stdout)
    return [rule for rule in rules if rule.get("table") == str(POLICY_TABLE)]


def table_routes(cluster: AgentCluster, node: ClusterNode) -> dict[str, str]:
    """Our table on `node`: destination -> "via <gateway> dev <device> [onlink] proto <n>"."""
    shown = cluster.in_ns(node.ns, "ip", "-j", "route", "show", "table", str(POLICY_TABLE))
    found = {}
    for route in json.loads(shown.stdout or "[]"):
        onlink = " onlink" if "onlink" in route.get("flags", []) else ""
        proto = route.get("protocol", "boot")  # `ip -j` leaves out the default
        found[route["dst"]] = (
            f"via {route.get('gateway')} dev {route.get('dev')}{onlink} proto {proto}"
        )
    return found


def rp_filter(cluster: AgentCluster, node: ClusterNode, interface: str) -> int:
    path = f"/proc/sys/net/ipv4/conf/{interface}/rp_filter"
    return int(cluster.in_ns(node.ns, "cat", path).stdout)


def test_auto_tunnels_to_routed_peers(cluster: AgentCluster) -> None:
    reports = cluster.run_once_everywhere()
    assert all(report["vxlan_peers"] == 2 for report in reports)
    n1 = cluster.nodes[0]
    assert cluster.routes(n1) == {
        "10.244.2.0/24": {"gateway": "10.244.2.0", "dev": VXLAN_DEVICE, "onlink": True},
        "10.244.3.0/24": {"gateway": "10.244.3.0", "dev": VXLAN_DEVICE, "onlink": True},
    }
    link = cluster.in_ns(n1.ns, "ip", "-d", "link", "show", VXLAN_DEVICE).stdout
    assert "vxlan id 1 local 192.168.61.2 dev eth0" in link
    assert "dstport 8472 nolearning" in link
    assert "mtu 1450" in link
    assert "link/ether 0e:6d:c0:a8:3d:02" in link  # derived from 192.168.61.2
    entries = fdb(cluster, n1.ns)
    assert "0e:6d:c0:a8:3e:02 dst 192.168.62.2 self permanent" in entries
    assert "0e:6d:c0:a8:3f:02 dst 192.168.63.2 self permanent" in entries
    assert "10.244.2.0 lladdr 0e:6d:c0:a8:3e:02 PERMANENT" in neighbours(cluster, n1.ns)
    assert '"mtu": 1450' in n1.conflist.read_text()


def test_host_gw_cannot_reach_routed_peers_and_says_so(cluster: AgentCluster) -> None:
    code, report, _ = cluster.once(cluster.nodes[0], "--backend", "host-gw")
    assert code == 1
    assert len([e for e in report["errors"] if e.startswith("routes:")]) == 2
    assert cluster.routes(cluster.nodes[0]) == {}


def test_pods_across_routed_nodes_keep_their_address(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    c = cluster.add_pod(n3, "pc")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip
    assert peer_seen_by(a.ns, a.ip, c.ns) == c.ip
    assert peer_seen_by(b.ns, b.ip, n1.ns) == n1.ip  # node -> pod through the tunnel
    assert peer_seen_by(n2.ns, n2.ip, a.ns) == a.ip  # pod -> other node: no masquerade


def test_a_node_leaving_takes_its_tunnel_entries(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    cluster.write_nodes([n1.entry(), n2.entry()])
    report = cluster.run_once(n1)
    assert report["routes_deleted"] == 1
    assert set(cluster.routes(n1)) == {"10.244.2.0/24"}
    assert n3.ip not in fdb(cluster, n1.ns)
    assert "10.244.3.0" not in neighbours(cluster, n1.ns)
    assert n2.ip in fdb(cluster, n1.ns)


def test_restart_changes_nothing(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1 = cluster.nodes[0]

    def state() -> tuple[Any, ...]:
        return (
            cluster.routes(n1),
            fdb(cluster, n1.ns),
            neighbours(cluster, n1.ns),
            table_routes(cluster, n1),
            our_rules(cluster, n1),
        )

    before = state()
    again = cluster.run_once(n1)
    assert (again["routes_added"], again["routes_replaced"], again["routes_deleted"]) == (0, 0, 0)
    assert again["vxlan_changes"] == 0
    assert again["peer_node_route_changes"] == again["policy_rule_changes"] == 0
    assert again["peer_node_routes"] == 2 and again["policy_rule"]
    assert state() == before


def test_pods_and_other_nodes_keep_their_address_under_strict_rp_filter(
    cluster: AgentCluster,
) -> None:
    """pod -> other node and other node -> pod, both ways, with rp_filter=1 everywhere and
    nothing loosened by the agent."""
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    a = cluster.add_pod(n1, "pa")
    c = cluster.add_pod(n3, "pc")
    for node in cluster.nodes:
        for interface in ("all", "eth0", VXLAN_DEVICE):
            assert rp_filter(cluster, node, interface) == 1, (node.name, interface)
    assert peer_seen_by(n2.ns, n2.ip, a.ns) == a.ip  # pod -> other node
    assert peer_seen_by(n3.ns, n3.ip, a.ns) == a.ip
    assert peer_seen_by(a.ns, a.ip, n2.ns) == n2.ip  # other node -> pod
    assert peer_seen_by(a.ns, a.ip, n3.ns) == n3.ip
    assert peer_seen_by(n1.ns, n1.ip, c.ns) == c.ip
    assert peer_seen_by(c.ns, c.ip, n1.ns) == n1.ip
    assert peer_seen_by(n2.ns, n2.ip, n1.ns) == n1.ip  # node -> node: untouched


def test_policy_rule_and_table_follow_the_vxlan_peers(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    rule = {
        "priority": POLICY_RULE_PRIORITY,
        "src": "10.244.1.0",
        "srclen": 24,
        "table": str(POLICY_TABLE),
        "protocol": "109",
    }
    assert our_rules(cluster, n1) == [rule]
    assert table_routes(cluster, n1) == {
        n2.ip: f"via 10.244.2.0 dev {VXLAN_DEVICE} onlink proto 109",
        n3.ip: f"via 10.244.3.0 dev {VXLAN_DEVICE} onlink proto 109",
    }
    # the node's own traffic (source: its underlay address) keeps the main table's path
    assert "dev eth0" in cluster.in_ns(n1.ns, "ip", "route", "get", n2.ip).stdout

    cluster.write_nodes([n1.entry(), n2.entry()])  # n3 leaves
    report = cluster.run_once(n1)
    assert (report["peer_node_routes"], report["peer_node_route_changes"]) == (1, 1)
    assert set(table_routes(cluster, n1)) == {n2.ip}
    assert our_rules(cluster, n1) == [rule]

    cluster.write_nodes([n1.entry()])  # no VXLAN peer left: the rule goes with the last route
    report = cluster.run_once(n1)
    assert (report["policy_rule"], report["policy_rule_changes"]) == (False, 1)
    assert table_routes(cluster, n1) == {}
    assert our_rules(cluster, n1) == []

    cluster.write_nodes([n1.entry(), n3.entry()])  # a peer (re)joins
    cluster.run_once(n1)
    assert set(table_routes(cluster, n1)) == {n3.ip}
    assert our_rules(cluster, n1) == [rule]


def test_own_pod_cidr_change_moves_the_rule(cluster: AgentCluster) -> None:
    cluster.run_once_everywhere()
    n1, n2, _ = cluster.nodes
    moved = {**n1.entry(), "podCIDR": "10.244.11.0/24"}
    cluster.write_nodes([moved, n2.entry()])
    report = cluster.run_once(n1)
    assert report["policy_rule_changes"] == 2  # added the new one, then deleted the old one
    assert [(r["src"], r["srclen"]) for r in our_rules(cluster, n1)] == [("10.244.11.0", 24)]


def test_rules_and_routes_in_our_table_that_are_not_ours_are_left_alone(
    cluster: AgentCluster,
) -> None:
    n1 = cluster.nodes[0]
    table = str(POLICY_TABLE)
    cluster.in_ns(
        n1.ns, "ip", "rule", "add", "pref", "100", "from", "10.99.0.0/16", "lookup", table
    )
    cluster.in_ns(n1.ns, "ip", "route", "add", "10.99.1.1/32", "dev", "lo", "table", table)
    cluster.run_once_everywhere()
    cluster.write_nodes([n1.entry()])
    cluster.run_once(n1)
    assert [r.get("src") for r in our_rules(cluster, n1)] == ["10.99.0.0"]
    assert set(table_routes(cluster, n1)) == {"10.99.1.1"}
