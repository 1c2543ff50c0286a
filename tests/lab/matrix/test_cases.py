"""Cases and verdicts: which pairs the matrix probes, and the pure judge of one attempt."""

from __future__ import annotations

import pytest

from lab.matrix.cases import (
    NATED,
    OK,
    PAIR_KINDS,
    PROBE_ERROR,
    UNREACHABLE,
    Case,
    Observation,
    build_cases,
    case_kind,
    judge,
)
from lab.matrix.executors import Endpoint, Inventory
from tests.lab.matrix.samples import INVENTORY, N1, N2, P10, P11, P20


@pytest.mark.parametrize(
    ("src", "dst", "kind"),
    [
        (P10, P11, "pod->pod same node"),
        (P10, P20, "pod->pod other node"),
        (P10, N1, "pod->own node"),
        (P10, N2, "pod->other node"),
        (N1, P10, "node->pod same node"),
        (N1, P20, "node->pod other node"),
        (N1, N2, None),
        (P10, P10, None),
    ],
)
def test_case_kinds(src: Endpoint, dst: Endpoint, kind: str | None) -> None:
    assert case_kind(src, dst) == kind


def test_cases_cover_every_kind_and_protocol_with_distinct_ports() -> None:
    cases = build_cases(INVENTORY, ["icmp", "tcp", "udp"])
    assert {c.kind for c in cases} == set(PAIR_KINDS)  # no Services in this inventory
    per_proto = {p: [c for c in cases if c.proto == p] for p in ("icmp", "tcp", "udp")}
    # 3 pods: 2 same-node pairs, 4 across; 3 own-node, 3 other-node; 2 + 1 node->pod, twice
    assert all(len(v) == 2 + 4 + 3 + 3 + 3 + 3 for v in per_proto.values())
    assert len({c.port for c in cases}) == len(cases)


def test_cases_can_be_restricted_to_some_kinds() -> None:
    cases = build_cases(INVENTORY, ["tcp"], kinds=["pod->pod other node"])
    assert {(c.src.name, c.dst.name) for c in cases} == {
        ("n1/p0", "n2/p0"),
        ("n1/p1", "n2/p0"),
        ("n2/p0", "n1/p0"),
        ("n2/p0", "n1/p1"),
    }


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="sctp"):
        build_cases(INVENTORY, ["sctp"])


def case(src: Endpoint = P10, dst: Endpoint = P20) -> Case:
    return Case(case_kind(src, dst) or "", "tcp", src, dst, 31000)


def sent(local: str, reply: bool = True) -> dict[str, object]:
    return {"local": local, "reply": reply}


def seen(src: str | None) -> dict[str, object]:
    return {"received": src is not None, "observed_src": src}


@pytest.mark.parametrize(
    ("observation", "verdict"),
    [
        (Observation(sent("10.244.1.2"), seen("10.244.1.2")), OK),
        (Observation(sent("10.244.1.2"), seen("172.30.0.11")), NATED),
        (Observation(sent("10.244.1.2", reply=False), seen(None)), UNREACHABLE),
        (Observation(sent("10.244.1.2", reply=False), seen("10.244.1.2")), UNREACHABLE),
        (Observation(sent("10.244.1.2", reply=False), seen("172.30.0.11")), NATED),
        (Observation(error="receiver did not start"), PROBE_ERROR),
        (Observation(sent("10.244.1.2"), {"error": "PermissionError"}), PROBE_ERROR),
        (Observation(None, seen("10.244.1.2")), PROBE_ERROR),
    ],
)
def test_judge_pod_source(observation: Observation, verdict: str) -> None:
    assert judge(case(), observation)[0] == verdict


def test_a_pod_must_be_seen_with_its_own_address_whatever_it_sent_from() -> None:
    # the sender's socket left from another address (e.g. a second one on the pod): not the pod's
    observation = Observation(sent("10.244.1.99"), seen("10.244.1.99"))
    assert judge(case(), observation)[0] == NATED


def test_a_node_is_judged_by_the_address_it_chose_to_send_from() -> None:
    # node -> local pod leaves from the bridge address: that is the node's own address too
    observation = Observation(sent("10.244.1.1"), seen("10.244.1.1"))
    assert judge(case(N1, P10), observation) == (OK, "")
    masqueraded = Observation(sent("10.244.1.1"), seen("172.30.0.11"))
    assert judge(case(N1, P10), masqueraded)[0] == NATED


D1 = Endpoint("n1", "node", "n1", "172.30.0.11", "ml1-n1", ips=("172.30.0.11", "fd00:172:30::11"))
D10 = Endpoint(
    "n1/p0", "pod", "n1", "10.244.1.2", "ml1-n1p0", ips=("10.244.1.2", "fd00:10:244:1::2")
)
D20 = Endpoint(
    "n2/p0", "pod", "n2", "10.244.2.2", "ml1-n2p0", ips=("10.244.2.2", "fd00:10:244:2::2")
)
V4_ONLY_NODE = Endpoint("n2", "node", "n2", "172.30.0.12", "ml1-n2")


def test_a_dual_stack_inventory_has_every_cell_once_per_family() -> None:
    inventory = Inventory.build([D1, V4_ONLY_NODE, D10, D20])
    assert inventory.families == ("ipv4", "ipv6")
    cases = build_cases(inventory, ["icmp", "tcp"])
    by_family = {f: [c for c in cases if c.family == f] for f in ("ipv4", "ipv6")}
    # n2 has no IPv6 address: its IPv6 cells do not exist (they would be `-`)
    assert len(by_family["ipv4"]) == 2 * (2 + 2 + 2 + 2 + 2)
    assert {(c.src.name, c.dst.name) for c in by_family["ipv6"]} == {
        ("n1/p0", "n2/p0"), ("n2/p0", "n1/p0"), ("n1/p0", "n1"), ("n2/p0", "n1"),
        ("n1", "n1/p0"), ("n1", "n2/p0"),
    }  # fmt: skip
    six = next(c for c in by_family["ipv6"] if (c.src, c.dst) == (D10, D20))
    assert (six.grid, six.src_ip, six.dst_ip) == ("icmp6", "fd00:10:244:1::2", "fd00:10:244:2::2")
    assert six.label == "icmp6 n1/p0 -> n2/p0"
    assert len({c.port for c in cases}) == len(cases)
    only_six = build_cases(inventory, ["tcp"], families=["ipv6"])
    assert len(only_six) == 6 and {c.family for c in only_six} == {"ipv6"}


def test_an_ipv6_cell_is_judged_by_the_pods_ipv6_address_in_any_spelling() -> None:
    six = Case("pod->pod other node", "tcp", D10, D20, 31000, family="ipv6")
    assert judge(six, Observation(sent("fd00:10:244:1::2"), seen("fd00:10:244:1:0::2")))[0] == OK
    # the pod's IPv4 address, or the node's, is not its IPv6 source
    assert judge(six, Observation(sent("x"), seen("10.244.1.2")))[0] == NATED
    assert judge(six, Observation(sent("x"), seen("fd00:172:30::11")))[0] == NATED


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="ipv5"):
        build_cases(INVENTORY, ["tcp"], families=["ipv5"])


def test_an_ipv4_inventory_keeps_its_cells_and_names() -> None:
    cases = build_cases(INVENTORY, ["tcp"])
    assert {c.family for c in cases} == {"ipv4"} and INVENTORY.families == ("ipv4",)
    assert cases[0].label.startswith("tcp ") and cases[0].dst_ip == cases[0].dst.ip
