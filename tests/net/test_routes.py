"""Routes without a kernel: the typed dump decoded from scripted replies (what both programs diff
against), the requests that change routes decoded back with pyroute2, and the plugin's queries."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.net import routes, wire
from minicni.net.routes import KernelRoute
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, route_reply

OURS = 109
POLICY = 28003


def routes_of_a_node(seq: int) -> bytes:
    return (
        route_reply(seq, "0.0.0.0/0", "192.168.50.1", oif=2)
        + route_reply(seq, "192.168.50.0/24", None, proto=2, oif=2)  # kernel: not ours
        + route_reply(seq, "10.244.2.0/24", "192.168.50.12", proto=OURS, oif=2)
        + route_reply(
            seq,
            "10.244.3.0/24",
            "10.244.3.0",
            proto=OURS,
            oif=7,
            prefsrc="192.168.50.11",
            flags=wire.RTNH_F_ONLINK,
        )
        + route_reply(seq, "192.168.60.13/32", "10.244.3.0", proto=OURS, table=POLICY, oif=7)
        + route_reply(seq, "10.244.9.0/24", "192.168.50.19", proto=OURS, priority=100, oif=2)
        + route_reply(seq, "127.0.0.0/8", None, table=255, proto=2, oif=1)  # local table
        + done(seq)
    )


def test_the_dump_reads_our_routes_of_both_tables() -> None:
    sock = ScriptedSocket([routes_of_a_node])
    dumped = routes.dump_routes(Rtnl(sock), protocol=OURS, tables=(254, POLICY))
    assert [(str(r.dst), r.table) for r in dumped] == [
        ("10.244.2.0/24", 254),
        ("10.244.3.0/24", 254),
        ("192.168.60.13/32", POLICY),
        ("10.244.9.0/24", 254),
    ]
    host_gw, vxlan, peer_node, stale = dumped
    assert host_gw == KernelRoute(
        IPv4Network("10.244.2.0/24"), IPv4Address("192.168.50.12"), 2, False, 0
    )
    assert (vxlan.oif, vxlan.onlink, vxlan.prefsrc) == (7, True, IPv4Address("192.168.50.11"))
    assert peer_node.dst_key == (POLICY, 4, int(IPv4Address("192.168.60.13")), 32)
    assert stale.priority == 100
    # Two tables: the request names none, so the kernel filters by protocol only.
    request = sock.sent_message(0, rtmsg)
    assert (request["family"], request["table"], request["proto"]) == (wire.AF_INET, 0, OURS)


def test_a_dump_of_one_table_asks_the_kernel_for_that_table_only() -> None:
    sock = ScriptedSocket([routes_of_a_node])
    dumped = routes.dump_routes(Rtnl(sock))
    assert [str(r.dst) for r in dumped] == [
        "0.0.0.0/0",
        "192.168.50.0/24",
        "10.244.2.0/24",
        "10.244.3.0/24",
        "10.244.9.0/24",
    ]
    request = sock.sent_message(0, rtmsg)
    assert (request["table"], request["proto"]) == (254, 0)


def test_other_families_are_left_out() -> None:
    def mixed(seq: int) -> bytes:
        return (
            route_reply(seq, "fd00::/64", "fd00::1", family=wire.AF_INET6, oif=2)
            + route_reply(seq, "10.0.0.0/8", "10.0.0.1", oif=2)
            + done(seq)
        )

    assert [str(r.dst) for r in routes.dump_routes(Rtnl(ScriptedSocket([mixed])))] == ["10.0.0.0/8"]
    six = routes.dump_routes(Rtnl(ScriptedSocket([mixed])), family=wire.AF_INET6)
    assert [r.dst for r in six] == [IPv6Network("fd00::/64")]


def test_a_dump_the_kernel_refuses_raises() -> None:
    sock = ScriptedSocket([lambda seq: done(seq, errno.EINVAL)])
    with pytest.raises(NetlinkError):
        routes.dump_routes(Rtnl(sock))


def test_a_route_request_carries_every_field_the_agent_sets() -> None:
    msg = routes.route_request(
        IPv4Network("10.244.3.0/24"),
        IPv4Address("10.244.3.0"),
        table=POLICY,
        protocol=OURS,
        oif=7,
        onlink=True,
        prefsrc=IPv4Address("192.168.50.11"),
    )
    sock = ScriptedSocket([ack])
    Rtnl(sock).request(msg, wire.RTM_NEWROUTE, wire.CREATE_NEW)
    sent = sock.sent_message(0, rtmsg)
    assert (sent["family"], sent["dst_len"], sent["proto"], sent["type"]) == (2, 24, OURS, 1)
    assert (sent["table"], sent.get_attr("RTA_TABLE")) == (wire.RT_TABLE_COMPAT, POLICY)
    assert sent["flags"] == wire.RTNH_F_ONLINK
    assert sent.get_attr("RTA_DST") == "10.244.3.0"
    assert sent.get_attr("RTA_GATEWAY") == "10.244.3.0"
    assert sent.get_attr("RTA_OIF") == 7
    assert sent.get_attr("RTA_PREFSRC") == "192.168.50.11"


def test_a_main_table_route_has_no_table_attribute_and_a_delete_names_its_priority() -> None:
    msg = routes.route_request(
        IPv4Network("10.244.2.0/24"),
        IPv4Address("192.168.50.12"),
        table=254,
        protocol=OURS,
        priority=0,
        route_type=0,
    )
    sock = ScriptedSocket([ack])
    Rtnl(sock).request(msg, wire.RTM_DELROUTE)
    sent = sock.sent_message(0, rtmsg)
    assert sent["table"] == 254 and sent.get_attr("RTA_TABLE") is None
    assert sent.get_attr("RTA_PRIORITY") == 0 and sent["type"] == 0


def test_has_route_finds_the_pods_routes() -> None:
    def pod(seq: int) -> bytes:
        return (
            route_reply(seq, "0.0.0.0/0", "10.1.0.1", oif=2)
            + route_reply(seq, "10.1.0.0/24", None, proto=2, oif=2)
            + done(seq)
        )

    assert routes.has_route(Rtnl(ScriptedSocket([pod])), "0.0.0.0/0", "10.1.0.1")
    assert routes.has_route(Rtnl(ScriptedSocket([pod])), "10.1.0.0/24", None)
    assert not routes.has_route(Rtnl(ScriptedSocket([pod])), "0.0.0.0/0", "10.1.0.254")
    assert not routes.has_route(Rtnl(ScriptedSocket([pod])), "10.2.0.0/24", None)


def test_the_default_route_names_its_interface() -> None:
    sock = ScriptedSocket([routes_of_a_node])
    assert routes.default_route_ifindex(Rtnl(sock)) == 2
    assert routes.default_route_ifindex(Rtnl(ScriptedSocket([done], [done]))) is None


def test_an_ipv6_only_node_has_its_ipv6_default_route_interface() -> None:
    def ipv6_default(seq: int) -> bytes:
        return route_reply(seq, "::/0", "fd00:50::1", family=wire.AF_INET6, oif=3) + done(seq)

    sock = ScriptedSocket([done], [ipv6_default])
    assert routes.default_route_ifindex(Rtnl(sock)) == 3
    assert sock.sent_message(1, rtmsg)["family"] == wire.AF_INET6


def test_a_table_without_a_route_dumps_empty_on_a_strict_socket() -> None:
    """The kernel answers a strict dump of a table that does not exist yet with ENOENT."""
    sock = ScriptedSocket([fails(errno.ENOENT)])
    assert routes.dump_routes(Rtnl(sock)) == []
