"""Planning is pure: table tests for join, leave, podCIDR change, same-subnet vs routed peers."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from minicni.agent.nodes import Node
from minicni.agent.plan import (
    VXLAN_DEVICE,
    Backend,
    Route,
    VxlanPeer,
    plan_node,
    pod_mtu,
    vtep_mac,
)

LAN = [IPv4Network("192.168.50.0/24")]


def node(name: str, ip: str, cidr: str) -> Node:
    return Node(name, IPv4Address(ip), IPv4Network(cidr))


N1 = node("n1", "192.168.50.11", "10.244.1.0/24")
N2 = node("n2", "192.168.50.12", "10.244.2.0/24")
N3 = node("n3", "192.168.70.13", "10.244.3.0/24")  # on another subnet: only VXLAN reaches it


def nodes(*members: Node) -> dict[str, Node]:
    return {member.name: member for member in members}


def host_gw(dst: str, via: str) -> Route:
    return Route(IPv4Network(dst), IPv4Address(via))


def tunnel(dst: str, vtep: str, src: str = "192.168.50.11") -> Route:
    return Route(IPv4Network(dst), IPv4Address(vtep), VXLAN_DEVICE, IPv4Address(src))


@pytest.mark.parametrize(
    ("members", "backend", "expected"),
    [
        ((N1,), Backend.AUTO, set()),
        ((N1, N2), Backend.HOST_GW, {host_gw("10.244.2.0/24", "192.168.50.12")}),
        ((N1, N2), Backend.AUTO, {host_gw("10.244.2.0/24", "192.168.50.12")}),
        ((N1, N2), Backend.VXLAN, {tunnel("10.244.2.0/24", "10.244.2.0")}),
        (
            (N1, N2, N3),
            Backend.AUTO,
            {host_gw("10.244.2.0/24", "192.168.50.12"), tunnel("10.244.3.0/24", "10.244.3.0")},
        ),
        # host-gw is what the user asked for, even for a peer it cannot reach directly
        ((N1, N3), Backend.HOST_GW, {host_gw("10.244.3.0/24", "192.168.70.13")}),
    ],
)
def test_routes_by_backend(
    members: tuple[Node, ...], backend: Backend, expected: set[Route]
) -> None:
    assert set(plan_node(nodes(*members), "n1", backend, LAN).routes) == expected


def test_join_adds_and_leave_removes_a_route() -> None:
    before = plan_node(nodes(N1, N2), "n1", Backend.AUTO, LAN)
    joined = plan_node(nodes(N1, N2, N3), "n1", Backend.AUTO, LAN)
    left = plan_node(nodes(N1, N3), "n1", Backend.AUTO, LAN)
    assert joined.routes - before.routes == {tunnel("10.244.3.0/24", "10.244.3.0")}
    assert host_gw("10.244.2.0/24", "192.168.50.12") not in left.routes


def test_pod_cidr_change_moves_the_route() -> None:
    moved = node("n2", "192.168.50.12", "10.244.22.0/24")
    plan = plan_node(nodes(N1, moved), "n1", Backend.AUTO, LAN)
    assert set(plan.routes) == {host_gw("10.244.22.0/24", "192.168.50.12")}


def test_vxlan_peers_carry_derived_macs() -> None:
    plan = plan_node(nodes(N1, N3), "n1", Backend.AUTO, LAN)
    assert plan.vxlan_peers == {
        VxlanPeer(IPv4Address("192.168.70.13"), IPv4Address("10.244.3.0"), "0e:6d:c0:a8:46:0d")
    }
    assert vtep_mac(IPv4Address("192.168.70.13")) == "0e:6d:c0:a8:46:0d"


def test_own_node_and_overlapping_cidrs_get_no_route() -> None:
    clash = node("n9", "192.168.50.19", "10.244.1.0/25")
    assert plan_node(nodes(N1, clash), "n1", Backend.AUTO, LAN).routes == frozenset()


def test_unknown_self_still_plans_host_gw() -> None:
    plan = plan_node(nodes(N2), "n1", Backend.AUTO, LAN)
    assert set(plan.routes) == {host_gw("10.244.2.0/24", "192.168.50.12")}


@pytest.mark.parametrize(
    ("backend", "mtu"), [(Backend.HOST_GW, 1500), (Backend.VXLAN, 1450), (Backend.AUTO, 1450)]
)
def test_pod_mtu(backend: Backend, mtu: int) -> None:
    assert pod_mtu(1500, backend) == mtu
