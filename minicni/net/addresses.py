"""Addresses: the typed dump both programs read, the request that adds or removes one, and the
idempotent `ensure_address`. Requests and the dump are built and read with `struct` (see
`codes`)."""

from __future__ import annotations

import errno
from ipaddress import ip_address

from minicni.net import wire
from minicni.net.codes import IFA_ADDRESS, IFA_LOCAL, IFADDRMSG
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError, attr
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterable

    from minicni.net.wire import IPAddress, IPNetwork

_IFADDRMSG = IFADDRMSG
IFA_F_NODAD = 0x02
"""An IPv6 address usable at once: no duplicate address detection (1-2 s of `tentative`, in
which nothing can be sent from it). The addresses minicni adds are its own to hand out."""


class KernelAddress(Record):
    """An address on a link: `local` with the prefix of `network` (its subnet)."""

    __slots__ = ("ifindex", "local", "network")

    def __init__(self, ifindex: int, network: IPNetwork, local: IPAddress) -> None:
        self.ifindex = ifindex
        self.network = network
        self.local = local

    @property
    def cidr(self) -> str:
        """`10.244.1.1/24`: the address with its prefix length."""
        return f"{self.local}/{self.network.prefixlen}"


class AddressChanges(Record):
    """What `ensure_address` changed: the addresses it removed, whether it added the one wanted."""

    __slots__ = ("added", "removed")

    def __init__(self, removed: list[str], added: bool) -> None:
        self.removed = removed
        self.added = added

    def __bool__(self) -> bool:
        return bool(self.removed) or self.added


def dump_addresses(rtnl: Rtnl, family: int = wire.AF_INET, index: int = 0) -> list[KernelAddress]:
    """Every address of `family` (AF_UNSPEC: of every family) on every link, or on link `index`
    only. On a strict socket the kernel itself dumps only that link's: a node with 1,000 pods
    need not send them all to a plugin that wants the bridge's."""
    request = IFADDRMSG.pack(family, 0, 0, 0, index)

    def decode(message: bytes) -> KernelAddress | None:
        ifa_family, prefixlen, _, _, ifindex = _IFADDRMSG.unpack_from(message, wire.HEADER.size)
        if (family and ifa_family != family) or (index and ifindex != index):
            return None
        local = peer = None
        for kind, value in wire.attributes(message, wire.HEADER.size + _IFADDRMSG.size):
            if kind == IFA_LOCAL:
                local = value
            elif kind == IFA_ADDRESS:
                peer = value
        packed = local or peer  # IFA_LOCAL is the address itself; IPv6 has only IFA_ADDRESS
        if packed is None:
            return None
        return KernelAddress(ifindex, wire.network(packed, prefixlen), wire.address(packed))

    return rtnl.dump_decoded(request, wire.RTM_GETADDR, decode)


def address_request(index: int, address: str, prefixlen: int) -> bytes:
    """RTM_NEWADDR or RTM_DELADDR of `address/prefixlen` on link `index`; an IPv6 address is
    added without duplicate address detection (IFA_F_NODAD)."""
    packed = ip_address(address).packed
    family = wire.AF_INET if len(packed) == 4 else wire.AF_INET6
    flags = IFA_F_NODAD if family == wire.AF_INET6 else 0
    body = IFADDRMSG.pack(family, prefixlen, flags, 0, index)
    # IFA_LOCAL is the address itself; IFA_ADDRESS the peer, the same on a broadcast link.
    if family == wire.AF_INET:
        body += attr(IFA_LOCAL, packed)
    return body + attr(IFA_ADDRESS, packed)


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
    """Make `address/prefixlen` the only address of its family on link `index` (IPv6 link-local
    addresses, the kernel's own, are left alone).

    A node whose pod CIDR changed keeps the old gateway address on its bridge; rather than fail
    every pod with "already has an IP address different from ..." the stale one is replaced.
    `present`: the addresses of that family as the caller dumped them already; else they are
    dumped here.
    """
    wanted = f"{address}/{prefixlen}"
    version = 6 if ":" in address else 4
    removed: list[str] = []
    found = False
    if present is None:
        family = wire.AF_INET6 if version == 6 else wire.AF_INET
        present = dump_addresses(rtnl, family, index)
    for existing in present:
        if existing.ifindex != index or existing.network.version != version:
            continue
        if version == 6 and existing.local.is_link_local:
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
