"""hostPort: with `portmap` in the CNI bin dir (kind nodes ship it), the agent chains it, and a
pod's port mapping -- passed by the runtime as libcni does, `runtimeConfig.portMappings` -- is
reachable at its node's address from another node, with the client's address preserved."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from lab.cluster.build import pod_attachment
from minicni.net import netns
from netns_tests.lab_support import AgentCluster

PORTMAP = Path("/usr/lib/cni/portmap")
HOST_PORT, CONTAINER_PORT = 30080, 8080


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    if not PORTMAP.exists():
        pytest.skip(
            "no portmap plugin at /usr/lib/cni/portmap (Debian: containernetworking-plugins)"
        )
    return agent_cluster("l2", nodes=2)


def listen(ns: str, port: int) -> socket.socket:
    with netns.enter(netns.path_of(ns)):
        server = socket.create_server(("0.0.0.0", port))
    server.settimeout(5)
    return server


def connect(ns: str, address: str, port: int) -> socket.socket:
    with netns.enter(netns.path_of(ns)):
        return socket.create_connection((address, port), timeout=5)


def test_host_port_reaches_the_pod_from_another_node(cluster: AgentCluster) -> None:
    n1, n2 = cluster.nodes
    (n1.bin_dir / "portmap").symlink_to(PORTMAP)
    report = cluster.run_once(n1)
    assert report["portmap_chained"]
    document = json.loads(n1.conflist.read_text())
    assert [p["type"] for p in document["plugins"]] == ["minicni", "portmap"]
    assert "1.1.0" not in document["cniVersions"]  # this portmap speaks up to 1.0.0
    cluster.run_once(n2)

    mapping = {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}
    # no CHECK, as containerd: Debian's portmap 1.1.1 fails CHECK of an IPv4-only pod where
    # ip6tables exists (containernetworking/plugins#819, fixed in later releases)
    pod = cluster.add_pod(n1, "web", capability_args={"portMappings": [mapping]}, check=False)
    with listen(pod.ns, CONTAINER_PORT) as server:
        with connect(n2.ns, n1.ip, HOST_PORT):  # another node, to this node's address
            connection, (source, _) = server.accept()
            connection.close()
        assert source == n2.ip  # DNAT only: the pod sees who called

        # hairpin: the pod reaches itself through its node's hostPort (portmap's snat)
        with connect(pod.ns, n1.ip, HOST_PORT):
            connection, _ = server.accept()
            connection.close()

    rules = cluster.in_ns(n1.ns, "iptables-save", "-t", "nat").stdout
    assert f"--dport {HOST_PORT}" in rules
    # DEL as the runtime sends it: the same attachment, port mappings included
    attachment = pod_attachment(cluster.lab.lab.pod(n1.name, "web"))
    runtime = cluster.lab.runtime_for(n1.plan)
    runtime.delete(replace(attachment, capability_args={"portMappings": [mapping]}))
    rules = cluster.in_ns(n1.ns, "iptables-save", "-t", "nat").stdout
    assert f"--dport {HOST_PORT}" not in rules  # DEL removed the mapping


def test_without_portmap_nothing_is_chained(cluster: AgentCluster) -> None:
    n1, _ = cluster.nodes
    assert not cluster.run_once(n1)["portmap_chained"]
    document = json.loads(n1.conflist.read_text())
    assert [p["type"] for p in document["plugins"]] == ["minicni"]
    assert document["cniVersions"][-1] == "1.1.0"
