"""The VXLAN devices and their per-peer FDB and neighbour entries.

One device per underlay family (`minicni-vxlan` over IPv4, `minicni-vxlan6` over IPv6; VNI 1, UDP
8472, learning off) bound to the underlay interface that holds the node's own address of that
family. Its MAC is derived from that address (see `plan.vtep_mac`) and its addresses are our pod
CIDRs' network addresses, a /32 and a /128 (added without duplicate address detection).
Everything on these devices is ours: entries of peers that left are deleted.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from minicni.agent.apply.changes import Failure, send_changes
from minicni.agent.model.nodes import IPNetwork
from minicni.agent.model.plan import (
    VXLAN_DEVICE,
    VXLAN_PORT,
    VXLAN_VNI,
    VxlanPeer,
    vtep_address,
    vtep_mac,
)
from minicni.net import addresses, links, wire
from minicni.net.addresses import KernelAddress
from minicni.net.neighbours import KernelNeighbour, dump_neighbours, neighbour_request
from minicni.net.rtnl import Rtnl
from minicni.net.wire import IPAddress

_GONE = (errno.ENOENT, errno.ESRCH)
"""What deleting an entry that is already gone answers: what we wanted."""


@dataclass(frozen=True)
class VxlanDevice:
    """What one of our VXLAN devices must look like on this node: bound to the underlay of
    `local_ip`'s family, holding our VTEP address of each pod family (`pod_cidrs`)."""

    local_ip: IPAddress
    underlay_ifindex: int
    pod_cidrs: tuple[IPNetwork, ...]
    mtu: int
    name: str = VXLAN_DEVICE

    @property
    def mac(self) -> str:
        return vtep_mac(self.local_ip)

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """(VTEP address, prefix length: a host route's) of each pod family."""
        return tuple((str(vtep_address(cidr)), cidr.max_prefixlen) for cidr in self.pod_cidrs)

    @property
    def binding(self) -> links.Vxlan:
        """VNI, local address, underlay link and port, as the kernel reports them."""
        return links.Vxlan(VXLAN_VNI, str(self.local_ip), self.underlay_ifindex, VXLAN_PORT)


@dataclass(frozen=True)
class PeerChanges:
    fdb_upsert: tuple[VxlanPeer, ...] = ()
    fdb_delete: tuple[KernelNeighbour, ...] = ()
    neigh_upsert: tuple[VxlanPeer, ...] = ()
    neigh_delete: tuple[KernelNeighbour, ...] = ()


@dataclass
class PeerResult:
    changed: int = 0
    failures: list[Failure[Any]] = field(default_factory=list)


def diff_peers(
    peers: Iterable[VxlanPeer],
    fdb: Iterable[KernelNeighbour],
    neighbours: Iterable[KernelNeighbour],
) -> PeerChanges:
    """FDB: one permanent entry per peer MAC pointing at its node IP. Neighbours: one permanent
    entry per peer VTEP address (of any family) with its MAC. Anything else on the device is
    stale. `peers` are one device's; a dual-stack peer is there twice, with one MAC."""
    peers = list(peers)
    wanted_fdb = {peer.vtep_mac: peer for peer in peers}
    wanted_neigh: dict[IPAddress, VxlanPeer] = {peer.vtep_ip: peer for peer in peers}
    fdb_ok: set[str] = set()
    fdb_delete = []
    for entry in fdb:
        peer = wanted_fdb.get(entry.lladdr or "")
        if peer is not None and entry.dst == peer.node_ip:
            fdb_ok.add(peer.vtep_mac)
        elif entry.dst is not None:
            fdb_delete.append(entry)
    neigh_ok: set[IPAddress] = set()
    neigh_delete = []
    for entry in neighbours:
        if entry.dst is None or entry.dst.is_multicast:
            continue  # multicast entries (ff02::16 for MLD) are the kernel's own mapping
        peer = wanted_neigh.get(entry.dst)
        if peer is None:
            neigh_delete.append(entry)
        elif entry.lladdr == peer.vtep_mac and entry.state & wire.NUD_PERMANENT:
            neigh_ok.add(entry.dst)
    return PeerChanges(
        fdb_upsert=tuple(p for mac, p in wanted_fdb.items() if mac not in fdb_ok),
        fdb_delete=tuple(fdb_delete),
        neigh_upsert=tuple(p for p in peers if p.vtep_ip not in neigh_ok),
        neigh_delete=tuple(neigh_delete),
    )


