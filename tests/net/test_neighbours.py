"""Neighbour and FDB entries without a kernel: the typed dump of one link's entries, and the
requests the agent sends for its VXLAN peers, decoded back with pyroute2."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address

import pytest
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from minicni.net import neighbours, wire
from minicni.net.neighbours import KernelNeighbour
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, neighbour_reply

MAC = "0e:6d:c0:a8:32:0c"


def entries(seq: int) -> bytes:
    return (
        neighbour_reply(seq, wire.AF_BRIDGE, 7, "192.168.50.12", MAC)
        + neighbour_reply(seq, wire.AF_BRIDGE, 3, "192.168.50.99", "02:00:00:00:00:01")
        + neighbour_reply(seq, wire.AF_INET, 7, "10.244.2.0", MAC, state=0x02)
        + done(seq)
    )


def test_the_dump_keeps_the_entries_of_one_link_and_family() -> None:
    fdb = neighbours.dump_neighbours(Rtnl(ScriptedSocket([entries])), wire.AF_BRIDGE, 7)
    assert fdb == [KernelNeighbour(7, IPv4Address("192.168.50.12"), MAC, wire.NUD_PERMANENT)]
    [neighbour] = neighbours.dump_neighbours(Rtnl(ScriptedSocket([entries])), wire.AF_INET, 7)
    assert (neighbour.dst, neighbour.lladdr, neighbour.state) == (
        IPv4Address("10.244.2.0"),
        MAC,
        0x02,  # NUD_REACHABLE: learnt, not ours
    )


def test_a_link_that_is_gone_has_no_entries() -> None:
    sock = ScriptedSocket([lambda seq: done(seq, errno.ENODEV)])
    assert neighbours.dump_neighbours(Rtnl(sock), wire.AF_BRIDGE, 7) == []
    sock = ScriptedSocket([lambda seq: done(seq, errno.EPERM)])
    with pytest.raises(NetlinkError):
        neighbours.dump_neighbours(Rtnl(sock), wire.AF_BRIDGE, 7)


@pytest.mark.parametrize(("family", "flags"), [(wire.AF_BRIDGE, wire.NTF_SELF), (wire.AF_INET, 0)])
def test_an_entry_request_is_permanent(family: int, flags: int) -> None:
    request = neighbours.neighbour_request(family, 7, IPv4Address("192.168.50.12"), MAC)
    sock = ScriptedSocket([ack])
    Rtnl(sock).request(request, wire.RTM_NEWNEIGH, wire.CREATE_OR_REPLACE)
    sent = sock.sent_message(0, ndmsg)
    assert (sent["family"], sent["ifindex"], sent["state"], sent["flags"]) == (
        family,
        7,
        wire.NUD_PERMANENT,
        flags,
    )
    assert (sent.get_attr("NDA_DST"), sent.get_attr("NDA_LLADDR")) == ("192.168.50.12", MAC)


def test_a_delete_needs_no_mac() -> None:
    request = neighbours.neighbour_request(wire.AF_INET, 7, IPv4Address("10.244.2.0"))
    sock = ScriptedSocket([fails(errno.ENOENT)])
    with pytest.raises(NetlinkError):
        Rtnl(sock).request(request, wire.RTM_DELNEIGH)
    assert sock.sent_message(0, ndmsg).get_attr("NDA_LLADDR") is None
