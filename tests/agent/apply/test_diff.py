"""Diffing the kernel's routes and VXLAN entries against the plan (no kernel needed)."""

from ipaddress import IPv4Address, IPv4Network

from minicni.agent.apply.routes import diff_routes
from minicni.agent.apply.vxlan import diff_peers
from minicni.agent.model.plan import POLICY_TABLE, VXLAN_DEVICE, Route, VxlanPeer
from minicni.net.neighbours import KernelNeighbour
from minicni.net.routes import KernelRoute
from minicni.net.wire import AF_BRIDGE, NUD_PERMANENT

VX = 7  # ifindex of the VXLAN device in these tests
SRC = IPv4Address("192.168.50.11")


def kroute(
    dst: str,
    gw: str,
    oif: int = 2,
    onlink: bool = False,
    priority: int = 0,
    prefsrc: IPv4Address | None = None,
) -> KernelRoute:
    return KernelRoute(IPv4Network(dst), IPv4Address(gw), oif, onlink, priority, prefsrc)


def route(dst: str, gw: str, vxlan: bool = False) -> Route:
    if vxlan:
        return Route(IPv4Network(dst), IPv4Address(gw), VXLAN_DEVICE, SRC)
    return Route(IPv4Network(dst), IPv4Address(gw))


def test_nothing_to_do_when_kernel_matches() -> None:
    current = [
        kroute("10.244.2.0/24", "192.168.50.12"),
        kroute("10.244.3.0/24", "10.244.3.0", VX, True, prefsrc=SRC),
    ]
    desired = [route("10.244.2.0/24", "192.168.50.12"), route("10.244.3.0/24", "10.244.3.0", True)]
    assert not diff_routes(current, desired, {VXLAN_DEVICE: VX})


def test_missing_are_added_stale_deleted_wrong_gateway_replaced() -> None:
    current = [
        kroute("10.244.2.0/24", "192.168.50.99"),  # wrong gateway
        kroute("10.244.9.0/24", "192.168.50.19"),  # node left
    ]
    desired = [route("10.244.2.0/24", "192.168.50.12"), route("10.244.3.0/24", "192.168.50.13")]
    changes = diff_routes(current, desired, {VXLAN_DEVICE: VX})
    assert changes.add == (route("10.244.3.0/24", "192.168.50.13"),)
    assert changes.replace == (route("10.244.2.0/24", "192.168.50.12"),)
    assert [r.dst for r in changes.delete] == [IPv4Network("10.244.9.0/24")]


def test_backend_switch_is_a_replace() -> None:
    current = [kroute("10.244.2.0/24", "192.168.50.12")]
    changes = diff_routes(current, [route("10.244.2.0/24", "10.244.2.0", True)], {VXLAN_DEVICE: VX})
    assert changes.replace == (route("10.244.2.0/24", "10.244.2.0", True),)


def test_our_routes_we_would_never_make_are_deleted_and_re_added() -> None:
    current = [
        kroute("10.244.2.0/24", "192.168.50.12", priority=100),
        kroute("10.244.3.0/24", "10.244.3.0", VX, onlink=False),
    ]
    desired = [route("10.244.2.0/24", "192.168.50.12"), route("10.244.3.0/24", "10.244.3.0", True)]
    changes = diff_routes(current, desired, {VXLAN_DEVICE: VX})
    assert len(changes.delete) == 2
    assert set(changes.add) == set(desired)


def neighbour(dst: str, mac: str, state: int = NUD_PERMANENT) -> KernelNeighbour:
    return KernelNeighbour(VX, IPv4Address(dst), mac, state)


PEER = VxlanPeer(IPv4Address("192.168.70.13"), IPv4Address("10.244.3.0"), "0e:6d:c0:a8:46:0d")


def test_peers_in_place_need_nothing() -> None:
    changes = diff_peers(
        [PEER],
        [neighbour("192.168.70.13", PEER.vtep_mac)],
        [neighbour("10.244.3.0", PEER.vtep_mac)],
    )
    assert changes.fdb_upsert == changes.neigh_upsert == ()
    assert changes.fdb_delete == changes.neigh_delete == ()


