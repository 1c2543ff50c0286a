"""Validation of node entries: bad ones are skipped and reported, never tear down a good node."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from minicni.agent.model.nodes import (
    ClusterCidrs,
    Node,
    NodeEntry,
    node_from_mapping,
    node_to_mapping,
    validate_entries,
)

CLUSTER = ClusterCidrs(IPv4Network("10.244.0.0/16"))
DUAL = ClusterCidrs(IPv4Network("10.244.0.0/16"), IPv6Network("fd00:10:244::/56"))
SIX = ClusterCidrs(v6=IPv6Network("fd00:10:244::/56"))


def entry(name: str, ip: str | None = "192.168.50.11", *cidrs: str) -> NodeEntry:
    return NodeEntry(name, ip, cidrs or ("10.244.1.0/24",))


def test_valid_entries_become_nodes() -> None:
    checked = validate_entries(
        [
            entry("n1", "192.168.50.11", "10.244.1.0/24"),
            entry("n2", "192.168.50.12", "10.244.2.0/24"),
        ],
        CLUSTER,
    )
    assert checked.problems == []
    assert checked.nodes["n2"] == Node(
        "n2", IPv4Address("192.168.50.12"), IPv4Network("10.244.2.0/24")
    )


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (NodeEntry("n2", None, ("10.244.2.0/24",)), "no_address"),
        (NodeEntry("n2", "not-an-ip", ("10.244.2.0/24",)), "bad_address"),
        (NodeEntry("n2", "10.244.9.9", ("10.244.2.0/24",)), "bad_address"),
        (NodeEntry("n2", "192.168.50.12", ("10.9.0.0/24",)), "pod_cidr_outside_cluster"),
        (NodeEntry("n2", "192.168.50.12", ("10.244.2.1/24",)), "bad_pod_cidr"),
        (NodeEntry("n2", "192.168.50.12", ("fd00:10::/64",)), "bad_pod_cidr"),
        (NodeEntry("", "192.168.50.12", ("10.244.2.0/24",)), "no_name"),
    ],
)
def test_bad_entries_are_skipped_and_reported(bad: NodeEntry, kind: str) -> None:
    checked = validate_entries([entry("n1"), bad], CLUSTER)
    assert list(checked.nodes) == ["n1"]
    assert [problem.kind for problem in checked.problems] == [kind]


def test_a_node_whose_entry_turns_bad_keeps_its_last_good_value() -> None:
    good = validate_entries([entry("n1"), entry("n2", "192.168.50.12", "10.244.2.0/24")], CLUSTER)
    broken = validate_entries(
        [entry("n1"), NodeEntry("n2", None, ("10.244.2.0/24",))], CLUSTER, good.nodes
    )
    assert broken.nodes == good.nodes
    assert [problem.kind for problem in broken.problems] == ["no_address"]


def test_a_node_that_left_is_gone_even_with_a_last_good_value() -> None:
    good = validate_entries([entry("n1"), entry("n2", "192.168.50.12", "10.244.2.0/24")], CLUSTER)
    assert list(validate_entries([entry("n1")], CLUSTER, good.nodes).nodes) == ["n1"]


def test_node_without_pod_cidr_is_pending_not_a_problem() -> None:
    checked = validate_entries([entry("n1"), NodeEntry("n2", "192.168.50.12")], CLUSTER)
    assert checked.pending == ["n2"]
    assert checked.problems == []
    assert list(checked.nodes) == ["n1"]


def test_overlapping_pod_cidrs_keep_the_first_by_name() -> None:
    checked = validate_entries(
        [
            entry("n2", "192.168.50.12", "10.244.1.0/24"),
            entry("n1", "192.168.50.11", "10.244.1.0/24"),
        ],
        CLUSTER,
    )
    assert list(checked.nodes) == ["n1"]
    assert [problem.kind for problem in checked.problems] == ["pod_cidr_overlap"]


def test_duplicate_names_are_reported() -> None:
    checked = validate_entries([entry("n1"), entry("n1", "192.168.50.99")], CLUSTER)
    assert [problem.kind for problem in checked.problems] == ["duplicate_name"]


def test_the_ipv4_cidr_of_a_dual_stack_node_is_used() -> None:
    checked = validate_entries(
        [NodeEntry("n1", "192.168.50.11", ("fd00:10::/64", "10.244.1.0/24"))], CLUSTER
    )
    assert checked.nodes["n1"].pod_cidr == IPv4Network("10.244.1.0/24")


def dual_entry(name: str, index: int, *ips: str) -> NodeEntry:
    cidrs = (f"10.244.{index}.0/24", f"fd00:10:244:{index}::/64")
    return NodeEntry(name, None, cidrs, ips or (f"192.168.81.{index}", f"fd00:81::{index}"))


def test_a_dual_stack_entry_becomes_a_node_with_both_families() -> None:
    checked = validate_entries([dual_entry("n1", 1)], DUAL)
    assert checked.problems == []
    assert checked.nodes["n1"] == Node(
        "n1",
        IPv4Address("192.168.81.1"),
        IPv4Network("10.244.1.0/24"),
        IPv6Address("fd00:81::1"),
        IPv6Network("fd00:10:244:1::/64"),
    )
    node = checked.nodes["n1"]
    assert node.address(6) == IPv6Address("fd00:81::1") and node.cidr(4) == node.pod_cidr


def test_an_ipv4_cluster_takes_only_the_ipv4_pod_cidr_of_a_dual_stack_node() -> None:
    node = validate_entries([dual_entry("n1", 1)], CLUSTER).nodes["n1"]
    assert (node.pod_cidr, node.pod_cidr6) == (IPv4Network("10.244.1.0/24"), None)
    assert node.internal_ip6 == IPv6Address("fd00:81::1")  # an underlay address it may use


def test_an_ipv6_only_cluster_has_ipv6_nodes() -> None:
    entry = NodeEntry("n1", "fd00:81::1", ("fd00:10:244:1::/64",))
    node = validate_entries([entry], SIX).nodes["n1"]
    assert (node.internal_ip, node.pod_cidr) == (None, None)
    assert node.pod_cidrs == (IPv6Network("fd00:10:244:1::/64"),)


def test_an_ipv4_node_may_live_on_an_ipv6_underlay() -> None:
    """The underlay family is not the pods': VXLAN over IPv6 carries IPv4 pods."""
    node = validate_entries([NodeEntry("n2", "fd00::2", ("10.244.2.0/24",))], CLUSTER).nodes["n2"]
    assert (node.internal_ip, node.internal_ip6) == (None, IPv6Address("fd00::2"))


