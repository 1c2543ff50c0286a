"""The netlink wire format, once: constants, the message and attribute headers, building and
splitting messages and attributes, decoding the kernel's errors. Pure (no socket), so captured
buffers can be fed to it.

The bodies of rtnetlink messages (ifinfmsg, rtmsg, ndmsg...) are pyroute2's definitions: those
the plugin's hot path builds and reads with `struct` are in `codes` (proven equal to pyroute2's);
`body_struct` and `attribute_codes` derive the others from pyroute2's classes.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# The socket.
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request's header, not the whole request
NETLINK_EXT_ACK = 11  # errors carry the kernel's explanation ("Nexthop has invalid gateway")
NETLINK_GET_STRICT_CHK = 12  # the kernel filters dumps by the request's header, and checks it
SO_RCVBUFFORCE = 33  # SO_RCVBUF past net.core.rmem_max, with CAP_NET_ADMIN (not in `socket`)

# struct nlmsghdr: types and flags.
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8  # a change request: the kernel also sends its notification of it to the requester
NLM_F_DUMP_INTR = 0x10  # in a dump: the table changed meanwhile, the dump may be torn
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # in an error: the echoed request was cut to its header
NLM_F_ACK_TLVS = 0x200  # in an error: extended-ack attributes follow the echoed request
NLMSGERR_ATTR_MSG = 1
CREATE_NEW = NLM_F_CREATE | NLM_F_EXCL
CREATE_OR_REPLACE = NLM_F_CREATE | NLM_F_REPLACE

# rtnetlink message types.
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
RTM_NEWRULE = 32
RTM_DELRULE = 33
RTM_GETRULE = 34
RTM_NEWNSID = 88
RTM_GETNSID = 90

# Values inside rtnetlink messages.
AF_UNSPEC = 0
AF_INET = 2
AF_BRIDGE = 7
AF_INET6 = 10
IFF_UP = 0x1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # an attribute's type without the nested and byte-order flags
RT_TABLE_UNSPEC = 0
RT_TABLE_COMPAT = 252  # the one-byte header's table for a number above 255 (the attribute has it)
RT_TABLE_MAIN = 254
RTPROT_UNSPEC = 0
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
FR_ACT_TO_TBL = 1

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # struct nlattr: length, type
ERROR_CODE = struct.Struct("=i")  # the first field of struct nlmsgerr, and of NLMSG_DONE
U16 = struct.Struct("=H")
U32 = struct.Struct("=I")
I32 = struct.Struct("=i")
BE16 = struct.Struct(">H")


class NetlinkError(Exception):
    """What the kernel answered a request with, or a check of the reply that failed. `code` is
    an errno; `args` is (code, text), the text the kernel's explanation when it gave one."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code, msg or os.strerror(code))
        self.code = code


def align(length: int) -> int:
    return (length + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The messages of one datagram: (type, flags, sequence number, the message with its header).
    A length that does not fit the datagram is a protocol error, never read past."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, msg_type, flags, seq, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            raise NetlinkError(errno.EPROTO, f"malformed netlink message at {offset}")
        yield msg_type, flags, seq, data[offset : offset + length]
        offset += align(length)


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (nested ones are plain attributes whose payload is
    attributes: the kernel parses IFLA_LINKINFO and its kin without NLA_F_NESTED, and pyroute2
    sends none)."""
    length = 4 + len(payload)
    return ATTR.pack(length, kind) + payload + bytes(-length % 4)


def asciiz(text: str) -> bytes:
    return text.encode() + b"\0"


def u8(value: int) -> bytes:
    return bytes((value,))


def u32(value: int) -> bytes:
    return U32.pack(value)


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def mac_text(packed: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in packed)


def text(value: bytes) -> str:
    """A NUL-terminated string attribute."""
    return value.split(b"\0", 1)[0].decode(errors="replace")


def attribute_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes from `offset` on, by type (the last one of a type wins)."""
    return dict(attributes(data, offset))


def attributes(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, value) of the attributes from `offset` to the end of `data`; a malformed one ends
    the list."""
    end = len(data)
    unpack = ATTR.unpack_from  # a dump of thousands of routes reads ~10 attributes each
    while offset + 4 <= end:
        length, attr_type = unpack(data, offset)
        if length < 4 or offset + length > end:
            return
        yield attr_type & NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def netlink_error(message: bytes) -> NetlinkError | None:
    """None for an ack; else the error it reports, with the kernel's explanation when given.

    struct nlmsgerr is the error code and the request's header (with its payload unless capped),
    then the extended-ack attributes. pyroute2's `nlmsgerr` class looks for those right after
    the code, so it never finds the text: read them here.
    """
    _, _, flags, _, _ = HEADER.unpack_from(message)
    (code,) = ERROR_CODE.unpack_from(message, HEADER.size)
    if code == 0:
        return None
    code = abs(code)
    offset = HEADER.size + ERROR_CODE.size
    request_length = HEADER.unpack_from(message, offset)[0] if len(message) >= offset + 16 else 0
    offset += HEADER.size if flags & NLM_F_CAPPED else align(request_length)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        for attr_type, value in attributes(message, offset):
            if attr_type == NLMSGERR_ATTR_MSG:
                text = value.split(b"\0", 1)[0].decode(errors="replace")
    return NetlinkError(code, f"{os.strerror(code)}: {text}" if text else None)


def dump_error(message: bytes) -> NetlinkError | None:
    """The error a dump that failed half-way ends with, in its NLMSG_DONE; None if it did not."""
    if len(message) < HEADER.size + ERROR_CODE.size:
        return None
    (code,) = ERROR_CODE.unpack_from(message, HEADER.size)
    return NetlinkError(abs(code)) if code else None


def body_struct(message_class: Any) -> struct.Struct:
    """The fixed header of a pyroute2 message class (rtmsg: family, dst_len, ...) as a Struct."""
    return struct.Struct("=" + "".join(fmt for _, fmt in message_class.fields))


def attribute_codes(message_class: Any) -> dict[str, int]:
    """Attribute name -> type number, from a pyroute2 message class's `nla_map`."""
    codes: dict[str, int] = {}
    for position, entry in enumerate(message_class.nla_map):
        if len(entry) == 3:
            codes[entry[1]] = entry[0]
        else:
            codes[entry[0]] = position
    return codes


@functools.lru_cache(maxsize=1 << 16)
def address(packed: bytes) -> IPAddress:
    """An address attribute's value as an address object. Cached: a resync decodes the same
    addresses again, and building `ipaddress` objects costs more than decoding the message."""
    return IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed)


@functools.lru_cache(maxsize=1 << 16)
def network(packed: bytes, prefixlen: int) -> IPNetwork:
    """The network of `packed`/`prefixlen` (host bits cleared). Cached, as `address`."""
    if len(packed) == 4:
        return IPv4Network((packed, prefixlen), strict=False)
    return IPv6Network((packed, prefixlen), strict=False)
