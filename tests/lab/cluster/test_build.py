"""The builder's pure helpers: the pod address in a CNI result, the pod a state file names."""

from __future__ import annotations

import pytest

from lab.cluster.build import LabError, pod_address
from lab.topology import Topology, plan


def test_the_pod_address_is_the_one_on_the_sandbox_interface() -> None:
    result = {
        "interfaces": [{"name": "minicni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [
            {"address": "10.244.1.1/24", "interface": 0},
            {"address": "10.244.1.7/24", "interface": 1},
        ],
    }
    assert pod_address(result) == "10.244.1.7"


def test_a_result_without_a_pod_address_is_refused() -> None:
    with pytest.raises(LabError, match="no address on the pod interface"):
        pod_address(
            {"interfaces": [{"name": "br"}], "ips": [{"address": "10.0.0.1/24", "interface": 0}]}
        )


def test_a_pod_is_found_again_by_its_display_name() -> None:
    lab = plan(Topology(nodes=2, pods_per_node=1), "ml1")
    for pod in lab.pods:
        assert lab.pod_named(pod.name) == pod
    assert lab.pod_named("n2/pa") == lab.pod("n2", "pa")
