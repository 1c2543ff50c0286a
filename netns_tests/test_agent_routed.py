"""minicni-agent on three nodes that sit on routed subnets (a router namespace between them), so
host-gw cannot work and `auto` must tunnel: VXLAN device, FDB, neighbour and onlink routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minicni.agent.plan import VXLAN_DEVICE
from netns_tests.agent_lab import AgentLab, lab, peer_seen_by


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[AgentLab]:
    with lab(tmp_path, "routed") as built:
        yield built


def fdb(cluster: AgentLab, ns: str) -> str:
    return cluster.in_ns(ns, "bridge", "fdb", "show", "dev", VXLAN_DEVICE).stdout


def neighbours(cluster: AgentLab, ns: str) -> str:
    return cluster.in_ns(ns, "ip", "neigh", "show", "dev", VXLAN_DEVICE).stdout


def test_auto_tunnels_to_routed_peers(cluster: AgentLab) -> None:
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


def test_host_gw_cannot_reach_routed_peers_and_says_so(cluster: AgentLab) -> None:
    code, report, _ = cluster.once(cluster.nodes[0], "--backend", "host-gw")
    assert code == 1
    assert len([e for e in report["errors"] if e.startswith("routes:")]) == 2
    assert cluster.routes(cluster.nodes[0]) == {}


def test_pods_across_routed_nodes_keep_their_address(cluster: AgentLab) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    a = cluster.add_pod(n1, "pa")
    b = cluster.add_pod(n2, "pb")
    c = cluster.add_pod(n3, "pc")
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip
    assert peer_seen_by(a.ns, a.ip, c.ns) == c.ip
    assert peer_seen_by(b.ns, b.ip, n1.ns) == n1.ip  # node -> pod through the tunnel
    assert peer_seen_by(n2.ns, n2.ip, a.ns) == a.ip  # pod -> other node: no masquerade


def test_a_node_leaving_takes_its_tunnel_entries(cluster: AgentLab) -> None:
    cluster.run_once_everywhere()
    n1, n2, n3 = cluster.nodes
    cluster.write_nodes([n1.entry(), n2.entry()])
    report = cluster.run_once(n1)
    assert report["routes_deleted"] == 1
    assert set(cluster.routes(n1)) == {"10.244.2.0/24"}
    assert n3.ip not in fdb(cluster, n1.ns)
    assert "10.244.3.0" not in neighbours(cluster, n1.ns)
    assert n2.ip in fdb(cluster, n1.ns)


def test_restart_changes_nothing(cluster: AgentLab) -> None:
    cluster.run_once_everywhere()
    n1 = cluster.nodes[0]
    before = (cluster.routes(n1), fdb(cluster, n1.ns), neighbours(cluster, n1.ns))
    again = cluster.run_once(n1)
    assert (again["routes_added"], again["routes_replaced"], again["routes_deleted"]) == (0, 0, 0)
    assert again["vxlan_changes"] == 0
    assert (cluster.routes(n1), fdb(cluster, n1.ns), neighbours(cluster, n1.ns)) == before
