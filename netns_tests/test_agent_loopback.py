"""A node without the `loopback` plugin: the agent says so in its report and log, still makes
the node ready, and takes the warning back once the plugin is installed."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from netns_tests.lab_support import AgentCluster

REFERENCE_LOOPBACK = "/usr/lib/cni/loopback"


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    return agent_cluster("l2", nodes=1)


def test_once_reports_a_missing_loopback_without_failing(cluster: AgentCluster) -> None:
    (node,) = cluster.nodes
    (node.bin_dir / "loopback").unlink(missing_ok=True)
    code, report, log = cluster.once(node)
    assert code == 0 and report["ok"], report["errors"]
    (warning,) = report["warnings"]
    assert "'loopback'" in warning and str(node.bin_dir) in warning
    assert "'loopback'" in log

    shutil.copy(REFERENCE_LOOPBACK, node.bin_dir / "loopback")
    code, report, _ = cluster.once(node)
    assert code == 0 and report["warnings"] == []
