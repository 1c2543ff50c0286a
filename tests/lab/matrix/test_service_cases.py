"""Service cells: which ones the matrix probes, the source each endpoint must see, and the judge
of one client's attempt (the reply must come from the ClusterIP)."""

from __future__ import annotations

from typing import Any

import pytest

from lab.matrix.cases import (
    NATED,
    NODE_SVC,
    OK,
    POD_SVC_OTHER,
    POD_SVC_SAME,
    POD_SVC_SELF,
    PROBE_ERROR,
    SERVICE_KINDS,
    UNREACHABLE,
    Case,
    Observation,
    build_cases,
    judge,
    service_case_kind,
)
from lab.matrix.executors import Endpoint, Inventory, Service
from tests.lab.matrix.samples import (
    N1,
    N2,
    P10,
    P11,
    P20,
    SERVICE_INVENTORY,
    TCP_SERVICE,
    UDP_SERVICE,
)


@pytest.mark.parametrize(
    ("client", "endpoint", "kind"),
    [
        (P11, P10, POD_SVC_SAME),
        (P20, P10, POD_SVC_OTHER),
        (P10, P10, POD_SVC_SELF),
        (N1, P10, NODE_SVC),
        (N2, P10, NODE_SVC),
    ],
)
def test_service_case_kinds(client: Endpoint, endpoint: Endpoint, kind: str) -> None:
    assert service_case_kind(client, endpoint) == kind


def test_every_client_reaches_every_endpoint_of_each_service_asked_for() -> None:
    cases = [c for c in build_cases(SERVICE_INVENTORY, ["tcp"]) if c.service is not None]
    # 5 clients (2 nodes, 3 pods) x 2 endpoints, only the TCP Service
    assert len(cases) == 10
    assert {c.service for c in cases} == {TCP_SERVICE}
    assert {c.kind for c in cases} == set(SERVICE_KINDS)
    assert all(c.port == 80 for c in cases)  # the Service's port, not a cell port
    hairpins = [(c.src.name, c.dst.name) for c in cases if c.kind == POD_SVC_SELF]
    assert hairpins == [("n1/p0", "n1/p0"), ("n2/p0", "n2/p0")]
    assert build_cases(SERVICE_INVENTORY, ["icmp"]) == [
        c for c in build_cases(SERVICE_INVENTORY, ["icmp"]) if c.service is None
    ]
    only = build_cases(SERVICE_INVENTORY, ["udp"], kinds=[POD_SVC_SAME])
    assert [(c.src.name, c.dst.name, c.service) for c in only] == [("n1/p1", "n1/p0", UDP_SERVICE)]


def test_a_service_cell_pair_and_a_pod_cell_pair_do_not_share_a_label() -> None:
    cases = build_cases(SERVICE_INVENTORY, ["tcp"], kinds=["pod->pod same node", POD_SVC_SAME])
    assert sorted(c.label for c in cases) == [
        "tcp n1/p0 -> n1/p1",
        "tcp n1/p1 -> n1/p0",
        "tcp n1/p1 -> probe-tcp (n1/p0)",
    ]


def test_an_inventory_refuses_service_endpoints_that_are_not_its_pods() -> None:
    with pytest.raises(ValueError, match="not pods"):
        Inventory.build([N1, P10], services=[Service("s", "tcp", "10.96.0.1", 80, 80, ("n1",))])
    with pytest.raises(ValueError, match="tcp or udp"):
        Inventory.build([P10], services=[Service("s", "icmp", "10.96.0.1", 0, 0, ("n1/p0",))])


def test_an_inventory_with_services_survives_the_state_file() -> None:
    mapping = SERVICE_INVENTORY.to_mapping()
    assert Inventory.from_mapping(mapping) == SERVICE_INVENTORY
    assert Inventory.from_mapping({"endpoints": mapping["endpoints"]}).services == ()


