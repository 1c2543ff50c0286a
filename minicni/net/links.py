"""Links through rtnetlink: look one up, create the bridge, the veth pair and the VXLAN device,
configure and delete them; each helper idempotent and race tolerant.

Every helper takes an open `Rtnl` bound to the namespace it works in and builds its requests with
pyroute2's message classes. Failures are raised as `NetlinkError`; the plugin turns them into CNI
errors naming the step.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, NamedTuple

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import addresses, routes, wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError

DEFAULT_MTU = 1500
RTPROT_STATIC = wire.RTPROT_STATIC  # the protocol IPRoute gave the pod's default route; kept
BRIDGE_MODE_HAIRPIN = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # replies without the counters: smaller, quicker to decode
IN6_ADDR_GEN_MODE_NONE = 1
"""IPv6 address generation off for one interface: no link-local address, hence no DAD, MLD
reports or router solicitations from it, and no per-interface IPv6 routes in its namespace."""


class Vxlan(NamedTuple):
    """What a VXLAN link is bound to: its VNI, local address, underlay link and UDP port."""

    vni: int | None
    local: str | None
    underlay: int | None
    port: int | None


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    kind: str | None
    master: int | None
    up: bool = False
    vxlan: Vxlan | None = None
    mcast_snooping: bool | None = None  # a bridge's; None for other kinds


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so DEL and GC find the veth without any saved state."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:11]}"


def link_request(
    index: int = 0, name: str | None = None, up: bool = False, family: int = 0, **attrs: Any
) -> Any:
    """An ifinfmsg naming a link by index or name. `attrs` are IFLA_* attributes by their
    lower-case name without prefix (mtu=1400, master=5)."""
    msg = ifinfmsg()
    msg["family"] = family
    msg["index"] = index
    if up:
        msg["flags"] = msg["change"] = wire.IFF_UP
    pairs = [] if name is None else [("IFLA_IFNAME", name)]
    pairs += [(f"IFLA_{key.upper()}", value) for key, value in attrs.items()]
    msg["attrs"] = pairs
    return msg


def _link_from(message: Any) -> Link:
    kind = message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return Link(
        index=message["index"],
        name=message.get_attr("IFLA_IFNAME"),
        mac=message.get_attr("IFLA_ADDRESS"),
        mtu=message.get_attr("IFLA_MTU"),
        kind=kind,
        master=message.get_attr("IFLA_MASTER"),
        up=bool(message["flags"] & wire.IFF_UP),
        vxlan=_vxlan_from(message) if kind == "vxlan" else None,
        mcast_snooping=_mcast_snooping(message) if kind == "bridge" else None,
    )


def _mcast_snooping(message: Any) -> bool | None:
    snooping = message.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_MCAST_SNOOPING")
    return None if snooping is None else bool(snooping)


def _vxlan_from(message: Any) -> Vxlan:
    data = message.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    if data is None:
        return Vxlan(None, None, None, None)
    return Vxlan(
        vni=data.get_attr("IFLA_VXLAN_ID"),
        local=data.get_attr("IFLA_VXLAN_LOCAL"),
        underlay=data.get_attr("IFLA_VXLAN_LINK"),
        port=data.get_attr("IFLA_VXLAN_PORT"),
    )


def get_link(rtnl: Rtnl, name: str | None = None, index: int = 0) -> Link | None:
    """The link called `name` (or numbered `index`), None if there is none."""
    request = link_request(index, name, ext_mask=RTEXT_FILTER_SKIP_STATS)
    try:
        return _link_from(rtnl.request(request, wire.RTM_GETLINK)[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def find_link(rtnl: Rtnl, name: str) -> Link | None:
    return get_link(rtnl, name)


def random_mac() -> str:
    """A random locally administered unicast MAC, as the kernel would pick one."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def ensure_bridge(rtnl: Rtnl, name: str) -> Link:
    """The bridge, up, multicast snooping off; created unless it exists, another invocation
    winning the race is fine.

    Snooping is off because a pod network has no multicast querier: without one the bridge floods
    multicast anyway, and snooping only adds per-port work to every port added or removed.
    """
    bridge = get_link(rtnl, name)
    if bridge is None:
        # A fixed MAC from the start: otherwise the bridge takes the lowest port MAC and changes
        # it as pods come and go, which flushes every pod's neighbour entry for the gateway.
        request = link_request(
            name=name,
            up=True,
            address=random_mac(),
            linkinfo={
                "attrs": [
                    ("IFLA_INFO_KIND", "bridge"),
                    ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_MCAST_SNOOPING", 0)]}),
                ]
            },
        )
        try:
            rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        bridge = get_link(rtnl, name)
        if bridge is None:  # deleted between our add and get: let the runtime retry
            raise NetlinkError(errno.EAGAIN, f"bridge {name} vanished while being set up")
    if bridge.kind != "bridge":
        raise NetlinkError(
            errno.EEXIST, f"{name} exists but is a {bridge.kind or 'non-bridge'} link"
        )
    if not bridge.up or bridge.mcast_snooping:  # set down by hand; made by an older version
        info = {
            "attrs": [
                ("IFLA_INFO_KIND", "bridge"),
                ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_MCAST_SNOOPING", 0)]}),
            ]
        }
        rtnl.request(link_request(bridge.index, up=True, linkinfo=info), wire.RTM_NEWLINK)
    return bridge


