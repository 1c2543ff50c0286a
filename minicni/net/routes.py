"""Routes: the typed dump both programs read, and the request that adds, replaces or deletes one.

The dump is decoded with `struct`, not by pyroute2, which decodes every attribute of every message
(~50 us a route): the agent's no-change resync over thousands of routes must stay well under
50 ms, so only the fields compared are read, and the address objects are cached.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Any, NamedTuple

from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.net import wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import IPAddress, IPNetwork

_RTMSG = wire.body_struct(rtmsg)
_RTA = wire.attribute_codes(rtmsg)
RTA_DST = _RTA["RTA_DST"]
RTA_OIF = _RTA["RTA_OIF"]
RTA_GATEWAY = _RTA["RTA_GATEWAY"]
RTA_PRIORITY = _RTA["RTA_PRIORITY"]
RTA_PREFSRC = _RTA["RTA_PREFSRC"]
RTA_TABLE = _RTA["RTA_TABLE"]
_U32 = struct.Struct("=I")


class KernelRoute(NamedTuple):
    """A route as dumped (a NamedTuple: see `addresses.KernelAddress`)."""

    dst: IPNetwork
    gateway: IPAddress | None
    oif: int
    onlink: bool
    priority: int
    prefsrc: IPAddress | None = None
    table: int = wire.RT_TABLE_MAIN

    @property
    def dst_key(self) -> tuple[int, int, int]:
        """(table, network address, prefix length) as integers: cheap to hash and compare, for
        diffs over thousands of routes."""
        return self.table, int(self.dst.network_address), self.dst.prefixlen


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
    request = rtmsg()
    request["family"] = family
    request["table"] = only if only < 256 else wire.RT_TABLE_UNSPEC
    request["proto"] = protocol or wire.RTPROT_UNSPEC
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
        for attr, value in wire.attributes(message, wire.HEADER.size + _RTMSG.size):
            if attr == RTA_DST:
                dst = value
            elif attr == RTA_GATEWAY:
                gateway = wire.address(value)
            elif attr == RTA_PREFSRC:
                prefsrc = wire.address(value)
            elif attr == RTA_OIF:
                (oif,) = _U32.unpack(value)
            elif attr == RTA_PRIORITY:
                (priority,) = _U32.unpack(value)
            elif attr == RTA_TABLE:
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

    return rtnl.dump(request, wire.RTM_GETROUTE, decode)


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
) -> Any:
    """An rtmsg for RTM_NEWROUTE or RTM_DELROUTE. `dst` None: the default route. A delete names
    the route as it was dumped, with `route_type` 0 (any)."""
    anchor = dst if dst is not None else gateway
    msg = rtmsg()
    msg["family"] = wire.AF_INET6 if anchor is not None and anchor.version == 6 else wire.AF_INET
    msg["dst_len"] = dst.prefixlen if dst is not None else 0
    msg["proto"] = protocol
    msg["scope"] = wire.RT_SCOPE_UNIVERSE
    msg["type"] = route_type
    msg["flags"] = wire.RTNH_F_ONLINK if onlink else 0
    msg["table"] = table if table < 256 else wire.RT_TABLE_COMPAT
    attrs: list[tuple[str, Any]] = []
    if dst is not None:
        attrs.append(("RTA_DST", str(dst.network_address)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", str(gateway)))
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if priority is not None:
        attrs.append(("RTA_PRIORITY", priority))
    if prefsrc is not None:
        attrs.append(("RTA_PREFSRC", str(prefsrc)))
    if table > 255:
        # Only where the header cannot hold the number: one attribute less to encode on each of
        # thousands of main-table routes.
        attrs.append(("RTA_TABLE", table))
    msg["attrs"] = attrs
    return msg


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
    """The interface of the main table's IPv4 default route (one without a device, a multipath
    route, does not count)."""
    for route in dump_routes(rtnl):
        if route.dst.prefixlen == 0 and route.oif:
            return route.oif
    return None
