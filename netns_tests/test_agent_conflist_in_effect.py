"""The agent is ready only when the runtime will use its conflist.

containerd loads only the first config file of /etc/cni/net.d (go-cni, libcni's sorted names):
another CNI's `05-other.conflist` means pods get that network. The agent then stays not ready,
leaves the node's NetworkUnavailable condition alone, and names the file in /readyz, its metrics
and its report; --cni-exclusive moves the other configs aside. The node source here is an API
server on 127.0.0.1 inside the node's network namespace (lab.fake_apiserver).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lab.fake_apiserver import FakeApiServer, kubeconfig_for
from minicni.net import netns
from netns_tests.lab_support import AgentCluster, ClusterNode, health_get, wait_for

HEALTH_PORT = 28109
OTHER = "05-other.conflist"


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    return agent_cluster("l2", nodes=2)


def shadow(node: ClusterNode) -> Path:
    other = node.files.conf_dir / OTHER
    other.write_text('{"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}')
    return other


def test_once_reports_the_shadowing_file_and_fails(cluster: AgentCluster) -> None:
    n1, _ = cluster.nodes
    other = shadow(n1)
    code, report, log = cluster.once(n1)
    assert code == 1
    assert report["conflist_shadowed_by"] == str(other)
    assert any(str(other) in error for error in report["errors"])
    assert str(other) in log
    assert n1.conflist.exists()  # written; just not the one the runtime loads


def test_exclusive_moves_the_other_config_aside(cluster: AgentCluster) -> None:
    n1, _ = cluster.nodes
    other = shadow(n1)
    report = cluster.run_once(n1, "--cni-exclusive")
    assert report["conflist_shadowed_by"] is None
    assert not other.exists()
    assert (n1.files.conf_dir / (OTHER + ".minicni_bak")).exists()


def answers(node: ClusterNode) -> bool:
    try:
        health_get(node, "/healthz", HEALTH_PORT)
    except OSError:
        return False
    return True


def as_node_object(entry: dict[str, str]) -> dict[str, object]:
    return {
        "metadata": {"name": entry["name"]},
        "spec": {"podCIDR": entry["podCIDR"], "podCIDRs": [entry["podCIDR"]]},
        "status": {"addresses": [{"type": "InternalIP", "address": entry["internalIP"]}]},
    }


def test_shadowed_node_stays_not_ready_and_network_unavailable(cluster: AgentCluster) -> None:
    n1, n2 = cluster.nodes
    api = FakeApiServer()
    for node in (n1, n2):
        api.put(as_node_object(node.entry()))
    with netns.enter(netns.path_of(n1.ns)):
        api.start()  # listens on 127.0.0.1 of node1's namespace, where its agent runs
    try:
        kubeconfig = n1.home / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(api.url)))
        other = shadow(n1)
        health = f"127.0.0.1:{HEALTH_PORT}"
        source = ("--nodes-file", "", "--kubeconfig", str(kubeconfig))  # the Kubernetes source
        process = cluster.start_agent(n1, "--health-addr", health, *source)
        assert process.poll() is None
        wait_for(lambda: answers(n1), what="the health endpoint")
        wait_for(
            lambda: (
                _metric(
                    health_get(n1, "/metrics", HEALTH_PORT)[1], "minicni_agent_reconciles_total"
                )
                >= 3
            ),
            what="three reconciles",
        )
        status, body = health_get(n1, "/readyz", HEALTH_PORT)
        assert status == 503
        assert f"the runtime loads {other}" in body
        metrics = health_get(n1, "/metrics", HEALTH_PORT)[1]
        assert "minicni_agent_conflist_in_effect 0" in metrics
        assert f'minicni_agent_conflist_shadowed{{file="{other}"}} 1' in metrics
        assert api.requests_of("patch") == []  # NetworkUnavailable stays as it is

        other.unlink()  # the other CNI is removed: ours is the one the runtime loads
        wait_for(lambda: health_get(n1, "/readyz", HEALTH_PORT)[0] == 200, what="ready")
        wait_for(lambda: bool(api.patches), what="the NetworkUnavailable patch")
        name, body_sent = api.patches[0]
        (condition,) = body_sent["status"]["conditions"]
        assert (name, condition["type"], condition["status"]) == (
            n1.name,
            "NetworkUnavailable",
            "False",
        )
        assert "minicni_agent_conflist_in_effect 1" in health_get(n1, "/metrics", HEALTH_PORT)[1]
    finally:
        if n1.name in cluster.lab.agents:
            cluster.stop_agent(n1)
        api.stop()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