def service_case(client: Endpoint, endpoint: Endpoint, service: Service = TCP_SERVICE) -> Case:
    return Case(service_case_kind(client, endpoint), service.proto, client, endpoint, 80, service)


def client(
    local: str,
    reply: bool = True,
    reply_src: str | None = "10.96.0.20",
    **more: Any,
) -> dict[str, Any]:
    """What the runner makes of a client's line for one endpoint."""
    return {
        "local": local,
        "reply": reply,
        "reply_src": reply_src if reply else None,
        "gateway": more.get("gateway", "10.244.1.1"),
        "egress": more.get("egress", {}),
        "attempts": 5,
        "unanswered": ["t.3"] * (0 if reply else 5),
    }


def seen(src: str | None) -> dict[str, object]:
    return {"received": src is not None, "observed_src": src}


def test_a_pod_through_its_service_passes_when_the_endpoint_saw_it_and_the_reply_came_back() -> (
    None
):
    for endpoint in (P10, P20):
        assert judge(service_case(P11, endpoint), Observation(client(P11.ip), seen(P11.ip))) == (
            OK,
            "",
        )


def test_a_reply_from_the_endpoints_own_address_is_a_wrong_source() -> None:
    # UDP on a bridge that skips iptables: conntrack never undoes the DNAT of the answer
    observation = Observation(client(P11.ip, reply_src=P10.ip), seen(P11.ip))
    verdict, detail = judge(service_case(P11, P10, UDP_SERVICE), observation)
    assert verdict == NATED
    assert detail == (
        "the reply came from 10.244.1.2, not from the Service's address 10.96.0.21 "
        "(the DNAT was not undone)"
    )


def test_a_pod_masqueraded_on_the_way_to_another_node_is_nated() -> None:
    observation = Observation(client(P11.ip), seen(N1.ip))
    assert judge(service_case(P11, P20), observation)[0] == NATED


def test_a_pod_reaching_itself_must_arrive_from_its_bridge() -> None:
    gateway = client(P10.ip, gateway="10.244.1.1")
    assert judge(service_case(P10, P10), Observation(gateway, seen("10.244.1.1")))[0] == OK
    # not masqueraded: the endpoint's answer to itself would never pass conntrack
    assert judge(service_case(P10, P10), Observation(gateway, seen(P10.ip)))[0] == NATED


def test_a_node_must_arrive_from_the_address_it_leaves_by_towards_the_endpoint() -> None:
    egress = {"n1/p0": "10.244.1.1", "n2/p0": "172.30.0.11"}
    near, far = service_case(N1, P10), service_case(N1, P20)
    node = client(N1.ip, egress=egress)
    assert judge(near, Observation(node, seen("10.244.1.1")))[0] == OK
    assert judge(far, Observation(node, seen("172.30.0.11")))[0] == OK
    verdict, detail = judge(far, Observation(node, seen("10.244.1.1")))
    assert (verdict, detail) == (NATED, "the receiver saw source 10.244.1.1, expected 172.30.0.11")
    nothing_to_expect = Observation(client(N1.ip), seen("172.30.0.11"))
    assert judge(far, nothing_to_expect)[0] == PROBE_ERROR


def test_an_endpoint_no_attempt_reached_is_unreachable_and_says_how_hard_it_was_tried() -> None:
    verdict, detail = judge(service_case(P11, P10), Observation(client(P11.ip, False), seen(None)))
    assert verdict == UNREACHABLE
    assert detail == "no probe through probe-tcp reached n1/p0 (5 attempts, 5 unanswered)"
    reached = Observation(client(P11.ip, False), seen(P11.ip))
    assert judge(service_case(P11, P10), reached)[0] == UNREACHABLE  # arrived, no answer back


def test_a_client_that_failed_is_a_probe_error() -> None:
    observation = Observation(error="client: OSError: Network is unreachable")
    assert judge(service_case(N2, P10), observation)[0] == PROBE_ERROR
