"""Routes: the typed dump both programs read, and the request that adds, replaces or deletes one.

Requests and dumps are encoded and decoded with `struct` from `codes`, not by pyroute2, which
decodes every attribute of every message (~50 us a route) and encodes slowly too: the agent's
no-change resync over thousands of routes must stay well under 50 ms, so only the fields compared
are read, and the address objects are cached.
"""

from __future__ import annotations

import errno
from ipaddress import ip_address

from minicni.net import wire
from minicni.net.codes import (
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PREFSRC,
    RTA_PRIORITY,
    RTA_TABLE,
    RTMSG,
)
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError, attr
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Collection

    from minicni.net.wire import IPAddress, IPNetwork

_RTMSG = RTMSG
_U32 = wire.U32


class KernelRoute(Record):
    """A route as dumped."""

    __slots__ = ("dst", "gateway", "oif", "onlink", "prefsrc", "priority", "table")

    def __init__(
        self,
        dst: IPNetwork,
        gateway: IPAddress | None,
        oif: int,
        onlink: bool,
        priority: int,
        prefsrc: IPAddress | None = None,
        table: int = wire.RT_TABLE_MAIN,
    ) -> None:
        self.dst = dst
        self.gateway = gateway
        self.oif = oif
        self.onlink = onlink
        self.priority = priority
        self.prefsrc = prefsrc
        self.table = table

    @property
    def dst_key(self) -> tuple[int, int, int, int]:
        """(table, IP version, network address, prefix length) as integers: cheap to hash and
        compare, for diffs over thousands of routes."""
        return self.table, self.dst.version, int(self.dst.network_address), self.dst.prefixlen


def dump_routes(
    rtnl: Rtnl,
    *,
    family: int = wire.AF_INET,
    protocol: int | None = None,
    tables: Collection[int] = (wire.RT_TABLE_MAIN,),
) -> list[KernelRoute]:
    """Routes of `family` in `tables`, of routing protocol `protocol` (None: any), in one dump.

    On a strict socket the kernel filters by protocol, and by table when only one that fits the
    header's byte is asked for; the decoder filters again, for sockets that are not strict.
    """
    only = next(iter(tables)) if len(tables) == 1 else wire.RT_TABLE_UNSPEC
    table = only if only < 256 else wire.RT_TABLE_UNSPEC
    request = RTMSG.pack(family, 0, 0, 0, table, protocol or wire.RTPROT_UNSPEC, 0, 0, 0)
    unspecified = bytes(4 if family == wire.AF_INET else 16)

    def decode(message: bytes) -> KernelRoute | None:
        rtm_family, dst_len, _, _, table, proto, _, _, flags = _RTMSG.unpack_from(
            message, wire.HEADER.size
        )
        if rtm_family != family or (protocol is not None and proto != protocol):
            return None
        dst = unspecified
        gateway = prefsrc = None
        oif = priority = 0
        for kind, value in wire.attributes(message, wire.HEADER.size + _RTMSG.size):
            if kind == RTA_DST:
                dst = value
            elif kind == RTA_GATEWAY:
                gateway = wire.address(value)
            elif kind == RTA_PREFSRC:
                prefsrc = wire.address(value)
            elif kind == RTA_OIF:
                (oif,) = _U32.unpack(value)
            elif kind == RTA_PRIORITY:
                (priority,) = _U32.unpack(value)
            elif kind == RTA_TABLE:
                (table,) = _U32.unpack(value)
        if table not in tables:
            return None
        return KernelRoute(
            dst=wire.network(dst, dst_len),
            gateway=gateway,
            oif=oif,
            onlink=bool(flags & wire.RTNH_F_ONLINK),
            priority=priority,
            prefsrc=prefsrc,
            table=table,
        )

    try:
        return rtnl.dump_decoded(request, wire.RTM_GETROUTE, decode)
    except NetlinkError as exc:
        # A strict socket asked for a table that does not exist yet (a namespace without a
        # single route): the kernel says ENOENT where a plain dump would be empty.
        if exc.code == errno.ENOENT and table != wire.RT_TABLE_UNSPEC:
            return []
        raise


def route_request(
    dst: IPNetwork | None,
    gateway: IPAddress | None,
    *,
    table: int,
    protocol: int,
    oif: int | None = None,
    onlink: bool = False,
    prefsrc: IPAddress | None = None,
    priority: int | None = None,
    route_type: int = wire.RTN_UNICAST,
) -> bytes:
    """An rtmsg for RTM_NEWROUTE or RTM_DELROUTE. `dst` None: the default route. A delete names
    the route as it was dumped, with `route_type` 0 (any)."""
    anchor = dst if dst is not None else gateway
    family = wire.AF_INET6 if anchor is not None and anchor.version == 6 else wire.AF_INET
    body = RTMSG.pack(
        family,
        dst.prefixlen if dst is not None else 0,
        0,
        0,
        table if table < 256 else wire.RT_TABLE_COMPAT,
        protocol,
        wire.RT_SCOPE_UNIVERSE,
        route_type,
        wire.RTNH_F_ONLINK if onlink else 0,
    )
    if dst is not None:
        body += attr(RTA_DST, dst.network_address.packed)
    if gateway is not None:
        body += attr(RTA_GATEWAY, gateway.packed)
    if oif is not None:
        body += attr(RTA_OIF, wire.u32(oif))
    if priority is not None:
        body += attr(RTA_PRIORITY, wire.u32(priority))
    if prefsrc is not None:
        body += attr(RTA_PREFSRC, prefsrc.packed)
    if table > 255:
        # Only where the header cannot hold the number: one attribute less to encode on each of
        # thousands of main-table routes.
        body += attr(RTA_TABLE, wire.u32(table))
    return body


def default_route_request(gateway: str, oif: int, protocol: int) -> bytes:
    """The main table's default route via `gateway` out of link `oif` (a pod's)."""
    return route_request(
        None, ip_address(gateway), table=wire.RT_TABLE_MAIN, protocol=protocol, oif=oif
    )


def has_route(rtnl: Rtnl, dst: str, gateway: str | None) -> bool:
    """True if the main table holds a route to `dst` (via `gateway` when given)."""
    network, _, length = dst.partition("/")
    ipv6 = ":" in dst
    prefixlen = int(length or (128 if ipv6 else 32))
    for route in dump_routes(rtnl, family=wire.AF_INET6 if ipv6 else wire.AF_INET):
        same_dst = str(route.dst.network_address) == network and route.dst.prefixlen == prefixlen
        if same_dst and (gateway is None or str(route.gateway) == gateway):
            return True
    return False


def default_route_ifindex(rtnl: Rtnl) -> int | None:
    """The interface of the main table's IPv4 default route, else (an IPv6-only node) of the
    IPv6 one (one without a device, a multipath route, does not count)."""
    for family in (wire.AF_INET, wire.AF_INET6):
        for route in dump_routes(rtnl, family=family):
            if route.dst.prefixlen == 0 and route.oif:
                return route.oif
    return None
