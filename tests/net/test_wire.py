"""The netlink wire format: errors decoded from buffers captured from a 6.18 kernel, datagrams
split into messages, and the layouts the fast decoders take from pyroute2's message classes."""

from __future__ import annotations

import errno
import struct

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.net import rtnl, wire
from minicni.net.wire import NetlinkError
from tests.rtnl_fakes import done, error_reply, header, link_reply

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


# -- acks and errors ----------------------------------------------------------------------------
def test_an_ack_is_no_error() -> None:
    assert wire.netlink_error(ACK) is None


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
    error = wire.netlink_error(data)
    assert isinstance(error, NetlinkError)
    assert error.code == code
    assert error.args == (code, text)


def test_an_error_without_explanation_reads_as_strerror() -> None:
    error = wire.netlink_error(error_reply(1, errno.ENODEV))
    assert error is not None and error.args == (errno.ENODEV, "No such device")


def test_an_uncapped_error_skips_the_echoed_request() -> None:
    request = rtnl.encode_request(ifinfmsg(), wire.RTM_GETLINK, 0, 1)
    text = b"why\0"
    attr = struct.pack("=HH", 4 + len(text), wire.NLMSGERR_ATTR_MSG) + text
    body = struct.pack("=i", -errno.EINVAL) + request + attr
    data = header(16 + len(body), wire.NLMSG_ERROR, wire.NLM_F_ACK_TLVS, 1) + body
    error = wire.netlink_error(data)
    assert error is not None and error.args == (errno.EINVAL, "Invalid argument: why")


def test_a_dump_ends_with_its_error_or_none() -> None:
    assert wire.dump_error(done(1)) is None
    error = wire.dump_error(done(1, errno.EINTR))
    assert error is not None and error.args == (errno.EINTR, "Interrupted system call")


# -- messages and attributes ---------------------------------------------------------------------
def test_a_datagram_splits_into_its_messages() -> None:
    data = link_reply(7, 1, "lo") + link_reply(7, 2, "eth0") + done(7)
    split = list(wire.messages(data))
    assert [(msg_type, seq) for msg_type, _, seq, _ in split] == [
        (wire.RTM_NEWLINK, 7),
        (wire.RTM_NEWLINK, 7),
        (wire.NLMSG_DONE, 7),
    ]
    assert b"".join(message for *_, message in split) == data  # each message whole, no padding lost


@pytest.mark.parametrize("length", [8, 400])
def test_a_length_that_does_not_fit_is_a_protocol_error(length: int) -> None:
    with pytest.raises(NetlinkError) as raised:
        list(wire.messages(header(length, wire.NLMSG_DONE, 0, 1) + b"\0" * 4))
    assert raised.value.code == errno.EPROTO


def test_attributes_are_read_to_the_end_and_a_malformed_one_ends_them() -> None:
    def attr(attr_type: int, value: bytes) -> bytes:
        padded = value + b"\0" * (wire.align(len(value)) - len(value))
        return struct.pack("=HH", 4 + len(value), attr_type) + padded

    data = (
        b"HEAD" + attr(1, b"abcde") + attr(wire.NLA_F_NESTED | 2, b"xy") + struct.pack("=HH", 40, 3)
    )
    assert list(wire.attributes(data, 4)) == [(1, b"abcde"), (2, b"xy")]


def test_layouts_come_from_pyroute2_and_match_the_kernels() -> None:
    """struct rtmsg, ndmsg, ifaddrmsg and fib_rule_hdr as in the kernel's uapi headers."""
    assert [wire.body_struct(cls).size for cls in (rtmsg, ndmsg, ifaddrmsg, fibmsg)] == [
        12,
        12,
        8,
        12,
    ]
    rta = wire.attribute_codes(rtmsg)
    assert (rta["RTA_DST"], rta["RTA_OIF"], rta["RTA_GATEWAY"], rta["RTA_TABLE"]) == (1, 4, 5, 15)
    assert (rta["RTA_PRIORITY"], rta["RTA_PREFSRC"]) == (6, 7)
    nda = wire.attribute_codes(ndmsg)
    assert (nda["NDA_DST"], nda["NDA_LLADDR"]) == (1, 2)
    ifa = wire.attribute_codes(ifaddrmsg)
    assert (ifa["IFA_ADDRESS"], ifa["IFA_LOCAL"]) == (1, 2)
    assert wire.attribute_codes(ifinfmsg)["IFLA_IFNAME"] == 3


def test_decoded_addresses_and_networks_are_of_their_family() -> None:
    assert str(wire.address(bytes([10, 0, 0, 1]))) == "10.0.0.1"
    assert str(wire.address(bytes(15) + b"\1")) == "::1"
    assert str(wire.network(bytes([10, 1, 2, 3]), 24)) == "10.1.2.0/24"
    assert str(wire.network(bytes([0xFE, 0x80]) + bytes(14), 64)) == "fe80::/64"


def test_an_encoded_request_carries_its_header() -> None:
    data = rtnl.encode_request(ifinfmsg(), wire.RTM_GETLINK, wire.NLM_F_ACK, 9)
    assert wire.HEADER.unpack_from(data) == (
        len(data),
        wire.RTM_GETLINK,
        wire.NLM_F_REQUEST | wire.NLM_F_ACK,
        9,
        0,
    )
