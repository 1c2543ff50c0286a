"""Neighbour and bridge FDB entries: the typed dump of one link's entries, and the request that
adds, replaces or deletes one (decoded with `struct`, like routes: the agent's VXLAN peers)."""

from __future__ import annotations

import errno
from typing import Any, NamedTuple

from pyroute2.netlink.rtnl.ndmsg import ndmsg

from minicni.net import wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import IPAddress, NetlinkError

_NDMSG = wire.body_struct(ndmsg)
_NDA = wire.attribute_codes(ndmsg)
NDA_DST = _NDA["NDA_DST"]
NDA_LLADDR = _NDA["NDA_LLADDR"]


class KernelNeighbour(NamedTuple):
    """A neighbour (AF_INET) or FDB (AF_BRIDGE) entry: `dst` is the IP, `lladdr` the MAC."""

    ifindex: int
    dst: IPAddress | None
    lladdr: str | None
    state: int


def dump_neighbours(rtnl: Rtnl, family: int, ifindex: int) -> list[KernelNeighbour]:
    """Neighbour entries (family AF_INET) or FDB entries (AF_BRIDGE) on link `ifindex`."""
    request = ndmsg()
    request["family"] = family

    def decode(message: bytes) -> KernelNeighbour | None:
        ndm_family, ndm_ifindex, state, _, _ = _NDMSG.unpack_from(message, wire.HEADER.size)
        if ndm_family != family or ndm_ifindex != ifindex:
            return None
        dst = lladdr = None
        for attr, value in wire.attributes(message, wire.HEADER.size + _NDMSG.size):
            if attr == NDA_DST and len(value) in (4, 16):
                dst = wire.address(value)
            elif attr == NDA_LLADDR:
                lladdr = value.hex(":")
            if dst is not None and lladdr is not None:
                break  # the rest (cache info, probes, VNI, port) is not needed
        return KernelNeighbour(ndm_ifindex, dst, lladdr, state)

    try:
        return rtnl.dump_decoded(request, wire.RTM_GETNEIGH, decode)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return []
        raise


def neighbour_request(family: int, ifindex: int, dst: IPAddress, lladdr: str | None = None) -> Any:
    """A permanent entry on `ifindex` for RTM_NEWNEIGH or RTM_DELNEIGH: with AF_INET, `dst`'s MAC
    is `lladdr`; with AF_BRIDGE (an FDB entry of the device itself), frames for `lladdr` go to
    `dst`."""
    msg = ndmsg()
    msg["family"] = family
    msg["ifindex"] = ifindex
    msg["state"] = wire.NUD_PERMANENT
    msg["flags"] = wire.NTF_SELF if family == wire.AF_BRIDGE else 0
    attrs: list[tuple[str, Any]] = [("NDA_DST", str(dst))]
    if lladdr is not None:
        attrs.append(("NDA_LLADDR", lladdr))
    msg["attrs"] = attrs
    return msg
