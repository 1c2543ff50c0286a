"""Addresses without a kernel: the typed dump decoded from scripted replies, and what
`ensure_address` sends for each state of the link."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from minicni.net import addresses, wire
from minicni.net.addresses import KernelAddress
from minicni.net.rtnl import Rtnl
from tests.rtnl_fakes import ScriptedSocket, ack, address_reply, done, fails

CREATE_NEW = wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.CREATE_NEW


def three_addresses(seq: int) -> bytes:
    return (
        address_reply(seq, 4, "10.1.0.1", 24)
        + address_reply(seq, 4, "10.2.0.1", 24)
        + address_reply(seq, 5, "10.3.0.1", 24)  # another link's
        + done(seq)
    )


def test_the_dump_gives_each_address_with_its_subnet() -> None:
    sock = ScriptedSocket([three_addresses])
    dumped = addresses.dump_addresses(Rtnl(sock))
    assert dumped[0] == KernelAddress(4, IPv4Network("10.1.0.0/24"), IPv4Address("10.1.0.1"))
    assert [a.cidr for a in dumped] == ["10.1.0.1/24", "10.2.0.1/24", "10.3.0.1/24"]
    request = sock.sent_message(0, ifaddrmsg)
    assert request["family"] == wire.AF_INET
    assert sock.sent_flags(0) == wire.NLM_F_REQUEST | wire.NLM_F_DUMP


def test_an_ipv4_dump_leaves_other_families_out_and_check_sees_them_all() -> None:
    def mixed(seq: int) -> bytes:
        return (
            address_reply(seq, 2, "10.1.0.5", 24)
            + address_reply(seq, 2, "fe80::1", 64, family=wire.AF_INET6)
            + done(seq)
        )

    sock = ScriptedSocket([mixed], [mixed])
    assert [a.cidr for a in addresses.dump_addresses(Rtnl(sock))] == ["10.1.0.5/24"]
    assert addresses.interface_addresses(Rtnl(sock), 2) == {"10.1.0.5/24", "fe80::1/64"}
    assert sock.sent_message(1, ifaddrmsg)["family"] == wire.AF_UNSPEC
    every = addresses.dump_addresses(Rtnl(ScriptedSocket([mixed])), wire.AF_UNSPEC)
    assert IPv6Address("fe80::1") in {a.local for a in every}


def test_ensure_address_keeps_the_wanted_one_and_removes_other_subnets() -> None:
    sock = ScriptedSocket([three_addresses], [ack])
    changes = addresses.ensure_address(Rtnl(sock), 4, "10.2.0.1", 24)
    assert changes.removed == ["10.1.0.1/24"] and not changes.added
    assert sock.sent_types() == [wire.RTM_GETADDR, wire.RTM_DELADDR]
    removed = sock.sent_message(1, ifaddrmsg)
    assert (removed["index"], removed.get_attr("IFA_LOCAL"), removed["prefixlen"]) == (
        4,
        "10.1.0.1",
        24,
    )


def test_ensure_address_adds_a_missing_one() -> None:
    sock = ScriptedSocket([done], [ack])
    changes = addresses.ensure_address(Rtnl(sock), 4, "10.2.0.1", 24)
    assert changes.removed == [] and changes.added
    added = sock.sent_message(1, ifaddrmsg)
    assert sock.sent_flags(1) == CREATE_NEW
    assert (added.get_attr("IFA_LOCAL"), added.get_attr("IFA_ADDRESS")) == ("10.2.0.1", "10.2.0.1")


def test_an_address_added_meanwhile_by_another_add_is_fine() -> None:
    sock = ScriptedSocket([done], [fails(errno.EEXIST)])
    changes = addresses.ensure_address(Rtnl(sock), 4, "10.2.0.1", 24)
    assert not changes


def test_ensure_address_with_a_dump_in_hand_asks_nothing_when_all_is_right() -> None:
    sock = ScriptedSocket()
    present = [KernelAddress(7, IPv4Network("10.9.0.0/32"), IPv4Address("10.9.0.0"))]
    assert not addresses.ensure_address(Rtnl(sock), 7, "10.9.0.0", 32, present)
    assert sock.sent == []


def test_a_dump_for_one_link_asks_the_kernel_for_that_link_only() -> None:
    """On a strict socket the kernel filters by ifa_index; the decoder filters too, for sockets
    that are not strict (the fake here answers with every link's addresses)."""
    sock = ScriptedSocket([three_addresses])
    assert [a.cidr for a in addresses.dump_addresses(Rtnl(sock), index=5)] == ["10.3.0.1/24"]
    assert sock.sent_message(0, ifaddrmsg)["index"] == 5


def test_ensure_address_reads_only_its_own_link() -> None:
    sock = ScriptedSocket([three_addresses], [ack])
    addresses.ensure_address(Rtnl(sock), 4, "10.2.0.1", 24)
    assert sock.sent_message(0, ifaddrmsg)["index"] == 4
