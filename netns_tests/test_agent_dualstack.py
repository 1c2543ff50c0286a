"""minicni-agent on dual-stack and IPv6 clusters of node namespaces: routes per family for host-gw
and VXLAN (also IPv6 pods over an IPv4-only underlay), the policy rules per family, the firewall
in ip6tables beside iptables, and packets that keep their source inside the cluster and are
masqueraded, per family, when they leave it."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from minicni.agent.model.plan import POLICY_TABLE, VXLAN_DEVICE, VXLAN_DEVICE6
from minicni.defaults import ROUTE_PROTOCOL
from netns_tests.lab_support import AgentCluster, ClusterNode, peer_seen_by

pytestmark = pytest.mark.root
Build = Callable[..., AgentCluster]


def our_routes(cluster: AgentCluster, node: ClusterNode, family: str) -> dict[str, str]:
    """Our routes of `family` ("-4", "-6") in the main table: dst -> "via <gw> dev <dev>"."""
    shown = cluster.in_ns(
        node.ns, "ip", family, "-j", "route", "show", "proto", str(ROUTE_PROTOCOL)
    )
    assert shown.returncode == 0, shown.stderr
    found = {}
    for route in json.loads(shown.stdout or "[]"):
        onlink = " onlink" if "onlink" in route.get("flags", []) else ""
        found[route["dst"]] = f"via {route['gateway']} dev {route['dev']}{onlink}"
    return found


def rules(cluster: AgentCluster, node: ClusterNode, family: str) -> list[str]:
    shown = cluster.in_ns(node.ns, "ip", family, "-j", "rule", "show")
    return [
        f"from {rule['src']}/{rule['srclen']} lookup {rule['table']}"
        for rule in json.loads(shown.stdout)
        if rule.get("table") == str(POLICY_TABLE)
    ]


def table(cluster: AgentCluster, node: ClusterNode, family: str) -> dict[str, str]:
    shown = cluster.in_ns(node.ns, "ip", family, "-j", "route", "show", "table", str(POLICY_TABLE))
    return {
        route["dst"]: f"via {route['gateway']} dev {route['dev']}"
        for route in json.loads(shown.stdout or "[]")
    }


def saved(cluster: AgentCluster, node: ClusterNode, tool: str) -> list[str]:
    return [
        line
        for line in cluster.in_ns(node.ns, tool).stdout.splitlines()
        if "MINICNI" in line and not line.startswith(":")
    ]


def test_dual_stack_host_gw_routes_each_family_via_the_peers_address_of_it(build: Build) -> None:
    cluster = build("l2", family="dual")
    reports = cluster.run_once_everywhere()
    assert all(report["ok"] and report["vxlan_peers"] == 0 for report in reports)
    n1, n2, n3 = cluster.nodes
    assert our_routes(cluster, n1, "-4") == {
        "10.244.2.0/24": f"via {n2.ip} dev eth0",
        "10.244.3.0/24": f"via {n3.ip} dev eth0",
    }
    assert our_routes(cluster, n1, "-6") == {
        "fd00:10:244:2::/64": f"via {n2.ip6} dev eth0",
        "fd00:10:244:3::/64": f"via {n3.ip6} dev eth0",
    }
    plugin = json.loads(n1.conflist.read_text())["plugins"][0]
    assert plugin["subnet"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert plugin["mtu"] == 1430  # auto may tunnel, and may do so over IPv6

    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert len(a.ips) == len(b.ips) == 2
    for family in (0, 1):
        assert peer_seen_by(b.ns, b.ips[family], a.ns) == a.ips[family]  # pod -> pod
    assert peer_seen_by(n2.ns, n2.ip6, a.ns) == a.ip6  # pod -> other node: no masquerade
    assert peer_seen_by(b.ns, b.ip6, n1.ns) == n1.ip6  # node -> pod on another node

    again = cluster.run_once(n1)
    changes = ("routes_added", "routes_replaced", "routes_deleted", "vxlan_changes")
    assert [again[key] for key in changes] == [0, 0, 0, 0]
    assert not again["firewall_rewritten"] and not again["conflist_written"]


def test_dual_stack_vxlan_has_a_device_and_a_rule_per_underlay_family(build: Build) -> None:
    cluster = build("routed", family="dual")
    reports = cluster.run_once_everywhere()
    assert all(report["ok"] for report in reports)
    assert reports[0]["vxlan_peers"] == 4  # two peers, one tunnel per family each
    n1, n2, _ = cluster.nodes
    assert our_routes(cluster, n1, "-4")["10.244.2.0/24"] == (
        f"via 10.244.2.0 dev {VXLAN_DEVICE} onlink"
    )
    assert our_routes(cluster, n1, "-6")["fd00:10:244:2::/64"] == (
        f"via fd00:10:244:2:: dev {VXLAN_DEVICE6} onlink"
    )
    link6 = cluster.in_ns(n1.ns, "ip", "-d", "link", "show", VXLAN_DEVICE6).stdout
    assert f"vxlan id 1 local {n1.ip6} dev eth0" in link6 and "mtu 1430" in link6
    vteps = cluster.in_ns(n1.ns, "ip", "-6", "addr", "show", "dev", VXLAN_DEVICE6).stdout
    assert "inet6 fd00:10:244:1::/128 scope global nodad" in vteps
    fdb6 = cluster.in_ns(n1.ns, "bridge", "fdb", "show", "dev", VXLAN_DEVICE6).stdout
    assert f"dst {n2.ip6} self permanent" in fdb6
    neighbours6 = cluster.in_ns(n1.ns, "ip", "-6", "neigh", "show", "dev", VXLAN_DEVICE6).stdout
    assert "fd00:10:244:2:: lladdr" in neighbours6 and "PERMANENT" in neighbours6
    assert rules(cluster, n1, "-4") == [f"from 10.244.1.0/24 lookup {POLICY_TABLE}"]
    assert rules(cluster, n1, "-6") == [f"from fd00:10:244:1::/64 lookup {POLICY_TABLE}"]
    assert table(cluster, n1, "-6")[n2.ip6] == f"via fd00:10:244:2:: dev {VXLAN_DEVICE6}"
    assert '"mtu": 1430' in n1.conflist.read_text()
    again = cluster.run_once(n1)  # a resync finds everything in place, IPv6's too
    changes = ("routes_added", "routes_deleted", "vxlan_changes", "policy_rule_changes")
    assert [again[key] for key in changes] == [0, 0, 0, 0] and again["policy_rules"] == 2

    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip6, a.ns) == a.ip6
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip
    assert peer_seen_by(n2.ns, n2.ip6, a.ns) == a.ip6  # through the tunnel, symmetric
    assert peer_seen_by(b.ns, b.ip6, n1.ns) == n1.ip6

    cluster.write_nodes([n1.entry(), n2.entry()])  # n3 leaves
    left = cluster.run_once(n1)
    assert left["routes_deleted"] == 2 and left["ok"]
    assert set(our_routes(cluster, n1, "-6")) == {"fd00:10:244:2::/64"}


def test_ipv6_pods_over_an_ipv4_underlay_ride_the_ipv4_tunnel(build: Build) -> None:
    cluster = build("l2", family="dual", underlay_family="ipv4")
    reports = cluster.run_once_everywhere()
    assert all(report["ok"] for report in reports)
    n1, n2, _ = cluster.nodes
    assert not n1.ip6
    # IPv4 on the segment: host-gw; IPv6 has no underlay: VXLAN over IPv4
    assert our_routes(cluster, n1, "-4")["10.244.2.0/24"] == f"via {n2.ip} dev eth0"
    assert our_routes(cluster, n1, "-6")["fd00:10:244:2::/64"] == (
        f"via fd00:10:244:2:: dev {VXLAN_DEVICE} onlink"
    )
    links = cluster.in_ns(n1.ns, "ip", "-o", "link", "show").stdout
    assert VXLAN_DEVICE in links and VXLAN_DEVICE6 not in links
    neighbours = cluster.in_ns(n1.ns, "ip", "-6", "neigh", "show", "dev", VXLAN_DEVICE).stdout
    assert "fd00:10:244:2:: lladdr 0e:6d:c0:a8:32:0c PERMANENT" in neighbours  # n2's IPv4 MAC
    fdb = cluster.in_ns(n1.ns, "bridge", "fdb", "show", "dev", VXLAN_DEVICE).stdout
    assert f"0e:6d:c0:a8:32:0c dst {n2.ip} self permanent" in fdb
    assert rules(cluster, n1, "-6") == []  # no IPv6 node address to keep symmetric

    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip6, a.ns) == a.ip6
    assert peer_seen_by(a.ns, a.ip6, b.ns) == b.ip6
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip


def test_an_ipv6_only_cluster_has_ipv6_routes_rules_and_firewall_only(build: Build) -> None:
    cluster = build("routed", family="ipv6")
    reports = cluster.run_once_everywhere()
    assert all(report["ok"] for report in reports)
    n1, n2, _ = cluster.nodes
    assert our_routes(cluster, n1, "-4") == {}
    assert set(our_routes(cluster, n1, "-6")) == {"fd00:10:244:2::/64", "fd00:10:244:3::/64"}
    assert rules(cluster, n1, "-4") == []
    assert saved(cluster, n1, "iptables-save") == []
    assert "-A MINICNI-FWD -s fd00:10:244::/56 -j ACCEPT" in saved(cluster, n1, "ip6tables-save")
    assert json.loads(n1.conflist.read_text())["plugins"][0]["subnet"] == "fd00:10:244:1::/64"
    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert a.ips == (a.ip6,)
    assert peer_seen_by(b.ns, b.ip6, a.ns) == a.ip6


def test_the_firewall_is_in_both_families_and_forwards_under_a_drop_policy(build: Build) -> None:
    cluster = build("l2", family="dual")
    for node in cluster.nodes:
        for tool in ("iptables", "ip6tables"):
            cluster.in_ns(node.ns, tool, "-P", "FORWARD", "DROP")
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    six = saved(cluster, n1, "ip6tables-save")
    assert "-A FORWARD -j MINICNI-FWD" in six and "-A POSTROUTING -j MINICNI-POSTRTG" in six
    assert "-A MINICNI-POSTRTG -s fd00:10:244::/56 -d fd00:10:244::/56 -j RETURN" in six
    for node in (n1, n2, n3):
        assert f"-A MINICNI-POSTRTG -s fd00:10:244::/56 -d {node.ip6}/128 -j RETURN" in six
    assert "-A MINICNI-POSTRTG -s fd00:10:244::/56 -j MASQUERADE" in six
    four = saved(cluster, n1, "iptables-save")
    assert not any("fd00" in line for line in four) and any("10.244.0.0/16" in x for x in four)
    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert peer_seen_by(b.ns, b.ip6, a.ns) == a.ip6  # accepted, though FORWARD drops


def test_only_traffic_leaving_the_cluster_is_masqueraded_in_each_family(build: Build) -> None:
    cluster = build("l2", family="dual")
    outsider = cluster.lab.add_outsider()
    cluster.run_once_everywhere()
    n1, n2, _ = cluster.nodes
    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
    assert peer_seen_by(outsider.netns, outsider.ip6, a.ns) == n1.ip6  # leaves: NAT
    assert peer_seen_by(outsider.netns, outsider.ip, a.ns) == n1.ip
    assert peer_seen_by(n2.ns, n2.ip6, a.ns) == a.ip6  # pod -> node: kept
    assert peer_seen_by(b.ns, b.ip6, a.ns) == a.ip6  # pod -> pod: kept


@pytest.fixture
def build(agent_cluster: Callable[..., AgentCluster]) -> Build:
    return agent_cluster
