"""The agent says why its own node cannot be used, naming a cluster CIDR that disagrees with the
cluster's, before touching the kernel."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from minicni.agent.model.nodes import ClusterCidrs, NodeEntry
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.reconciler import Reconciler


class NoKernel:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the kernel was touched ({name})")


def reconciler(tmp_path: Path) -> Reconciler:
    cluster = ClusterCidrs(IPv4Network("10.244.0.0/16"))
    config = AgentConfig("n1", cluster, state_dir=tmp_path / "state")
    return Reconciler(config, Metrics(), rtnl=NoKernel())  # type: ignore[arg-type]


def test_pod_cidr_outside_the_cluster_cidr_is_named_in_the_report_and_readiness(
    tmp_path: Path,
) -> None:
    agent = reconciler(tmp_path)
    report = agent.reconcile([NodeEntry("n1", "172.18.0.2", ("10.85.1.0/24",))])
    assert not report.ok and not agent.ready
    (error,) = [e for e in report.errors if e.startswith("own_node")]
    assert "10.85.1.0/24 is outside the cluster CIDR 10.244.0.0/16" in error
    assert "MINICNI_CLUSTER_CIDR" in error
    assert any("10.85.1.0/24" in reason for reason in agent.not_ready_reasons())


def test_a_node_without_a_pod_cidr_yet_says_so(tmp_path: Path) -> None:
    agent = reconciler(tmp_path)
    report = agent.reconcile([NodeEntry("n1", "172.18.0.2", ())])
    assert any("has no pod CIDR yet" in error for error in report.errors)
    assert any("no pod CIDR yet" in reason for reason in agent.not_ready_reasons())
