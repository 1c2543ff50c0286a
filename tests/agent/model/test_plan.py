"""Planning is pure: table tests for join, leave, podCIDR change, same-subnet vs routed peers."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from minicni.agent.model.nodes import Node
from minicni.agent.model.plan import (
    MAIN_TABLE,
    POLICY_RULE_PRIORITY,
    POLICY_TABLE,
    VXLAN_DEVICE,
    Backend,
    PolicyRule,
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


# -- policy routing: peer node IPs through the tunnel, for traffic from our pods --------------


def peer_node(ip: str, vtep: str) -> Route:
    return Route(IPv4Network(f"{ip}/32"), IPv4Address(vtep), VXLAN_DEVICE, table=POLICY_TABLE)


OWN_RULE = PolicyRule(IPv4Network("10.244.1.0/24"), POLICY_TABLE, POLICY_RULE_PRIORITY)


@pytest.mark.parametrize(
    ("members", "backend", "node_routes", "rule"),
    [
        ((N1,), Backend.VXLAN, set(), None),
        ((N1, N2), Backend.HOST_GW, set(), None),  # same L2: symmetric already
        ((N1, N2), Backend.AUTO, set(), None),
        ((N1, N2), Backend.VXLAN, {peer_node("192.168.50.12", "10.244.2.0")}, OWN_RULE),
        ((N1, N2, N3), Backend.AUTO, {peer_node("192.168.70.13", "10.244.3.0")}, OWN_RULE),
        (
            (N1, N2, N3),
            Backend.VXLAN,
            {peer_node("192.168.50.12", "10.244.2.0"), peer_node("192.168.70.13", "10.244.3.0")},
            OWN_RULE,
        ),
        # without our own entry there is no pod CIDR to match: no rule, and no table to fill
        ((N2, N3), Backend.VXLAN, set(), None),
    ],
)
def test_vxlan_peers_get_a_node_route_in_our_table_and_one_rule(
    members: tuple[Node, ...], backend: Backend, node_routes: set[Route], rule: PolicyRule | None
) -> None:
    plan = plan_node(nodes(*members), "n1", backend, LAN)
    assert set(plan.peer_node_routes) == node_routes
    assert plan.rule == rule
    assert plan.all_routes() == plan.routes | plan.peer_node_routes


def test_node_route_shares_the_gateway_of_the_pod_cidr_route() -> None:
    plan = plan_node(nodes(N1, N3), "n1", Backend.AUTO, LAN)
    (pod_route,) = plan.routes
    (node_route,) = plan.peer_node_routes
    assert (node_route.gateway, node_route.device) == (pod_route.gateway, pod_route.device)
    assert node_route.src is None  # only traffic that already carries a pod address uses it
    assert node_route.table == POLICY_TABLE and pod_route.table == MAIN_TABLE
    assert node_route.key != pod_route.key and node_route.dst_key[0] == POLICY_TABLE


def test_last_vxlan_peer_leaving_takes_its_node_route_and_the_rule() -> None:
    before = plan_node(nodes(N1, N2, N3), "n1", Backend.AUTO, LAN)
    after = plan_node(nodes(N1, N2), "n1", Backend.AUTO, LAN)
    assert before.rule == OWN_RULE and before.peer_node_routes
    assert after.rule is None and after.peer_node_routes == frozenset()


def test_a_peer_changing_its_pod_cidr_moves_the_node_route_gateway() -> None:
    moved = node("n3", "192.168.70.13", "10.244.33.0/24")
    plan = plan_node(nodes(N1, moved), "n1", Backend.AUTO, LAN)
    assert set(plan.peer_node_routes) == {peer_node("192.168.70.13", "10.244.33.0")}


def test_own_pod_cidr_change_moves_the_rule() -> None:
    own = node("n1", "192.168.50.11", "10.244.11.0/24")
    plan = plan_node(nodes(own, N3), "n1", Backend.AUTO, LAN)
    assert plan.rule == PolicyRule(IPv4Network("10.244.11.0/24"))


def test_without_vxlan_keeps_host_gw_routes_only() -> None:
    plan = plan_node(nodes(N1, N2, N3), "n1", Backend.AUTO, LAN).without_vxlan()
    assert set(plan.routes) == {host_gw("10.244.2.0/24", "192.168.50.12")}
    assert (plan.vxlan_peers, plan.peer_node_routes, plan.rule) == (frozenset(), frozenset(), None)


def test_policy_table_and_rule_priority_stay_clear_of_the_kernel_and_main() -> None:
    assert POLICY_TABLE not in (0, 253, 254, 255) and POLICY_TABLE > 255
    assert 0 < POLICY_RULE_PRIORITY < 32766
