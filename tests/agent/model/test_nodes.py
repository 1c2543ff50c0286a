"""Validation of node entries: bad ones are skipped and reported, never tear down a good node."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from minicni.agent.model.nodes import Node, NodeEntry, validate_entries

CLUSTER = IPv4Network("10.244.0.0/16")


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
        (NodeEntry("n2", "fd00::2", ("10.244.2.0/24",)), "bad_address"),
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