@pytest.mark.parametrize(
    ("bad", "kind", "detail"),
    [
        (NodeEntry("n2", "192.168.81.2", ("10.244.2.0/24",)), None, ""),  # IPv4 only: fine
        (
            NodeEntry("n2", "192.168.81.2", ("10.244.2.0/24", "10.244.3.0/24")),
            "bad_pod_cidr",
            "two IPv4 pod CIDRs",
        ),
        (
            NodeEntry("n2", "192.168.81.2", ("fd00:10:245:2::/64",)),
            "pod_cidr_outside_cluster",
            "outside the cluster CIDR fd00:10:244::/56",
        ),
        (NodeEntry("n2", "fd00:10:244:9::9", ("10.244.2.0/24",)), "bad_address", "inside"),
        (NodeEntry("n2", "192.168.81.2", ("fd00:10:244:2::1/64",)), "bad_pod_cidr", "network"),
        (NodeEntry("n2", None, ("10.244.2.0/24",), ("192.168.81.2", "nope")), "bad_address", ""),
    ],
)
def test_dual_stack_entries_are_checked_per_family(
    bad: NodeEntry, kind: str | None, detail: str
) -> None:
    checked = validate_entries([bad], DUAL)
    assert [p.kind for p in checked.problems] == ([kind] if kind else [])
    assert all(detail in p.detail for p in checked.problems)


def test_an_entry_without_a_pod_cidr_of_the_clusters_families_is_named() -> None:
    checked = validate_entries([NodeEntry("n1", "192.168.81.1", ("10.244.1.0/24",))], SIX)
    assert [p.detail for p in checked.problems] == ["no IPv6 pod CIDR"]
    checked = validate_entries([NodeEntry("n1", "192.168.81.1", ("fd00:10::/64",))], CLUSTER)
    assert [p.detail for p in checked.problems] == ["no IPv4 pod CIDR"]


def test_overlaps_are_found_per_family_and_nothing_of_a_clash_is_claimed() -> None:
    first = dual_entry("n1", 1)
    clash6 = NodeEntry("n2", "192.168.81.2", ("10.244.2.0/24", "fd00:10:244:1::/64"))
    after = NodeEntry("n3", "192.168.81.3", ("10.244.2.0/24", "fd00:10:244:3::/64"))
    checked = validate_entries([first, clash6, after], DUAL)
    assert [p.detail for p in checked.problems] == [
        "pod CIDR fd00:10:244:1::/64 overlaps n1's fd00:10:244:1::/64"
    ]
    assert sorted(checked.nodes) == ["n1", "n3"]  # n2's IPv4 CIDR was not kept for it


def test_the_cluster_cidr_has_one_network_per_family() -> None:
    assert ClusterCidrs.parse("10.244.0.0/16,fd00:10:244::/56") == DUAL
    assert ClusterCidrs.parse(" fd00:10:244::/56 ") == SIX
    assert str(DUAL) == "10.244.0.0/16,fd00:10:244::/56" and DUAL.versions == (4, 6)
    for bad in ("10.244.0.0/16,10.245.0.0/16", "10.244.0.1/16", "", "fd00::/64,nope"):
        with pytest.raises(ValueError):
            ClusterCidrs.parse(bad)


def test_a_node_reads_back_from_its_mapping_and_an_ipv4_one_keeps_the_old_keys() -> None:
    four = validate_entries([NodeEntry("n1", "192.168.81.1", ("10.244.1.0/24",))], CLUSTER)
    assert node_to_mapping(four.nodes["n1"]) == {
        "name": "n1",
        "internalIP": "192.168.81.1",
        "podCIDR": "10.244.1.0/24",
    }
    dual = validate_entries([dual_entry("n1", 1)], DUAL).nodes["n1"]
    mapping = node_to_mapping(dual)
    assert mapping["internalIPs"] == ["192.168.81.1", "fd00:81::1"]
    assert mapping["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert node_from_mapping(mapping) == dual
    assert node_from_mapping(node_to_mapping(four.nodes["n1"])) == four.nodes["n1"]
