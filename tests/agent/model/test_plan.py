"""Planning is pure: table tests for join, leave, podCIDR change, same-subnet vs routed peers."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest

from minicni.agent.model.nodes import Node
from minicni.agent.model.plan import (
    MAIN_TABLE,
    POLICY_RULE_PRIORITY,
    POLICY_TABLE,
    VXLAN_DEVICE,
    VXLAN_DEVICE6,
    Backend,
    PolicyRule,
    Route,
    VxlanPeer,
    plan_node,
    pod_mtu,
    tunnel_versions,
    vtep_mac,
    vxlan_device,
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
    assert plan.rules == (frozenset({rule}) if rule else frozenset())
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
    assert before.rules == {OWN_RULE} and before.peer_node_routes
    assert after.rules == frozenset() and after.peer_node_routes == frozenset()


def test_a_peer_changing_its_pod_cidr_moves_the_node_route_gateway() -> None:
    moved = node("n3", "192.168.70.13", "10.244.33.0/24")
    plan = plan_node(nodes(N1, moved), "n1", Backend.AUTO, LAN)
    assert set(plan.peer_node_routes) == {peer_node("192.168.70.13", "10.244.33.0")}


def test_own_pod_cidr_change_moves_the_rule() -> None:
    own = node("n1", "192.168.50.11", "10.244.11.0/24")
    plan = plan_node(nodes(own, N3), "n1", Backend.AUTO, LAN)
    assert plan.rules == {PolicyRule(IPv4Network("10.244.11.0/24"))}


def test_without_vxlan_keeps_host_gw_routes_only() -> None:
    plan = plan_node(nodes(N1, N2, N3), "n1", Backend.AUTO, LAN).without_vxlan()
    assert set(plan.routes) == {host_gw("10.244.2.0/24", "192.168.50.12")}
    assert (plan.vxlan_peers, plan.peer_node_routes, plan.rules) == (frozenset(),) * 3


def test_policy_table_and_rule_priority_stay_clear_of_the_kernel_and_main() -> None:
    assert POLICY_TABLE not in (0, 253, 254, 255) and POLICY_TABLE > 255
    assert 0 < POLICY_RULE_PRIORITY < 32766


# -- dual-stack and IPv6 -----------------------------------------------------------------------
LAN6 = [*LAN, IPv6Network("fd00:50::/64")]


def dual(name: str, index: int, ip4: str | None, ip6: str | None) -> Node:
    return Node(
        name,
        IPv4Address(ip4) if ip4 else None,
        IPv4Network(f"10.244.{index}.0/24"),
        IPv6Address(ip6) if ip6 else None,
        IPv6Network(f"fd00:10:244:{index}::/64"),
    )


D1 = dual("n1", 1, "192.168.50.11", "fd00:50::11")
D2 = dual("n2", 2, "192.168.50.12", "fd00:50::12")
D3 = dual("n3", 3, "192.168.70.13", "fd00:70::13")  # routed, in both families
V4_UNDERLAY_1 = dual("n1", 1, "192.168.50.11", None)
V4_UNDERLAY_2 = dual("n2", 2, "192.168.50.12", None)
V4_UNDERLAY_3 = dual("n3", 3, "192.168.70.13", None)


def r(dst: str, via: str, device: str | None = None, src: str | None = None) -> Route:
    return Route(ip_network(dst), ip_address(via), device, ip_address(src) if src else None)


def test_a_dual_stack_peer_on_the_segment_gets_a_host_gw_route_per_family() -> None:
    for backend in (Backend.AUTO, Backend.HOST_GW):
        plan = plan_node(nodes(D1, D2), "n1", backend, LAN6)
        assert set(plan.routes) == {
            r("10.244.2.0/24", "192.168.50.12"),
            r("fd00:10:244:2::/64", "fd00:50::12"),
        }
        assert (plan.vxlan_peers, plan.rules, plan.unroutable) == (frozenset(), frozenset(), ())


def test_each_family_tunnels_over_the_underlay_of_its_own_family() -> None:
    plan = plan_node(nodes(D1, D3), "n1", Backend.AUTO, LAN6)
    assert set(plan.routes) == {
        r("10.244.3.0/24", "10.244.3.0", VXLAN_DEVICE, "192.168.50.11"),
        r("fd00:10:244:3::/64", "fd00:10:244:3::", VXLAN_DEVICE6, "fd00:50::11"),
    }
    assert plan.vxlan_peers == {
        VxlanPeer(IPv4Address("192.168.70.13"), IPv4Address("10.244.3.0"),
                  vtep_mac(IPv4Address("192.168.70.13")), VXLAN_DEVICE),
        VxlanPeer(IPv6Address("fd00:70::13"), IPv6Address("fd00:10:244:3::"),
                  vtep_mac(IPv6Address("fd00:70::13")), VXLAN_DEVICE6),
    }  # fmt: skip
    assert plan.devices() == {VXLAN_DEVICE, VXLAN_DEVICE6}
    assert {(route.dst, route.device) for route in plan.peer_node_routes} == {
        (IPv4Network("192.168.70.13/32"), VXLAN_DEVICE),
        (IPv6Network("fd00:70::13/128"), VXLAN_DEVICE6),
    }
    assert plan.rules == {
        PolicyRule(IPv4Network("10.244.1.0/24")),
        PolicyRule(IPv6Network("fd00:10:244:1::/64")),
    }


def test_ipv6_pods_over_an_ipv4_underlay_ride_the_ipv4_tunnel() -> None:
    members = nodes(V4_UNDERLAY_1, V4_UNDERLAY_2, V4_UNDERLAY_3)
    plan = plan_node(members, "n1", Backend.AUTO, LAN)
    assert set(plan.routes) == {
        r("10.244.2.0/24", "192.168.50.12"),  # IPv4 on the segment: host-gw
        r("fd00:10:244:2::/64", "fd00:10:244:2::", VXLAN_DEVICE),  # no IPv6 underlay: tunnel
        r("10.244.3.0/24", "10.244.3.0", VXLAN_DEVICE, "192.168.50.11"),
        r("fd00:10:244:3::/64", "fd00:10:244:3::", VXLAN_DEVICE),
    }
    # one MAC per peer on the device, whose VTEP answers to both of its addresses
    macs = {(p.vtep_ip, p.vtep_mac, p.node_ip) for p in plan.vxlan_peers}
    mac2 = vtep_mac(IPv4Address("192.168.50.12"))
    assert (IPv6Address("fd00:10:244:2::"), mac2, IPv4Address("192.168.50.12")) in macs
    assert plan.devices() == {VXLAN_DEVICE}
    # no IPv6 node address to reach through the tunnel: only IPv4's rule
    assert plan.rules == {PolicyRule(IPv4Network("10.244.1.0/24"))}
    assert all(route.dst.version == 4 for route in plan.peer_node_routes)


def test_host_gw_cannot_route_a_family_the_underlay_lacks_and_says_so() -> None:
    plan = plan_node(nodes(V4_UNDERLAY_1, V4_UNDERLAY_2), "n1", Backend.HOST_GW, LAN)
    assert set(plan.routes) == {r("10.244.2.0/24", "192.168.50.12")}
    (message,) = plan.unroutable
    assert "'n2' has no IPv6 address" in message and "fd00:10:244:2::/64" in message


def test_an_ipv6_only_cluster_tunnels_over_the_ipv6_underlay() -> None:
    six1 = Node("n1", None, None, IPv6Address("fd00:50::11"), IPv6Network("fd00:10:244:1::/64"))
    six3 = Node("n3", None, None, IPv6Address("fd00:70::13"), IPv6Network("fd00:10:244:3::/64"))
    plan = plan_node(nodes(six1, six3), "n1", Backend.AUTO, LAN6)
    assert set(plan.routes) == {
        r("fd00:10:244:3::/64", "fd00:10:244:3::", VXLAN_DEVICE6, "fd00:50::11")
    }
    assert plan.devices() == {VXLAN_DEVICE6}
    assert plan.rules == {PolicyRule(IPv6Network("fd00:10:244:1::/64"))}


def test_ipv4_pods_over_an_ipv6_underlay_ride_the_ipv6_tunnel() -> None:
    four1 = Node("n1", None, IPv4Network("10.244.1.0/24"), IPv6Address("fd00:50::11"))
    four2 = Node("n2", None, IPv4Network("10.244.2.0/24"), IPv6Address("fd00:50::12"))
    plan = plan_node(nodes(four1, four2), "n1", Backend.AUTO, LAN6)
    assert set(plan.routes) == {r("10.244.2.0/24", "10.244.2.0", VXLAN_DEVICE6)}


def test_a_lost_device_takes_its_routes_and_the_rule_of_a_family_left_without_peers() -> None:
    plan = plan_node(nodes(D1, D3), "n1", Backend.AUTO, LAN6).without_vxlan([VXLAN_DEVICE6])
    assert {route.device for route in plan.all_routes()} == {VXLAN_DEVICE}
    assert plan.rules == {PolicyRule(IPv4Network("10.244.1.0/24"))}


def test_ipv6_vtep_macs_are_derived_distinct_unicast_and_local() -> None:
    first = vtep_mac(IPv6Address("fd00:172:30:1::2"))
    second = vtep_mac(IPv6Address("fd00:172:30:2::2"))  # the same last 32 bits
    assert first != second and first == vtep_mac(IPv6Address("fd00:172:30:1::2"))
    octet = int(first[:2], 16)
    assert octet & 0x02 and not octet & 0x01  # locally administered, unicast
    assert vxlan_device(6) == VXLAN_DEVICE6 and vxlan_device(4) == VXLAN_DEVICE


def test_the_pod_mtu_leaves_room_for_the_ipv6_tunnel_headers_when_one_may_carry_pods() -> None:
    assert pod_mtu(1500, Backend.AUTO, tunnel_versions(D1, (4, 6))) == 1430
    assert pod_mtu(1500, Backend.AUTO, tunnel_versions(V4_UNDERLAY_1, (4, 6))) == 1450
    assert pod_mtu(1500, Backend.AUTO, tunnel_versions(D1, (4,))) == 1450  # IPv4 pods: IPv4
    assert pod_mtu(1500, Backend.HOST_GW, tunnel_versions(D1, (4, 6))) == 1500