def default_route_mtu(rtnl: Rtnl) -> int:
    """MTU of the interface that holds the IPv4 default route, else 1500."""
    index = routes.default_route_ifindex(rtnl)
    link = get_link(rtnl, index=index) if index is not None else None
    return int(link.mtu) if link is not None else DEFAULT_MTU


def veth_request(
    host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> Any:
    """Both ends down: the kernel cannot open a veth before its peer exists (ENOTCONN), and the
    host end is brought up by `bring_up_port`, after its IPv6 is switched off (the kernel refuses
    IFLA_AF_SPEC in a create request)."""
    peer = link_request(name=pod_ifname, mtu=mtu, net_ns_fd=pod_netns_fd)
    info = {"attrs": [("VETH_INFO_PEER", peer)]}
    return link_request(
        name=host_ifname,
        mtu=mtu,
        master=bridge_index,
        linkinfo={"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", info)]},
    )


def create_veth_pair(
    rtnl: Rtnl, host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> None:
    """Create the pair in one request from the host: its end on the bridge, the pod end
    created directly in the pod namespace, so it never exists under its final name (say, eth0)
    on the host, where that name is usually taken. Both ends stay down (see `veth_request`).

    A host end left over by a killed ADD for the same container has the same name: it is
    replaced. Raises EEXIST if the pod end's name is taken in the pod namespace.
    """
    request = veth_request(host_ifname, pod_ifname, pod_netns_fd, mtu, bridge_index)
    try:
        rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST or not delete_link(rtnl, host_ifname):
            raise
        rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)


def delete_link(rtnl: Rtnl, name: str | None = None, index: int = 0) -> bool:
    """Delete a link by name (or index); False if it was not there."""
    try:
        rtnl.request(link_request(index, name), wire.RTM_DELLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def _ipv6_off() -> tuple[str, Any]:
    """IFLA_AF_SPEC turning the interface's IPv6 address generation off (it must come with the
    request that brings the interface up: once up with a carrier, it has its link-local)."""
    inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]}
    return ("IFLA_AF_SPEC", {"attrs": [("AF_INET6", inet6)]})


def bring_up_port(rtnl: Rtnl, index: int, hairpin: bool) -> None:
    """The host end of a pod's veth, on the bridge, up in one request: IPv6 address generation
    off, and hairpin on when asked.

    A bridge port needs no IPv6 of its own; with it, every port adds a link-local address and
    three IPv6 routes to the node's namespace, which every later port change walks (at 1,000
    pods that is the bulk of an ADD's and a DEL's kernel time). Hairpin lets a pod reach itself
    through a Service VIP that DNATs back to it: the bridge sends a frame back out of the port it
    came in on.
    """
    request = link_request(index, up=True)
    request["attrs"].append(_ipv6_off())
    if hairpin:
        port = {"attrs": [("IFLA_BRPORT_MODE", BRIDGE_MODE_HAIRPIN)]}
        slave = [("IFLA_INFO_SLAVE_KIND", "bridge"), ("IFLA_INFO_SLAVE_DATA", port)]
        request["attrs"].append(("IFLA_LINKINFO", {"attrs": slave}))
    rtnl.request(request, wire.RTM_NEWLINK)


def configure_pod_interface(
    rtnl: Rtnl,
    index: int,
    address: str,
    prefixlen: int,
    gateway: str | None,
    *,
    ipv6: bool = False,
) -> None:
    """The pod's address, the link up, and its default route via `gateway` (when given).

    `ipv6` False (a network without an IPv6 range): the interface comes up with IPv6 address
    generation off, so it has no link-local address and sends no DAD, MLD or router
    solicitation, which the bridge would otherwise flood to every other pod on the node. The
    pod's loopback keeps ::1.
    """
    rtnl.request(
        addresses.address_request(index, address, prefixlen), wire.RTM_NEWADDR, wire.CREATE_NEW
    )
    up = link_request(index, up=True)
    if not ipv6:
        up["attrs"].append(_ipv6_off())
    rtnl.request(up, wire.RTM_NEWLINK)
    if gateway is not None:
        route = routes.route_request(
            None, ip_address(gateway), table=wire.RT_TABLE_MAIN, protocol=RTPROT_STATIC, oif=index
        )
        try:
            rtnl.request(route, wire.RTM_NEWROUTE, wire.CREATE_NEW)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise NetlinkError(exc.code, "the container already has a default route") from exc
            raise


def vxlan_request(name: str, vxlan: Vxlan, mac: str, mtu: int) -> Any:
    """A VXLAN link (down, learning off: every FDB entry is set by us) for RTM_NEWLINK."""
    data = [
        ("IFLA_VXLAN_ID", vxlan.vni),
        ("IFLA_VXLAN_LOCAL", vxlan.local),
        ("IFLA_VXLAN_LINK", vxlan.underlay),
        ("IFLA_VXLAN_PORT", vxlan.port),
        ("IFLA_VXLAN_LEARNING", 0),
    ]
    return link_request(
        name=name,
        address=mac,
        mtu=mtu,
        linkinfo={"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": data})]},
    )
