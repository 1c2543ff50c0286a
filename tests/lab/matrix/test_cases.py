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
from lab.matrix.executors import Endpoint
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
