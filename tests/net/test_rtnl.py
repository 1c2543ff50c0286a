"""The rtnetlink client without a kernel: requests encoded and decoded back with pyroute2, replies
parsed from buffers captured from a 6.18 kernel, the socket loop driven by a scripted socket."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import rtnl, wire
from minicni.net.wire import NetlinkError
from tests.rtnl_fakes import (
    NLM_F_MULTI,
    ScriptedSocket,
    ack,
    done,
    error_reply,
    fails,
    header,
    link_reply,
)

# Captured from a 6.18 kernel: an RTM_GETADDR dump (seq 4) of a namespace holding only
# 127.0.0.1/8, in two datagrams.
DUMP_ADDRESS = bytes.fromhex(
    "4c0000001400020004000000b12e00000208800001000000080001007f000001080002007f00000107000300"
    "6c6f0000080008008000000014000600ffffffffffffffffe87c0200e87c0200"
)
DUMP_DONE = bytes.fromhex("140000000300020004000000b12e000000000000")


# -- encoding -----------------------------------------------------------------------------------
def test_a_veth_request_decodes_back_with_its_nested_peer() -> None:
    peer = ifinfmsg()
    peer["attrs"] = [("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 7), ("IFLA_MTU", 1400)]
    msg = ifinfmsg()
    msg["flags"] = msg["change"] = 1
    msg["attrs"] = [
        ("IFLA_IFNAME", "vethabc"),
        ("IFLA_MASTER", 5),
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_KIND", "veth"),
                    ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}),
                ]
            },
        ),
    ]
    data = rtnl.encode_request(msg, wire.RTM_NEWLINK, wire.NLM_F_CREATE | wire.NLM_F_EXCL, 9)

    length, msg_type, flags, seq, pid = wire.HEADER.unpack_from(data)
    assert (length, msg_type, seq, pid) == (len(data), wire.RTM_NEWLINK, 9, 0)
    assert flags == wire.NLM_F_REQUEST | wire.NLM_F_CREATE | wire.NLM_F_EXCL
    decoded = ifinfmsg(data)
    decoded.decode()
    assert decoded.get_attr("IFLA_IFNAME") == "vethabc"
    assert decoded.get_attr("IFLA_MASTER") == 5
    assert decoded["flags"] == 1 and decoded["change"] == 1
    assert decoded.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    peer_back = decoded.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "VETH_INFO_PEER")
    assert peer_back.get_attr("IFLA_IFNAME") == "eth0"
    assert peer_back.get_attr("IFLA_NET_NS_FD") == 7
    assert peer_back.get_attr("IFLA_MTU") == 1400


# -- replies ------------------------------------------------------------------------------------
def test_a_captured_dump_in_two_datagrams() -> None:
    replies = rtnl.Replies(rtnl.decode_with(ifaddrmsg), seq=4)
    replies.feed(DUMP_ADDRESS)
    assert not replies.done
    replies.feed(DUMP_DONE)
    assert replies.done and not replies.interrupted
    [address] = replies.messages
    assert (address.get_attr("IFA_ADDRESS"), address["prefixlen"]) == ("127.0.0.1", 8)
    assert address.get_attr("IFA_LABEL") == "lo"


def test_several_messages_in_one_datagram_then_done() -> None:
    replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=3)
    replies.feed(link_reply(3, 1, "lo") + link_reply(3, 2, "eth0") + done(3))
    assert replies.done
    assert [m.get_attr("IFLA_IFNAME") for m in replies.messages] == ["lo", "eth0"]


def test_a_get_ends_at_its_ack() -> None:
    replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=5)
    replies.feed(link_reply(5, 1, "lo", nl_flags=0) + error_reply(5, 0))
    assert replies.done and [m["index"] for m in replies.messages] == [1]


def test_messages_of_another_sequence_are_skipped() -> None:
    replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=2)
    replies.feed(link_reply(1, 1, "lo") + error_reply(1, errno.EPERM) + error_reply(2, 0))
    assert replies.done and replies.messages == []


def test_an_error_ack_raises() -> None:
    with pytest.raises(NetlinkError) as raised:
        rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=1).feed(error_reply(1, errno.EOPNOTSUPP))
    assert raised.value.code == errno.EOPNOTSUPP


def test_a_dump_that_failed_half_way_raises_its_code() -> None:
    with pytest.raises(NetlinkError) as raised:
        replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=1)
        replies.feed(link_reply(1, 1, "lo") + done(1, errno.EMSGSIZE))
    assert raised.value.code == errno.EMSGSIZE


def test_an_interrupted_dump_is_flagged() -> None:
    replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=1)
    replies.feed(link_reply(1, 1, "lo", nl_flags=NLM_F_MULTI | wire.NLM_F_DUMP_INTR) + done(1))
    assert replies.done and replies.interrupted


def test_a_malformed_length_is_a_protocol_error() -> None:
    with pytest.raises(NetlinkError) as raised:
        replies = rtnl.Replies(rtnl.decode_with(ifinfmsg), seq=1)
        replies.feed(header(400, wire.NLMSG_DONE, 0, 1) + b"\0" * 4)
    assert raised.value.code == errno.EPROTO


# -- the socket loop ----------------------------------------------------------------------------
def test_request_returns_what_came_before_the_ack() -> None:
    sock = ScriptedSocket(
        [lambda seq: link_reply(seq, 1, "lo", 0), lambda seq: error_reply(seq, 0)]
    )
    with rtnl.Rtnl(sock) as client:
        request = ifinfmsg()
        request["attrs"] = [("IFLA_IFNAME", "lo")]
        [link] = client.request(request, wire.RTM_GETLINK)
    assert link.get_attr("IFLA_IFNAME") == "lo"
    assert sock.closed
    flags = wire.HEADER.unpack_from(sock.sent[0])[2]
    assert flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK


def test_request_raises_the_kernels_error() -> None:
    sock = ScriptedSocket([lambda seq: error_reply(seq, errno.EEXIST)])
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(sock).request(ifinfmsg(), wire.RTM_NEWLINK, wire.NLM_F_CREATE)
    assert raised.value.code == errno.EEXIST


def test_dump_reads_datagrams_until_done_and_numbers_each_request() -> None:
    sock = ScriptedSocket(
        [lambda seq: link_reply(seq, 1, "lo"), lambda seq: link_reply(seq, 2, "b") + done(seq)],
        [lambda seq: done(seq)],
    )
    client = rtnl.Rtnl(sock)
    assert [m["index"] for m in client.dump(ifinfmsg(), wire.RTM_GETLINK)] == [1, 2]
    assert client.dump(ifinfmsg(), wire.RTM_GETLINK) == []
    assert [wire.HEADER.unpack_from(sent)[3] for sent in sock.sent] == [1, 2]
    assert wire.HEADER.unpack_from(sock.sent[0])[2] == wire.NLM_F_REQUEST | wire.NLM_F_DUMP


def test_an_interrupted_dump_is_read_again() -> None:
    torn = [lambda seq: link_reply(seq, 1, "lo", NLM_F_MULTI | wire.NLM_F_DUMP_INTR) + done(seq)]
    whole = [lambda seq: link_reply(seq, 1, "lo") + link_reply(seq, 2, "b") + done(seq)]
    sock = ScriptedSocket(torn, whole)
    assert len(rtnl.Rtnl(sock).dump(ifinfmsg(), wire.RTM_GETLINK)) == 2
    first, again = sock.sent
    assert (first[:8], first[12:]) == (again[:8], again[12:])  # the same request, a new seq
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(ScriptedSocket(torn, torn, torn)).dump(ifinfmsg(), wire.RTM_GETLINK)
    assert raised.value.code == errno.EAGAIN


def test_a_truncated_datagram_is_refused() -> None:
    sock = ScriptedSocket([(b"\0" * 16, socket.MSG_TRUNC)])
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(sock).dump(ifinfmsg(), wire.RTM_GETLINK)
    assert raised.value.code == errno.EMSGSIZE


# -- batches ------------------------------------------------------------------------------------
def new_link(name: str) -> tuple[ifinfmsg, int, int]:
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", name)]
    return msg, wire.RTM_NEWLINK, wire.CREATE_NEW


def test_a_batch_is_one_datagram_and_each_request_gets_its_outcome() -> None:
    sock = ScriptedSocket([ack], [fails(errno.EEXIST)], [ack])
    outcomes = rtnl.Rtnl(sock).batch([new_link("a"), new_link("b"), new_link("c")])
    assert sock.datagrams == 1
    assert [sock.sent_message(i).get_attr("IFLA_IFNAME") for i in range(3)] == ["a", "b", "c"]
    assert all(
        sock.sent_flags(i) == wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.CREATE_NEW
        for i in range(3)
    )
    first, second, third = outcomes
    assert first is None and third is None
    assert second is not None and second.args == (errno.EEXIST, "File exists")


def test_acks_in_any_order_and_foreign_ones_are_matched_by_sequence() -> None:
    stale = error_reply(99, errno.EPERM)  # left over from an earlier exchange: not ours
    # The first request's ack arrives with the second's, after a stale one, then the third's.
    sock = ScriptedSocket([], [lambda seq: ack(seq - 1) + stale + ack(seq)], [fails(errno.ENOENT)])
    first, second, third = rtnl.Rtnl(sock).batch([new_link("a"), new_link("b"), new_link("c")])
    assert first is None and second is None
    assert third is not None and third.code == errno.ENOENT


def test_a_long_batch_is_split_into_datagrams() -> None:
    count = rtnl.BATCH_SIZE + 3
    sock = ScriptedSocket(*[[ack] for _ in range(count)])
    outcomes = rtnl.Rtnl(sock).batch([new_link(f"l{i}") for i in range(count)])
    assert outcomes == [None] * count
    assert sock.datagrams == 2
    sequences = [wire.HEADER.unpack_from(message)[3] for message in sock.sent]
    assert sequences == list(range(1, count + 1))


def test_acks_lost_to_a_full_receive_buffer_are_reported_not_waited_for() -> None:
    class OverrunSocket(ScriptedSocket):
        def recvmsg(self, bufsize: int, /) -> tuple[bytes, list[Any], int, Any]:
            if not self.pending:
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return super().recvmsg(bufsize)

    sock = OverrunSocket([ack], [], [])  # the kernel dropped the last two acks
    first, second, third = rtnl.Rtnl(sock).batch([new_link("a"), new_link("b"), new_link("c")])
    assert first is None
    assert second is not None and second.code == errno.ENOBUFS
    assert third is not None and third.code == errno.ENOBUFS


def test_an_empty_batch_sends_nothing() -> None:
    sock = ScriptedSocket()
    assert rtnl.Rtnl(sock).batch([]) == []
    assert sock.datagrams == 0
