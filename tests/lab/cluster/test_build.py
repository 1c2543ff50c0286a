"""The builder's pure helpers: the pod address in a CNI result, the pod a state file names."""

from __future__ import annotations

import pytest

from lab.cluster.build import LabError, pod_address, pod_addresses, reference_conflist
from lab.cluster.fabric import pod_cidr_hops
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


def test_a_dual_stack_pod_has_both_addresses_ipv4_first() -> None:
    result = {
        "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [
            {"address": "fd00:10:244:1::7/64", "interface": 1},
            {"address": "10.244.1.7/24", "interface": 1},
        ],
    }
    assert pod_addresses(result) == ("10.244.1.7", "fd00:10:244:1::7")
    assert pod_address(result) == "10.244.1.7"


def test_the_reference_conflist_has_a_range_set_per_family() -> None:
    dual = plan(Topology(family="dual", plugin="reference"), "ml1").nodes[0]
    ranges = reference_conflist(dual, "/d", 1500)["plugins"][0]["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]
    four = plan(Topology(plugin="reference"), "ml1").nodes[0]
    assert reference_conflist(four, "/d", 1500)["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.244.1.0/24"}]
    ]


def test_the_lab_routes_each_familys_pod_cidr_over_the_underlay_of_that_family() -> None:
    n1, n2 = plan(Topology(family="dual", plugin="reference", nodes=2), "ml1").nodes
    assert pod_cidr_hops(n1, n2) == [
        ("10.244.2.0/24", "172.30.0.12", "172.30.0.1"),
        ("fd00:10:244:2::/64", "fd00:172:30::12", "fd00:172:30::1"),
    ]
