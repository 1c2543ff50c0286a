"""What Services need from the node, as the agent keeps and reports it: the pod bridge's own
nf_call_iptables turned back on, a port without hairpin named in the report, the log, /readyz
(still ready) and /metrics."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable

import pytest

from minicni.defaults import BRIDGE
from minicni.net.links import host_veth_name
from netns_tests.lab_support import AgentCluster, ClusterNode, health_get

REFERENCE_LOOPBACK = "/usr/lib/cni/loopback"


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    built = agent_cluster("l2", nodes=1)
    for node in built.nodes:  # containerd's companion, so that its warning stays out of the way
        node.bin_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REFERENCE_LOOPBACK, node.bin_dir / "loopback")
    return built


def bridge_switches(cluster: AgentCluster, node: ClusterNode) -> tuple[int, int]:
    shown = cluster.in_ns(node.ns, "ip", "-j", "-d", "link", "show", BRIDGE)
    data = json.loads(shown.stdout)[0]["linkinfo"]["info_data"]
    return data["nf_call_iptables"], data["nf_call_ip6tables"]


def test_the_agent_keeps_the_bridge_netfilter_on_and_names_ports_without_hairpin(
    cluster: AgentCluster,
) -> None:
    (node,) = cluster.nodes
    report = cluster.run_once(node)
    assert report["br_netfilter"] is True and report["bridge_netfilter"] is None  # no bridge yet
    pod = cluster.add_pod(node, "p0")
    assert bridge_switches(cluster, node) == (1, 1)  # the plugin's doing

    # an older minicni's bridge, a port whose hairpin someone turned off
    cluster.in_ns(node.ns, "ip", "link", "set", BRIDGE, "type", "bridge",
                  "nf_call_iptables", "0", "nf_call_ip6tables", "0")  # fmt: skip
    port = host_veth_name(pod.container_id, "eth0")
    cluster.in_ns(node.ns, "bridge", "link", "set", "dev", port, "hairpin", "off")
    code, report, log = cluster.once(node)
    assert code == 0 and report["ok"], report["errors"]
    assert bridge_switches(cluster, node) == (1, 1)
    assert report["bridge_netfilter"] is True
    assert "turned on nf_call_iptables" in log
    assert report["bridge_ports_without_hairpin"] == 1
    (warning,) = report["warnings"]
    assert f"1 of the 1 ports of {BRIDGE} without hairpin mode ({port})" in warning
    assert port in log

    cluster.in_ns(node.ns, "bridge", "link", "set", "dev", port, "hairpin", "on")
    report = cluster.run_once(node)
    assert report["warnings"] == [] and report["bridge_ports_without_hairpin"] == 0


def test_readyz_names_a_hairpin_problem_and_stays_ready(cluster: AgentCluster) -> None:
    (node,) = cluster.nodes
    cluster.run_once(node)
    pod = cluster.add_pod(node, "p0")
    port = host_veth_name(pod.container_id, "eth0")
    cluster.in_ns(node.ns, "bridge", "link", "set", "dev", port, "hairpin", "off")
    process = cluster.start_agent(node)
    try:
        deadline = time.monotonic() + 30
        while True:  # the lab's agents resync every second
            try:
                status, body = health_get(node, "/readyz")
            except OSError:
                status, body = 0, ""
            if "without hairpin" in body or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert body.startswith("ready\nwarning: 1 of the 1 ports of minicni0 without hairpin")
        metrics = health_get(node, "/metrics")[1]
        for line in (
            "minicni_agent_br_netfilter 1",
            "minicni_agent_bridge_nf_call_iptables 1",
            "minicni_agent_bridge_ports_without_hairpin 1",
        ):
            assert line in metrics.splitlines()
    finally:
        assert process.poll() is None
        cluster.stop_agent(node)
