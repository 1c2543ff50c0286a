"""The VXLAN applier against a scripted kernel: the device checked with one request when it is
right, replaced when it is bound wrong; peers' entries sent in batches."""

from __future__ import annotations

import errno
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from minicni.agent.apply.vxlan import PeerChanges, VxlanApplier, VxlanDevice
from minicni.agent.model.plan import VXLAN_DEVICE, VxlanPeer
from minicni.net import wire
from minicni.net.addresses import KernelAddress
from minicni.net.neighbours import KernelNeighbour
from minicni.net.rtnl import Rtnl
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, link_reply

DEVICE = VxlanDevice(IPv4Address("192.168.50.11"), 2, (IPv4Network("10.244.1.0/24"),), 1450)
ADDRESS = KernelAddress(9, IPv4Network("10.244.1.0/32"), IPv4Address("10.244.1.0"))
PEER = VxlanPeer(IPv4Address("192.168.50.12"), IPv4Address("10.244.2.0"), "0e:6d:c0:a8:32:0c")


def device_reply(vni: int = 1, up: bool = True) -> Callable[[int], bytes]:
    data = [
        ("IFLA_VXLAN_ID", vni),
        ("IFLA_VXLAN_LOCAL", "192.168.50.11"),
        ("IFLA_VXLAN_LINK", 2),
        ("IFLA_VXLAN_PORT", 8472),
    ]
    info = {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": data})]}
    return lambda seq: link_reply(
        seq,
        9,
        VXLAN_DEVICE,
        0,
        flags=int(up),
        IFLA_ADDRESS=DEVICE.mac,
        IFLA_MTU=1450,
        IFLA_LINKINFO=info,
    )


def test_a_device_in_place_costs_one_request() -> None:
    sock = ScriptedSocket([device_reply(), ack])
    assert VxlanApplier(Rtnl(sock)).ensure_device(DEVICE, [ADDRESS]) == (9, False)
    assert sock.sent_types() == [wire.RTM_GETLINK]


def test_a_device_bound_to_another_vni_is_replaced_and_configured() -> None:
    sock = ScriptedSocket(
        [device_reply(vni=42), ack],
        [ack],  # delete it
        [ack],  # create ours
        [device_reply(up=False), ack],
        [done],  # its addresses: none yet
        [ack],  # our VTEP address
        [ack],  # up
    )
    assert VxlanApplier(Rtnl(sock)).ensure_device(DEVICE, [ADDRESS]) == (9, True)
    assert sock.sent_types() == [
        wire.RTM_GETLINK,
        wire.RTM_DELLINK,
        wire.RTM_NEWLINK,
        wire.RTM_GETLINK,
        wire.RTM_GETADDR,
        wire.RTM_NEWADDR,
        wire.RTM_NEWLINK,
    ]
    created = sock.sent_message(2)
    data = created.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_LINK")) == (1, 2)
    address = sock.sent_message(5, ifaddrmsg)
    assert (address.get_attr("IFA_LOCAL"), address["prefixlen"]) == ("10.244.1.0", 32)


def test_peers_are_upserted_in_one_batch_and_failures_named() -> None:
    sock = ScriptedSocket([ack], [fails(errno.EINVAL)])
    changes = PeerChanges(fdb_upsert=(PEER,), neigh_upsert=(PEER,))
    result = VxlanApplier(Rtnl(sock)).upsert_peers(9, changes)
    assert result.changed == 1
    [failure] = result.failures
    assert failure.item == PEER and "Invalid argument" in failure.reason
    fdb, neighbour = sock.sent_message(0, ndmsg), sock.sent_message(1, ndmsg)
    assert (fdb["family"], fdb.get_attr("NDA_DST"), fdb.get_attr("NDA_LLADDR")) == (
        wire.AF_BRIDGE,
        "192.168.50.12",
        PEER.vtep_mac,
    )
    assert (neighbour["family"], neighbour.get_attr("NDA_DST")) == (wire.AF_INET, "10.244.2.0")
    assert sock.sent_flags(0) & wire.CREATE_OR_REPLACE == wire.CREATE_OR_REPLACE


def test_a_stale_entry_already_gone_is_no_failure() -> None:
    stale = KernelNeighbour(9, IPv4Address("10.244.7.0"), "0e:6d:c0:a8:32:11", wire.NUD_PERMANENT)
    sock = ScriptedSocket([fails(errno.ENOENT)], [fails(errno.EPERM)])
    changes = PeerChanges(fdb_delete=(stale,), neigh_delete=(stale,))
    result = VxlanApplier(Rtnl(sock)).delete_stale(9, changes)
    assert result.changed == 1 and [f.item for f in result.failures] == [stale]
    assert sock.sent_types() == [wire.RTM_DELNEIGH, wire.RTM_DELNEIGH]


def test_an_ipv6_underlay_device_is_bound_by_local6_and_holds_both_vteps() -> None:
    from ipaddress import IPv6Address, IPv6Network

    from minicni.agent.model.plan import VXLAN_DEVICE6, vtep_mac

    local = IPv6Address("fd00:50::11")
    cidrs = (IPv4Network("10.244.1.0/24"), IPv6Network("fd00:10:244:1::/64"))
    device = VxlanDevice(local, 2, cidrs, 1430, VXLAN_DEVICE6)
    assert device.mac == vtep_mac(local)
    assert device.addresses == (("10.244.1.0", 32), ("fd00:10:244:1::", 128))
    sock = ScriptedSocket(
        [fails(errno.ENODEV)],  # not there yet
        [ack],  # create it
        [
            lambda seq: link_reply(
                seq, 9, VXLAN_DEVICE6, 0, IFLA_ADDRESS=device.mac, IFLA_MTU=1430
            ),
            ack,
        ],
        [done],  # its IPv4 addresses: none
        [ack],  # the IPv4 VTEP
        [done],  # its IPv6 addresses: none
        [ack],  # the IPv6 VTEP
        [ack],  # up
    )
    assert VxlanApplier(Rtnl(sock)).ensure_device(device, []) == (9, True)
    created = sock.sent_message(1)
    data = created.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_LOCAL6") == "fd00:50::11"
    assert data.get_attr("IFLA_VXLAN_LOCAL") is None
    six = sock.sent_message(6, ifaddrmsg)
    assert (six["family"], six["prefixlen"], six.get_attr("IFA_ADDRESS")) == (
        wire.AF_INET6,
        128,
        "fd00:10:244:1::",
    )
    assert six["flags"] & 0x02  # IFA_F_NODAD: usable at once


def test_an_ipv6_vtep_gets_an_ipv6_neighbour_entry_and_its_stale_one_goes() -> None:
    from ipaddress import IPv6Address

    peer6 = VxlanPeer(IPv4Address("192.168.50.12"), IPv6Address("fd00:10:244:2::"), PEER.vtep_mac)
    sock = ScriptedSocket([ack], [ack, ack])
    result = VxlanApplier(Rtnl(sock)).upsert_peers(9, PeerChanges(neigh_upsert=(PEER, peer6)))
    assert result.changed == 2
    families = [sock.sent_message(i, ndmsg)["family"] for i in (0, 1)]
    assert families == [wire.AF_INET, wire.AF_INET6]
