"""The route applier against a scripted kernel: one dump of our routes, then batches — deletes
first, adds, replaces — and each failure reported with the kernel's reason."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Network

from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.agent.apply.routes import RouteApplier
from minicni.agent.model.plan import MAIN_TABLE, POLICY_TABLE, VXLAN_DEVICE, Route
from minicni.defaults import ROUTE_PROTOCOL
from minicni.net import wire
from minicni.net.rtnl import Rtnl
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, route_reply

VX = 7
SRC = IPv4Address("192.168.50.11")


def ours(seq: int) -> bytes:
    return (
        route_reply(seq, "10.244.2.0/24", "192.168.50.99", proto=ROUTE_PROTOCOL, oif=2)  # wrong gw
        + route_reply(seq, "10.244.9.0/24", "192.168.50.19", proto=ROUTE_PROTOCOL, oif=2)  # left
        + route_reply(seq, "10.244.8.0/24", "192.168.50.18", proto=ROUTE_PROTOCOL, oif=2)  # left
        + route_reply(  # a peer node route through an old VTEP
            seq,
            "192.168.60.13/32",
            "10.244.4.0",
            proto=ROUTE_PROTOCOL,
            table=POLICY_TABLE,
            oif=VX,
            flags=wire.RTNH_F_ONLINK,
        )
        + done(seq)
    )


DESIRED = [
    Route(IPv4Network("10.244.2.0/24"), IPv4Address("192.168.50.12")),
    Route(IPv4Network("10.244.3.0/24"), IPv4Address("10.244.3.0"), VXLAN_DEVICE, SRC),
    Route(
        IPv4Network("192.168.60.13/32"),
        IPv4Address("10.244.3.0"),
        VXLAN_DEVICE,
        table=POLICY_TABLE,
    ),
]


def test_a_pass_deletes_adds_and_replaces_in_batches_and_counts_per_table() -> None:
    sock = ScriptedSocket(
        [ours],
        [done],  # the IPv6 dump: none of ours
        [ack],  # delete 10.244.9.0/24
        [fails(errno.ESRCH)],  # delete 10.244.8.0/24: gone meanwhile, what we wanted
        [fails(errno.EEXIST)],  # add 10.244.3.0/24: a foreign route is in the way
        [ack],  # replace 10.244.2.0/24
        [ack],  # replace the peer node route
    )
    result = RouteApplier(Rtnl(sock)).reconcile(DESIRED, {VXLAN_DEVICE: VX})
    # The dumps, then one datagram each for the deletes, the add and the replaces.
    assert sock.datagrams == 5
    assert sock.sent_types() == [
        *[wire.RTM_GETROUTE] * 2,
        *[wire.RTM_DELROUTE] * 2,
        *[wire.RTM_NEWROUTE] * 3,
    ]
    main, policy = result.counts(MAIN_TABLE), result.counts(POLICY_TABLE)
    assert (main.added, main.replaced, main.deleted, main.total) == (0, 1, 2, 1)
    assert (policy.added, policy.replaced, policy.deleted, policy.total) == (0, 1, 0, 1)
    [failure] = result.failures
    assert failure.item == DESIRED[1] and failure.reason == str((errno.EEXIST, "File exists"))
    add = sock.sent_message(4, rtmsg)
    assert sock.sent_flags(4) & wire.CREATE_NEW == wire.CREATE_NEW
    assert (add.get_attr("RTA_OIF"), add["flags"], add.get_attr("RTA_PREFSRC")) == (
        VX,
        wire.RTNH_F_ONLINK,
        str(SRC),
    )
    delete = sock.sent_message(2, rtmsg)
    assert (delete.get_attr("RTA_DST"), delete["proto"], delete["type"]) == (
        "10.244.9.0",
        ROUTE_PROTOCOL,
        0,
    )
    assert sock.sent_flags(5) & wire.NLM_F_REPLACE


def test_nothing_to_change_is_one_dump_per_family() -> None:
    def in_place(seq: int) -> bytes:
        return route_reply(
            seq, "10.244.2.0/24", "192.168.50.12", proto=ROUTE_PROTOCOL, oif=2
        ) + done(seq)

    sock = ScriptedSocket([in_place], [done])
    result = RouteApplier(Rtnl(sock)).reconcile(DESIRED[:1], {VXLAN_DEVICE: VX})
    assert sock.sent_types() == [wire.RTM_GETROUTE] * 2
    assert [sock.sent_message(i, rtmsg)["family"] for i in (0, 1)] == [wire.AF_INET, wire.AF_INET6]
    assert result.counts(MAIN_TABLE).total == 1 and not result.failures


def test_an_ipv6_route_goes_through_its_own_device_and_a_stale_one_goes() -> None:
    from ipaddress import IPv6Address, IPv6Network

    from minicni.agent.model.plan import VXLAN_DEVICE6

    def ours6(seq: int) -> bytes:
        return route_reply(
            seq, "fd00:10:244:9::/64", "fd00:50::19", proto=ROUTE_PROTOCOL, oif=2, family=10
        ) + done(seq)

    vx6 = 8
    wanted = Route(
        IPv6Network("fd00:10:244:3::/64"),
        IPv6Address("fd00:10:244:3::"),
        VXLAN_DEVICE6,
        IPv6Address("fd00:50::11"),
    )
    sock = ScriptedSocket([done], [ours6], [ack], [ack])
    result = RouteApplier(Rtnl(sock)).reconcile([wanted], {VXLAN_DEVICE: VX, VXLAN_DEVICE6: vx6})
    assert sock.sent_types() == [*[wire.RTM_GETROUTE] * 2, wire.RTM_DELROUTE, wire.RTM_NEWROUTE]
    delete, add = sock.sent_message(2, rtmsg), sock.sent_message(3, rtmsg)
    assert (delete["family"], delete.get_attr("RTA_DST")) == (wire.AF_INET6, "fd00:10:244:9::")
    assert (add["family"], add.get_attr("RTA_OIF"), add.get_attr("RTA_GATEWAY")) == (
        wire.AF_INET6,
        vx6,
        "fd00:10:244:3::",
    )
    assert add.get_attr("RTA_PREFSRC") == "fd00:50::11" and add["flags"] == wire.RTNH_F_ONLINK
    counts = result.counts(MAIN_TABLE)
    assert (counts.added, counts.deleted, counts.total) == (1, 1, 1)
