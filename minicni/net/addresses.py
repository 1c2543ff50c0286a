"""Addresses: the typed dump both programs read, the request that adds or removes one, and the
idempotent `ensure_address`."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any, NamedTuple

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from minicni.net import wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import IPAddress, IPNetwork, NetlinkError

_IFADDRMSG = wire.body_struct(ifaddrmsg)
_IFA = wire.attribute_codes(ifaddrmsg)
IFA_ADDRESS = _IFA["IFA_ADDRESS"]
IFA_LOCAL = _IFA["IFA_LOCAL"]


class KernelAddress(NamedTuple):
    """An address on a link: `local` with the prefix of `network` (its subnet). A NamedTuple,
    as every typed dump's value: a dataclass costs the plugin ~1 ms to define at import."""

    ifindex: int
    network: IPNetwork
    local: IPAddress

    @property
    def cidr(self) -> str:
        """`10.244.1.1/24`: the address with its prefix length."""
        return f"{self.local}/{self.network.prefixlen}"


class AddressChanges(NamedTuple):
    """What `ensure_address` changed: the addresses it removed, whether it added the one wanted."""

    removed: list[str]
    added: bool

    def __bool__(self) -> bool:
        return bool(self.removed) or self.added


def dump_addresses(rtnl: Rtnl, family: int = wire.AF_INET, index: int = 0) -> list[KernelAddress]:
    """Every address of `family` (AF_UNSPEC: of every family) on every link, or on link `index`
    only. On a strict socket the kernel itself dumps only that link's: a node with 1,000 pods
    need not send them all to a plugin that wants the bridge's."""
    request = ifaddrmsg()
    request["family"] = family
    request["index"] = index

    def decode(message: bytes) -> KernelAddress | None:
        ifa_family, prefixlen, _, _, ifindex = _IFADDRMSG.unpack_from(message, wire.HEADER.size)
        if (family and ifa_family != family) or (index and ifindex != index):
            return None
        local = peer = None
        for attr, value in wire.attributes(message, wire.HEADER.size + _IFADDRMSG.size):
            if attr == IFA_LOCAL:
                local = value
            elif attr == IFA_ADDRESS:
                peer = value
        packed = local or peer  # IFA_LOCAL is the address itself; IPv6 has only IFA_ADDRESS
        if packed is None:
            return None
        return KernelAddress(ifindex, wire.network(packed, prefixlen), wire.address(packed))

    return rtnl.dump(request, wire.RTM_GETADDR, decode)


def address_request(index: int, address: str, prefixlen: int) -> Any:
    msg = ifaddrmsg()
    msg["family"] = wire.AF_INET6 if ":" in address else wire.AF_INET
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    # IFA_LOCAL is the address itself; IFA_ADDRESS the peer, the same on a broadcast link.
    local = [("IFA_LOCAL", address)] if msg["family"] == wire.AF_INET else []
    msg["attrs"] = [*local, ("IFA_ADDRESS", address)]
    return msg


def interface_addresses(rtnl: Rtnl, index: int) -> set[str]:
    """`address/prefixlen` of every address, of any family, on link `index`."""
    return {a.cidr for a in dump_addresses(rtnl, wire.AF_UNSPEC, index)}


def ensure_address(
    rtnl: Rtnl,
    index: int,
    address: str,
    prefixlen: int,
    present: Iterable[KernelAddress] | None = None,
) -> AddressChanges:
    """Make `address/prefixlen` the only IPv4 address of link `index`.

    A node whose pod CIDR changed keeps the old gateway address on its bridge; rather than fail
    every pod with "already has an IP address different from ..." the stale one is replaced.
    `present`: the IPv4 addresses as the caller dumped them already; else they are dumped here.
    """
    wanted = f"{address}/{prefixlen}"
    removed: list[str] = []
    found = False
    for existing in dump_addresses(rtnl, index=index) if present is None else present:
        if existing.ifindex != index or existing.network.version != 4:
            continue
        if existing.cidr == wanted:
            found = True
            continue
        request = address_request(index, str(existing.local), existing.network.prefixlen)
        try:
            rtnl.request(request, wire.RTM_DELADDR)
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:  # removed meanwhile by a concurrent ADD
                raise
        removed.append(existing.cidr)
    if found:
        return AddressChanges(removed, added=False)
    try:
        rtnl.request(address_request(index, address, prefixlen), wire.RTM_NEWADDR, wire.CREATE_NEW)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        return AddressChanges(removed, added=False)
    return AddressChanges(removed, added=True)