class VxlanApplier:
    """Our VXLAN device and its peers' entries, through the agent's rtnetlink client."""

    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl

    def ifindex(self, name: str = VXLAN_DEVICE) -> int | None:
        link = links.find_link(self._rtnl, name)
        return link.index if link is not None else None

    def ensure_device(
        self, device: VxlanDevice, present: Iterable[KernelAddress] | None = None
    ) -> tuple[int, bool]:
        """Create or correct the device; returns (ifindex, whether anything changed).
        `present`: the node's addresses (of every family) as the caller dumped them already."""
        changed = False
        link = links.find_link(self._rtnl, device.name)
        if link is not None and link.vxlan != device.binding:
            links.delete_link(self._rtnl, index=link.index)
            link = None
        if link is None:
            self._create(device)
            changed = True
            present = None  # a new device: its addresses are not in the caller's dump
            link = links.find_link(self._rtnl, device.name)
            if link is None:
                raise RuntimeError(f"VXLAN device {device.name} vanished after creation")
        if link.mac != device.mac or link.mtu != device.mtu:
            request = links.link_request(link.index, address=device.mac, mtu=device.mtu)
            self._rtnl.request(request, wire.RTM_NEWLINK)
            changed = True
        present = list(present) if present is not None else None
        for address, prefixlen in device.addresses:
            ensured = addresses.ensure_address(self._rtnl, link.index, address, prefixlen, present)
            changed |= bool(ensured)
        if not link.up:
            self._rtnl.request(links.link_request(link.index, up=True), wire.RTM_NEWLINK)
            changed = True
        return link.index, changed

    def _create(self, device: VxlanDevice) -> None:
        request = links.vxlan_request(device.name, device.binding, device.mac, device.mtu)
        try:
            self._rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)
        except wire.NetlinkError as error:
            if error.code != errno.EEXIST:  # another agent won the race: fine
                raise

    def upsert_peers(self, index: int, changes: PeerChanges) -> PeerResult:
        replace = wire.CREATE_OR_REPLACE
        failures = send_changes(
            self._rtnl,
            changes.fdb_upsert,
            lambda p: (
                neighbour_request(wire.AF_BRIDGE, index, p.node_ip, p.vtep_mac),
                wire.RTM_NEWNEIGH,
                replace,
            ),
        )
        failures += send_changes(
            self._rtnl,
            changes.neigh_upsert,
            lambda p: (
                neighbour_request(_family(p.vtep_ip), index, p.vtep_ip, p.vtep_mac),
                wire.RTM_NEWNEIGH,
                replace,
            ),
        )
        changed = len(changes.fdb_upsert) + len(changes.neigh_upsert) - len(failures)
        return PeerResult(changed, failures)

    def delete_stale(self, index: int, changes: PeerChanges) -> PeerResult:
        failures = send_changes(
            self._rtnl,
            changes.fdb_delete,
            lambda e: (_entry_request(wire.AF_BRIDGE, index, e, e.lladdr), wire.RTM_DELNEIGH, 0),
            tolerate=_GONE,
        )
        failures += send_changes(
            self._rtnl,
            changes.neigh_delete,
            lambda e: (_entry_request(_family(e.dst), index, e), wire.RTM_DELNEIGH, 0),
            tolerate=_GONE,
        )
        changed = len(changes.fdb_delete) + len(changes.neigh_delete) - len(failures)
        return PeerResult(changed, failures)

    def current_peers(self, index: int) -> tuple[list[KernelNeighbour], list[KernelNeighbour]]:
        """The device's FDB entries, and its neighbour entries of both families."""
        return (
            dump_neighbours(self._rtnl, wire.AF_BRIDGE, index),
            dump_neighbours(self._rtnl, wire.AF_INET, index)
            + dump_neighbours(self._rtnl, wire.AF_INET6, index),
        )


def _family(address: IPAddress | None) -> int:
    return wire.AF_INET6 if address is not None and address.version == 6 else wire.AF_INET


def _entry_request(
    family: int, index: int, entry: KernelNeighbour, lladdr: str | None = None
) -> Any:
    if entry.dst is None:  # diff_peers never deletes an entry without an address
        raise ValueError(f"entry {entry} has no address")
    return neighbour_request(family, index, entry.dst, lladdr)