def test_new_peer_is_upserted_and_departed_one_deleted() -> None:
    gone_fdb = neighbour("192.168.70.14", "0e:6d:c0:a8:46:0e")
    gone_neigh = neighbour("10.244.4.0", "0e:6d:c0:a8:46:0e")
    changes = diff_peers([PEER], [gone_fdb], [gone_neigh])
    assert changes.fdb_upsert == changes.neigh_upsert == (PEER,)
    assert changes.fdb_delete == (gone_fdb,)
    assert changes.neigh_delete == (gone_neigh,)


def test_wrong_or_learned_entries_are_corrected() -> None:
    moved = neighbour("192.168.70.99", PEER.vtep_mac)  # the MAC now points at another node IP
    learned = neighbour("10.244.3.0", PEER.vtep_mac, state=0x02)  # NUD_REACHABLE, not permanent
    changes = diff_peers([PEER], [moved], [learned])
    assert changes.fdb_upsert == (PEER,)
    assert changes.fdb_delete == (moved,)
    assert changes.neigh_upsert == (PEER,)
    assert changes.neigh_delete == ()


def test_fdb_family_constant_is_af_bridge() -> None:
    assert AF_BRIDGE == 7


# -- our policy table beside the main table ------------------------------------------------


def node_route(ip: str, vtep: str) -> Route:
    return Route(IPv4Network(f"{ip}/32"), IPv4Address(vtep), VXLAN_DEVICE, table=POLICY_TABLE)


def test_routes_in_both_tables_in_place_need_nothing() -> None:
    current = [
        kroute("10.244.3.0/24", "10.244.3.0", VX, True, prefsrc=SRC),
        KernelRoute(
            IPv4Network("192.168.70.13/32"), IPv4Address("10.244.3.0"), VX, True, 0, None,
            POLICY_TABLE,
        ),
    ]  # fmt: skip
    desired = [
        route("10.244.3.0/24", "10.244.3.0", True),
        node_route("192.168.70.13", "10.244.3.0"),
    ]
    assert not diff_routes(current, desired, {VXLAN_DEVICE: VX})


def test_a_destination_is_diffed_per_table() -> None:
    """The same destination in the main table does not stand in for ours, nor the other way."""
    in_main = kroute("192.168.70.13/32", "10.244.3.0", VX, True)
    changes = diff_routes(
        [in_main], [node_route("192.168.70.13", "10.244.3.0")], {VXLAN_DEVICE: VX}
    )
    assert changes.add == (node_route("192.168.70.13", "10.244.3.0"),)
    assert changes.delete == (in_main,)


def test_stale_and_moved_node_routes_in_our_table() -> None:
    def ours(ip: str, vtep: str, onlink: bool = True) -> KernelRoute:
        return KernelRoute(
            IPv4Network(f"{ip}/32"), IPv4Address(vtep), VX, onlink, 0, None, POLICY_TABLE
        )

    left = ours("192.168.70.14", "10.244.4.0")
    moved = ours("192.168.70.13", "10.244.3.0")  # the peer's podCIDR is now 10.244.33.0/24
    changes = diff_routes([left, moved], [node_route("192.168.70.13", "10.244.33.0")],
                          {VXLAN_DEVICE: VX})  # fmt: skip
    assert changes.delete == (left,)
    assert changes.replace == (node_route("192.168.70.13", "10.244.33.0"),)
    assert changes.add == ()


def test_the_kernels_multicast_entries_on_the_device_are_not_peers() -> None:
    from ipaddress import IPv6Address

    mld = KernelNeighbour(VX, IPv6Address("ff02::16"), "33:33:00:00:00:16", 0x40)  # NUD_NOARP
    assert diff_peers([], [], [mld]).neigh_delete == ()


def test_an_ipv6_route_in_place_has_the_kernels_ipv6_metric() -> None:
    from ipaddress import IPv6Address, IPv6Network

    dst, via = IPv6Network("fd00:10:244:2::/64"), IPv6Address("fd00:50::12")
    in_place = KernelRoute(dst, via, 2, False, 1024)
    assert not diff_routes([in_place], [Route(dst, via)], {})
    other_metric = KernelRoute(dst, via, 2, False, 100)  # not one we would make: replaced
    changes = diff_routes([other_metric], [Route(dst, via)], {})
    assert (changes.add, changes.delete) == ((Route(dst, via),), (other_metric,))
