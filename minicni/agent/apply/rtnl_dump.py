"""Read-only rtnetlink dumps of routes and neighbour/FDB entries, decoded with `struct`.

pyroute2 decodes every attribute of every message (~50 us per route); a no-change resync over
1,000 routes must take well under 50 ms, so the dumps the reconciler diffs against are read here
with a raw NETLINK_ROUTE socket and only the few fields it compares are decoded. Every change to
the kernel still goes through pyroute2.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
RTM_NEWADDR = 20
RTM_GETADDR = 22

RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_TABLE = 15
RTNH_F_ONLINK = 4

NDA_DST = 1
NDA_LLADDR = 2

IFA_ADDRESS = 1
IFA_LOCAL = 2

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class KernelRoute:
    dst: IPv4Network
    gateway: IPv4Address | None
    oif: int
    onlink: bool
    priority: int
    prefsrc: IPv4Address | None = None
    table: int = RT_TABLE_MAIN
    dst_key: tuple[int, int, int] = field(default=(0, 0, 0), compare=False, repr=False)
    """(table, network address, prefix length) as integers: cheap to hash, see `plan.Route.key`.
    Computed once here, since a resync looks at it for thousands of routes."""

    def __post_init__(self) -> None:
        key = (self.table, _int_of(self.dst.network_address), self.dst.prefixlen)
        object.__setattr__(self, "dst_key", key)


@dataclass(frozen=True)
class KernelNeighbour:
    """A neighbour (AF_INET) or FDB (AF_BRIDGE) entry: `dst` is the IP, `lladdr` the MAC."""

    ifindex: int
    dst: IPv4Address | None
    lladdr: str | None
    state: int


@dataclass(frozen=True)
class KernelAddress:
    ifindex: int
    network: IPv4Network
    local: IPv4Address


@functools.lru_cache(maxsize=1 << 16)
def _network(packed: bytes, prefixlen: int) -> IPv4Network:
    """Cached: constructing ipaddress objects costs more than decoding the whole message."""
    return IPv4Network((packed, prefixlen))


@functools.lru_cache(maxsize=1 << 16)
def _address(packed: bytes) -> IPv4Address:
    return IPv4Address(packed)


@functools.lru_cache(maxsize=1 << 16)
def _int_of(address: IPv4Address) -> int:
    return int(address)


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4 : offset + length]
        offset += _align(length)


def _dump(request_type: int, body: bytes, strict: bool = False) -> Iterator[tuple[int, bytes]]:
    """Send one dump request; yield (message type, payload) of every answer until NLMSG_DONE."""
    sock_type = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    with socket.socket(socket.AF_NETLINK, sock_type, NETLINK_ROUTE) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if strict:
            # Lets the kernel filter the dump; older kernels refuse it and we filter in Python.
            with contextlib.suppress(OSError):
                s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        s.bind((0, 0))
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), request_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        s.send(header + body)
        while True:
            data = s.recv(1 << 18)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return
                payload = data[offset + _NLMSGHDR.size : offset + length]
                offset += _align(length)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    continue
                yield kind, payload


def dump_routes(protocol: int, tables: Collection[int] = (RT_TABLE_MAIN,)) -> list[KernelRoute]:
    """IPv4 routes of `tables` whose protocol is `protocol`, in one dump: of one table when only
    one (that fits the header's byte) is asked for, else of every table (the kernel still filters
    by protocol, so the other tables cost next to nothing)."""
    only = next(iter(tables)) if len(tables) == 1 else RT_TABLE_UNSPEC
    request_table = only if only < 256 else RT_TABLE_UNSPEC
    request = _RTMSG.pack(socket.AF_INET, 0, 0, 0, request_table, protocol, 0, 0, 0)
    routes: list[KernelRoute] = []
    for kind, payload in _dump(RTM_GETROUTE, request, strict=True):
        if kind != RTM_NEWROUTE:
            continue
        family, dst_len, _src_len, _tos, rtm_table, proto, _scope, _type, flags = (
            _RTMSG.unpack_from(payload)
        )
        if family != socket.AF_INET or proto != protocol:
            continue
        dst = b"\0\0\0\0"
        gateway: IPv4Address | None = None
        prefsrc: IPv4Address | None = None
        oif = priority = 0
        for attr, value in _attributes(payload, _RTMSG.size, len(payload)):
            if attr == RTA_DST:
                dst = value
            elif attr == RTA_GATEWAY:
                gateway = _address(value)
            elif attr == RTA_PREFSRC:
                prefsrc = _address(value)
            elif attr == RTA_OIF:
                (oif,) = _U32.unpack(value)
            elif attr == RTA_PRIORITY:
                (priority,) = _U32.unpack(value)
            elif attr == RTA_TABLE:
                (rtm_table,) = _U32.unpack(value)
        if rtm_table not in tables:
            continue
        routes.append(
            KernelRoute(
                dst=_network(dst, dst_len),
                gateway=gateway,
                oif=oif,
                onlink=bool(flags & RTNH_F_ONLINK),
                priority=priority,
                prefsrc=prefsrc,
                table=rtm_table,
            )
        )
    return routes


def dump_neighbours(family: int, ifindex: int) -> list[KernelNeighbour]:
    """Neighbour entries (family AF_INET) or FDB entries (AF_BRIDGE) on one interface."""
    request = _NDMSG.pack(family, 0, 0, 0, 0)
    entries: list[KernelNeighbour] = []
    try:
        messages = list(_dump(RTM_GETNEIGH, request))
    except OSError as error:
        if error.errno == errno.ENODEV:
            return []
        raise
    for kind, payload in messages:
        if kind != RTM_NEWNEIGH:
            continue
        ndm_family, ndm_ifindex, state, _flags, _type = _NDMSG.unpack_from(payload)
        if ndm_family != family or ndm_ifindex != ifindex:
            continue
        dst: IPv4Address | None = None
        lladdr: str | None = None
        for attr, value in _attributes(payload, _NDMSG.size, len(payload)):
            if attr == NDA_DST and len(value) == 4:
                dst = _address(value)
            elif attr == NDA_LLADDR:
                lladdr = value.hex(":")
            if dst is not None and lladdr is not None:
                break  # the rest (cache info, probes, VNI, port) is not needed
        entries.append(KernelNeighbour(ndm_ifindex, dst, lladdr, state))
    return entries


def dump_addresses() -> list[KernelAddress]:
    """Every IPv4 address on the host with its prefix."""
    request = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    addresses: list[KernelAddress] = []
    for kind, payload in _dump(RTM_GETADDR, request):
        if kind != RTM_NEWADDR:
            continue
        family, prefixlen, _flags, _scope, ifindex = _IFADDRMSG.unpack_from(payload)
        if family != socket.AF_INET:
            continue
        local = address = None
        for attr, value in _attributes(payload, _IFADDRMSG.size, len(payload)):
            if attr == IFA_LOCAL:
                local = IPv4Address(value)
            elif attr == IFA_ADDRESS:
                address = IPv4Address(value)
        local = local or address
        if local is None:
            continue
        network = IPv4Network((local, prefixlen), strict=False)
        addresses.append(KernelAddress(ifindex, network, local))
    return addresses
