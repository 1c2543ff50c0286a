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
        [ack],  # delete 10.244.9.0/24
        [fails(errno.ESRCH)],  # delete 10.244.8.0/24: gone meanwhile, what we wanted
        [fails(errno.EEXIST)],  # add 10.244.3.0/24: a foreign route is in the way
        [ack],  # replace 10.244.2.0/24
        [ack],  # replace the peer node route
    )
    result = RouteApplier(Rtnl(sock)).reconcile(DESIRED, VX, VXLAN_DEVICE)
    # The dump, then one datagram each for the deletes, the add and the replaces.
    assert sock.datagrams == 4
    assert sock.sent_types() == [
        wire.RTM_GETROUTE,
        *[wire.RTM_DELROUTE] * 2,
        *[wire.RTM_NEWROUTE] * 3,
    ]
    main, policy = result.counts(MAIN_TABLE), result.counts(POLICY_TABLE)
    assert (main.added, main.replaced, main.deleted, main.total) == (0, 1, 2, 1)
    assert (policy.added, policy.replaced, policy.deleted, policy.total) == (0, 1, 0, 1)
    [failure] = result.failures
    assert failure.item == DESIRED[1] and failure.reason == str((errno.EEXIST, "File exists"))
    add = sock.sent_message(3, rtmsg)
    assert sock.sent_flags(3) & wire.CREATE_NEW == wire.CREATE_NEW
    assert (add.get_attr("RTA_OIF"), add["flags"], add.get_attr("RTA_PREFSRC")) == (
        VX,
        wire.RTNH_F_ONLINK,
        str(SRC),
    )
    delete = sock.sent_message(1, rtmsg)
    assert (delete.get_attr("RTA_DST"), delete["proto"], delete["type"]) == (
        "10.244.9.0",
        ROUTE_PROTOCOL,
        0,
    )
    assert sock.sent_flags(4) & wire.NLM_F_REPLACE


def test_nothing_to_change_is_one_dump() -> None:
    def in_place(seq: int) -> bytes:
        return route_reply(
            seq, "10.244.2.0/24", "192.168.50.12", proto=ROUTE_PROTOCOL, oif=2
        ) + done(seq)

    sock = ScriptedSocket([in_place])
    result = RouteApplier(Rtnl(sock)).reconcile(DESIRED[:1], VX, VXLAN_DEVICE)
    assert sock.sent_types() == [wire.RTM_GETROUTE]
    assert result.counts(MAIN_TABLE).total == 1 and not result.failures
