"""The rtnetlink client without a kernel: requests encoded and decoded back with pyroute2, replies
parsed from buffers captured from a 6.18 kernel, the socket loop driven by a scripted socket."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import rtnl
from tests.rtnl_fakes import (
    NLM_F_MULTI,
    ScriptedSocket,
    done,
    error_reply,
    header,
    link_reply,
)

# Captured with NETLINK_CAP_ACK and NETLINK_EXT_ACK set, as `Rtnl` sets them. seq 1: RTM_NEWLINK
# of an unknown kind; seq 2: RTM_NEWADDR with prefixlen 33; seq 3: a successful RTM_NEWADDR;
# seq 4: RTM_GETADDR dump of a namespace holding only 127.0.0.1/8, in two datagrams.
UNKNOWN_KIND = bytes.fromhex(
    "3c0000000200000301000000b12e0000a1ffffff3c00000010000506010000000000000018000100556e6b6e"
    "6f776e20646576696365207479706500"
)
BAD_PREFIX = bytes.fromhex(
    "440000000200000302000000b12e0000eaffffff2800000014000506020000000000000020000100697076"
    "343a20496e76616c696420707265666978206c656e67746800"
)
ACK = bytes.fromhex("240000000200000103000000b12e00000000000028000000140005060300000000000000")
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
    data = rtnl.encode_request(msg, rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, 9)

    length, msg_type, flags, seq, pid = rtnl.HEADER.unpack_from(data)
    assert (length, msg_type, seq, pid) == (len(data), rtnl.RTM_NEWLINK, 9, 0)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
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


# -- acks and errors ----------------------------------------------------------------------------
def test_an_ack_is_no_error() -> None:
    assert rtnl.netlink_error(ACK) is None


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        (UNKNOWN_KIND, errno.EOPNOTSUPP, "Operation not supported: Unknown device type"),
        (BAD_PREFIX, errno.EINVAL, "Invalid argument: ipv4: Invalid prefix length"),
    ],
)
def test_an_error_carries_the_code_and_the_kernels_explanation(
    data: bytes, code: int, text: str
) -> None:
    error = rtnl.netlink_error(data)
    assert isinstance(error, NetlinkError)
    assert error.code == code
    assert error.args == (code, text)


def test_an_error_without_explanation_reads_as_strerror() -> None:
    error = rtnl.netlink_error(error_reply(1, errno.ENODEV))
    assert error is not None and error.args == (errno.ENODEV, "No such device")


def test_an_uncapped_error_skips_the_echoed_request() -> None:
    request = rtnl.encode_request(ifinfmsg(), rtnl.RTM_GETLINK, 0, 1)
    text = b"why\0"
    attr = struct.pack("=HH", 4 + len(text), rtnl.NLMSGERR_ATTR_MSG) + text
    body = struct.pack("=i", -errno.EINVAL) + request + attr
    data = header(16 + len(body), rtnl.NLMSG_ERROR, rtnl.NLM_F_ACK_TLVS, 1) + body
    error = rtnl.netlink_error(data)
    assert error is not None and error.args == (errno.EINVAL, "Invalid argument: why")


# -- replies ------------------------------------------------------------------------------------
def test_a_captured_dump_in_two_datagrams() -> None:
    replies = rtnl.Replies(ifaddrmsg, seq=4)
    replies.feed(DUMP_ADDRESS)
    assert not replies.done
    replies.feed(DUMP_DONE)
    assert replies.done and not replies.interrupted
    [address] = replies.messages
    assert (address.get_attr("IFA_ADDRESS"), address["prefixlen"]) == ("127.0.0.1", 8)
    assert address.get_attr("IFA_LABEL") == "lo"


def test_several_messages_in_one_datagram_then_done() -> None:
    replies = rtnl.Replies(ifinfmsg, seq=3)
    replies.feed(link_reply(3, 1, "lo") + link_reply(3, 2, "eth0") + done(3))
    assert replies.done
    assert [m.get_attr("IFLA_IFNAME") for m in replies.messages] == ["lo", "eth0"]


def test_a_get_ends_at_its_ack() -> None:
    replies = rtnl.Replies(ifinfmsg, seq=5)
    replies.feed(link_reply(5, 1, "lo", nl_flags=0) + error_reply(5, 0))
    assert replies.done and [m["index"] for m in replies.messages] == [1]


def test_messages_of_another_sequence_are_skipped() -> None:
    replies = rtnl.Replies(ifinfmsg, seq=2)
    replies.feed(link_reply(1, 1, "lo") + error_reply(1, errno.EPERM) + error_reply(2, 0))
    assert replies.done and replies.messages == []


def test_an_error_ack_raises() -> None:
    with pytest.raises(NetlinkError) as raised:
        rtnl.Replies(ifinfmsg, seq=1).feed(UNKNOWN_KIND)
    assert raised.value.code == errno.EOPNOTSUPP


def test_a_dump_that_failed_half_way_raises_its_code() -> None:
    with pytest.raises(NetlinkError) as raised:
        rtnl.Replies(ifinfmsg, seq=1).feed(link_reply(1, 1, "lo") + done(1, errno.EMSGSIZE))
    assert raised.value.code == errno.EMSGSIZE


def test_an_interrupted_dump_is_flagged() -> None:
    replies = rtnl.Replies(ifinfmsg, seq=1)
    replies.feed(link_reply(1, 1, "lo", nl_flags=NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR) + done(1))
    assert replies.done and replies.interrupted


def test_a_malformed_length_is_a_protocol_error() -> None:
    with pytest.raises(NetlinkError) as raised:
        rtnl.Replies(ifinfmsg, seq=1).feed(header(400, rtnl.NLMSG_DONE, 0, 1) + b"\0" * 4)
    assert raised.value.code == errno.EPROTO


# -- the socket loop ----------------------------------------------------------------------------
def test_request_returns_what_came_before_the_ack() -> None:
    sock = ScriptedSocket(
        [lambda seq: link_reply(seq, 1, "lo", 0), lambda seq: error_reply(seq, 0)]
    )
    with rtnl.Rtnl(sock) as client:
        request = ifinfmsg()
        request["attrs"] = [("IFLA_IFNAME", "lo")]
        [link] = client.request(request, rtnl.RTM_GETLINK)
    assert link.get_attr("IFLA_IFNAME") == "lo"
    assert sock.closed
    flags = rtnl.HEADER.unpack_from(sock.sent[0])[2]
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK


def test_request_raises_the_kernels_error() -> None:
    sock = ScriptedSocket([lambda seq: error_reply(seq, errno.EEXIST)])
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(sock).request(ifinfmsg(), rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE)
    assert raised.value.code == errno.EEXIST


def test_dump_reads_datagrams_until_done_and_numbers_each_request() -> None:
    sock = ScriptedSocket(
        [lambda seq: link_reply(seq, 1, "lo"), lambda seq: link_reply(seq, 2, "b") + done(seq)],
        [lambda seq: done(seq)],
    )
    client = rtnl.Rtnl(sock)
    assert [m["index"] for m in client.dump(ifinfmsg(), rtnl.RTM_GETLINK)] == [1, 2]
    assert client.dump(ifinfmsg(), rtnl.RTM_GETLINK) == []
    assert [rtnl.HEADER.unpack_from(sent)[3] for sent in sock.sent] == [1, 2]
    assert rtnl.HEADER.unpack_from(sock.sent[0])[2] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP


def test_an_interrupted_dump_is_read_again() -> None:
    torn = [lambda seq: link_reply(seq, 1, "lo", NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR) + done(seq)]
    whole = [lambda seq: link_reply(seq, 1, "lo") + link_reply(seq, 2, "b") + done(seq)]
    sock = ScriptedSocket(torn, whole)
    assert len(rtnl.Rtnl(sock).dump(ifinfmsg(), rtnl.RTM_GETLINK)) == 2
    first, again = sock.sent
    assert (first[:8], first[12:]) == (again[:8], again[12:])  # the same request, a new seq
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(ScriptedSocket(torn, torn, torn)).dump(ifinfmsg(), rtnl.RTM_GETLINK)
    assert raised.value.code == errno.EAGAIN


def test_a_truncated_datagram_is_refused() -> None:
    sock = ScriptedSocket([(b"\0" * 16, socket.MSG_TRUNC)])
    with pytest.raises(NetlinkError) as raised:
        rtnl.Rtnl(sock).dump(ifinfmsg(), rtnl.RTM_GETLINK)
    assert raised.value.code == errno.EMSGSIZE
