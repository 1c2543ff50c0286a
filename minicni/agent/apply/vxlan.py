"""The VXLAN device and its per-peer FDB and neighbour entries.

One device (`minicni-vxlan`, VNI 1, UDP 8472, learning off) bound to the underlay interface that
holds the node's own address. Its MAC is derived from that address (see `plan.vtep_mac`) and its
only address is our pod CIDR's network address as a /32. Everything on this device is ours:
entries of peers that left are deleted.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from minicni.agent.apply import rtnl_dump
from minicni.agent.apply.netlink_batch import Failure, send_batched
from minicni.agent.model.plan import (
    VXLAN_DEVICE,
    VXLAN_PORT,
    VXLAN_VNI,
    VxlanPeer,
    vtep_address,
    vtep_mac,
)

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7


@dataclass(frozen=True)
class VxlanDevice:
    """What our VXLAN device must look like on this node."""

    local_ip: IPv4Address
    underlay_ifindex: int
    pod_cidr: IPv4Network
    mtu: int
    name: str = VXLAN_DEVICE

    @property
    def mac(self) -> str:
        return vtep_mac(self.local_ip)

    @property
    def address(self) -> IPv4Address:
        return vtep_address(self.pod_cidr)


@dataclass(frozen=True)
class PeerChanges:
    fdb_upsert: tuple[VxlanPeer, ...] = ()
    fdb_delete: tuple[rtnl_dump.KernelNeighbour, ...] = ()
    neigh_upsert: tuple[VxlanPeer, ...] = ()
    neigh_delete: tuple[rtnl_dump.KernelNeighbour, ...] = ()


@dataclass
class PeerResult:
    changed: int = 0
    failures: list[Failure[Any]] = field(default_factory=list)


def diff_peers(
    peers: Iterable[VxlanPeer],
    fdb: Iterable[rtnl_dump.KernelNeighbour],
    neighbours: Iterable[rtnl_dump.KernelNeighbour],
) -> PeerChanges:
    """FDB: one permanent entry per peer MAC pointing at its node IP. Neighbours: one permanent
    entry per peer VTEP address with its MAC. Anything else on the device is stale."""
    peers = list(peers)
    wanted_fdb = {peer.vtep_mac: peer for peer in peers}
    wanted_neigh = {peer.vtep_ip: peer for peer in peers}
    fdb_ok: set[str] = set()
    fdb_delete = []
    for entry in fdb:
        peer = wanted_fdb.get(entry.lladdr or "")
        if peer is not None and entry.dst == peer.node_ip:
            fdb_ok.add(peer.vtep_mac)
        elif entry.dst is not None:
            fdb_delete.append(entry)
    neigh_ok: set[IPv4Address] = set()
    neigh_delete = []
    for entry in neighbours:
        if entry.dst is None:
            continue
        peer = wanted_neigh.get(entry.dst)
        if peer is None:
            neigh_delete.append(entry)
        elif entry.lladdr == peer.vtep_mac and entry.state & NUD_PERMANENT:
            neigh_ok.add(entry.dst)
    return PeerChanges(
        fdb_upsert=tuple(p for p in peers if p.vtep_mac not in fdb_ok),
        fdb_delete=tuple(fdb_delete),
        neigh_upsert=tuple(p for p in peers if p.vtep_ip not in neigh_ok),
        neigh_delete=tuple(neigh_delete),
    )


def _ndmsg(msg_type: int, flags: int, family: int, ifindex: int, **attrs: Any) -> Any:
    from pyroute2.netlink import NLM_F_ACK
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    message = ndmsg()
    message["family"] = family
    message["ifindex"] = ifindex
    message["state"] = NUD_PERMANENT
    message["flags"] = NTF_SELF if family == AF_BRIDGE else 0
    message["attrs"] = [(name, value) for name, value in attrs.items() if value is not None]
    message["header"]["type"] = msg_type
    message["header"]["flags"] = flags | NLM_F_ACK
    return message


class VxlanApplier:
    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def ifindex(self, name: str = VXLAN_DEVICE) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def ensure_device(self, device: VxlanDevice) -> tuple[int, bool]:
        """Create or correct the device; returns (ifindex, whether anything changed)."""
        changed = False
        index = self.ifindex(device.name)
        if index is not None and not self._matches(index, device):
            self._ipr.link("del", index=index)
            index = None
        if index is None:
            self._create(device)
            changed = True
            index = self.ifindex(device.name)
            if index is None:
                raise RuntimeError(f"VXLAN device {device.name} vanished after creation")
        link = self._ipr.link("get", index=index)[0]
        if link.get("address") != device.mac or link.get("mtu") != device.mtu:
            self._ipr.link("set", index=index, address=device.mac, mtu=device.mtu)
            changed = True
        changed |= self._ensure_address(index, device.address)
        if not link["flags"] & 1:  # IFF_UP
            self._ipr.link("set", index=index, state="up")
            changed = True
        return index, changed

    def _create(self, device: VxlanDevice) -> None:
        from pyroute2 import NetlinkError

        try:
            self._ipr.link(
                "add",
                ifname=device.name,
                kind="vxlan",
                vxlan_id=VXLAN_VNI,
                vxlan_local=str(device.local_ip),
                vxlan_link=device.underlay_ifindex,
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                address=device.mac,
                mtu=device.mtu,
            )
        except NetlinkError as error:
            if error.code != errno.EEXIST:  # another agent won the race: fine
                raise

    def _matches(self, index: int, device: VxlanDevice) -> bool:
        link = self._ipr.link("get", index=index)[0]
        info = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
        if info != "vxlan":
            return False
        data = link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA")) or {}
        return bool(
            data.get("IFLA_VXLAN_ID") == VXLAN_VNI
            and data.get("IFLA_VXLAN_LOCAL") == str(device.local_ip)
            and data.get("IFLA_VXLAN_LINK") == device.underlay_ifindex
            and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT
        )

    def _ensure_address(self, index: int, address: IPv4Address) -> bool:
        present = [a for a in rtnl_dump.dump_addresses() if a.ifindex == index]
        changed = False
        for other in present:
            if other.local != address or other.network.prefixlen != 32:
                self._ipr.addr(
                    "del", index=index, address=str(other.local), prefixlen=other.network.prefixlen
                )
                changed = True
        if not any(a.local == address and a.network.prefixlen == 32 for a in present):
            self._ipr.addr("replace", index=index, address=str(address), prefixlen=32)
            changed = True
        return changed

    def upsert_peers(self, index: int, changes: PeerChanges) -> PeerResult:
        from pyroute2.netlink.nlsocket import NetlinkRequest
        from pyroute2.netlink.rtnl import RTM_NEWNEIGH

        replace = NetlinkRequest.flags["replace"]
        failures = send_batched(
            self._ipr,
            changes.fdb_upsert,
            lambda p: _ndmsg(
                RTM_NEWNEIGH,
                replace,
                AF_BRIDGE,
                index,
                NDA_LLADDR=p.vtep_mac,
                NDA_DST=str(p.node_ip),
            ),
            lambda p: self._ipr.fdb(
                "replace", ifindex=index, lladdr=p.vtep_mac, dst=str(p.node_ip)
            ),
        )
        failures += send_batched(
            self._ipr,
            changes.neigh_upsert,
            lambda p: _ndmsg(
                RTM_NEWNEIGH,
                replace,
                socket.AF_INET,
                index,
                NDA_DST=str(p.vtep_ip),
                NDA_LLADDR=p.vtep_mac,
            ),
            lambda p: self._ipr.neigh(
                "replace", ifindex=index, dst=str(p.vtep_ip), lladdr=p.vtep_mac, state=NUD_PERMANENT
            ),
        )
        changed = len(changes.fdb_upsert) + len(changes.neigh_upsert) - len(failures)
        return PeerResult(changed, failures)

    def delete_stale(self, index: int, changes: PeerChanges) -> PeerResult:
        from pyroute2.netlink.nlsocket import NetlinkRequest
        from pyroute2.netlink.rtnl import RTM_DELNEIGH

        request = NetlinkRequest.flags["req"]
        failures = send_batched(
            self._ipr,
            changes.fdb_delete,
            lambda e: _ndmsg(
                RTM_DELNEIGH, request, AF_BRIDGE, index, NDA_LLADDR=e.lladdr, NDA_DST=str(e.dst)
            ),
            lambda e: self._ignore_missing(
                self._ipr.fdb, "del", ifindex=index, lladdr=e.lladdr, dst=str(e.dst)
            ),
        )
        failures += send_batched(
            self._ipr,
            changes.neigh_delete,
            lambda e: _ndmsg(RTM_DELNEIGH, request, socket.AF_INET, index, NDA_DST=str(e.dst)),
            lambda e: self._ignore_missing(self._ipr.neigh, "del", ifindex=index, dst=str(e.dst)),
        )
        changed = len(changes.fdb_delete) + len(changes.neigh_delete) - len(failures)
        return PeerResult(changed, failures)

    @staticmethod
    def _ignore_missing(call: Any, *args: Any, **kwargs: Any) -> None:
        from pyroute2 import NetlinkError

        try:
            call(*args, **kwargs)
        except NetlinkError as error:
            if error.code not in (errno.ENOENT, errno.ESRCH):
                raise

    def current_peers(
        self, index: int
    ) -> tuple[list[rtnl_dump.KernelNeighbour], list[rtnl_dump.KernelNeighbour]]:
        return (
            rtnl_dump.dump_neighbours(AF_BRIDGE, index),
            rtnl_dump.dump_neighbours(socket.AF_INET, index),
        )
