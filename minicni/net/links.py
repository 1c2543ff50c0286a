"""Links through rtnetlink: look one up, create the bridge, the veth pair and the VXLAN device,
configure and delete them; each helper idempotent and race tolerant.

Every helper takes an open `Rtnl` bound to the namespace it works in. The requests of a pod's ADD
and DEL, and the decoding of every link, are built with `struct` from `codes` (pyroute2's
definitions, proven equal in tests/net/test_codes.py); the agent's own requests (`link_request`,
`vxlan_request`) use pyroute2's `ifinfmsg`. Failures are raised as `NetlinkError`; the plugin
turns them into CNI errors naming the step.
"""

from __future__ import annotations

import errno
import os

from minicni.digest import sha256_hex
from minicni.net import addresses, routes, wire
from minicni.net.codes import (
    AF_SPEC_INET6,
    IFINFOMSG,
    IFLA_ADDRESS,
    IFLA_AF_SPEC,
    IFLA_BR_MCAST_SNOOPING,
    IFLA_BR_NF_CALL_IP6TABLES,
    IFLA_BR_NF_CALL_IPTABLES,
    IFLA_BRPORT_MODE,
    IFLA_EXT_MASK,
    IFLA_IF_NETNSID,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INET6_ADDR_GEN_MODE,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_INFO_SLAVE_DATA,
    IFLA_INFO_SLAVE_KIND,
    IFLA_LINK_NETNSID,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_VXLAN_ID,
    IFLA_VXLAN_LINK,
    IFLA_VXLAN_LOCAL,
    IFLA_VXLAN_LOCAL6,
    IFLA_VXLAN_PORT,
    VETH_INFO_PEER,
)
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError, attr
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

DEFAULT_MTU = 1500
RTPROT_STATIC = wire.RTPROT_STATIC  # the protocol IPRoute gave the pod's default route; kept
BRIDGE_MODE_HAIRPIN = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # replies without the counters: smaller, quicker to decode
IN6_ADDR_GEN_MODE_NONE = 1
"""IPv6 address generation off for one interface: no link-local address, hence no DAD, MLD
reports or router solicitations from it, and no per-interface IPv6 routes in its namespace."""
IFALIAS_MAX = 255  # bytes (IFALIASZ - 1)
NETNSA_NSID_NOT_ASSIGNED = 0xFFFFFFFF  # -1 as the uint32 pyroute2 decodes


class BridgeNetfilter(Record):
    """The bridge's own switches that send its bridged IPv4 / IPv6 traffic through iptables
    (IFLA_BR_NF_CALL_IPTABLES / _IP6TABLES); each is ORed with the node's sysctl
    net.bridge.bridge-nf-call-ip(6)tables. With br_netfilter they keep Services working on the
    bridge even on a node where that sysctl is 0: a reply between two pods of one bridge then
    passes conntrack, which undoes the Service's DNAT."""

    __slots__ = ("ip6tables", "iptables")

    def __init__(self, iptables: bool, ip6tables: bool) -> None:
        self.iptables = iptables
        self.ip6tables = ip6tables

    def __iter__(self) -> Iterator[bool]:
        return iter((self.iptables, self.ip6tables))


class Vxlan(Record):
    """What a VXLAN link is bound to: its VNI, local address, underlay link and UDP port."""

    __slots__ = ("local", "port", "underlay", "vni")

    def __init__(
        self, vni: int | None, local: str | None, underlay: int | None, port: int | None
    ) -> None:
        self.vni = vni
        self.local = local
        self.underlay = underlay
        self.port = port


class Link(Record):
    __slots__ = (
        "alias",
        "index",
        "kind",
        "mac",
        "master",
        "mcast_snooping",
        "mtu",
        "name",
        "netfilter",
        "peer_netnsid",
        "up",
        "vxlan",
    )

    def __init__(
        self,
        index: int,
        name: str,
        mac: str | None,
        mtu: int,
        kind: str | None,
        master: int | None,
        up: bool = False,
        vxlan: Vxlan | None = None,
        alias: str | None = None,
        peer_netnsid: int | None = None,  # a veth's: where its peer is, seen from this namespace
        netfilter: BridgeNetfilter | None = None,
        mcast_snooping: bool | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.kind = kind
        self.master = master
        self.up = up
        self.vxlan = vxlan
        self.alias = alias
        self.peer_netnsid = peer_netnsid
        self.netfilter = netfilter
        """A bridge's netfilter switches; None for other links, or a kernel built without
        bridge netfilter (it reports no such attribute)."""
        self.mcast_snooping = mcast_snooping
        """A bridge's multicast snooping; None for other links."""

    def replaced(self, **changes: object) -> Link:
        """A copy with `changes` (field name -> value)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return Link(**values)


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so DEL and GC find the veth without any saved state."""
    return f"veth{sha256_hex(f'{container_id}/{ifname}'.encode())[:11]}"


def attachment_alias(container_id: str, ifname: str) -> str:
    """The alias (IFLA_IFALIAS) minicni gives both ends of an attachment's veth: its mark, by
    which DEL and GC tell their own link from anyone else's, and a hint for `ip link`."""
    alias = f"minicni {container_id}/{ifname}"
    if len(alias.encode()) <= IFALIAS_MAX:
        return alias
    return f"minicni sha256:{sha256_hex(f'{container_id}/{ifname}'.encode())}"


def link_body(
    index: int = 0, name: str | None = None, up: bool = False, attrs: bytes = b""
) -> bytes:
    """An ifinfomsg naming a link by index or name, `attrs` (encoded) after the name."""
    flags = wire.IFF_UP if up else 0
    body = IFINFOMSG.pack(0, 0, index, flags, flags)
    if name is not None:
        body += attr(IFLA_IFNAME, wire.asciiz(name))
    return body + attrs


def link_request(
    index: int = 0, name: str | None = None, up: bool = False, family: int = 0, **attrs: Any
) -> Any:
    """The agent's: an ifinfmsg (pyroute2) naming a link by index or name. `attrs` are IFLA_*
    attributes by their lower-case name without prefix (mtu=1400, master=5)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["family"] = family
    msg["index"] = index
    if up:
        msg["flags"] = msg["change"] = wire.IFF_UP
    pairs = [] if name is None else [("IFLA_IFNAME", name)]
    pairs += [(f"IFLA_{key.upper()}", value) for key, value in attrs.items()]
    msg["attrs"] = pairs
    return msg


def decode_link(message: bytes) -> Link:
    """A link as the kernel describes it (RTM_NEWLINK: a GET's answer, a dump's entry)."""
    _, _, index, flags, _ = IFINFOMSG.unpack_from(message, wire.HEADER.size)
    found = wire.attribute_map(message, wire.HEADER.size + IFINFOMSG.size)
    info = wire.attribute_map(found.get(IFLA_LINKINFO, b""))
    kind = wire.text(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None
    data = wire.attribute_map(info.get(IFLA_INFO_DATA, b""))
    bridge = kind == "bridge"
    snooping = data.get(IFLA_BR_MCAST_SNOOPING) if bridge else None
    nf_iptables = data.get(IFLA_BR_NF_CALL_IPTABLES) if bridge else None
    netfilter = None
    if nf_iptables is not None:
        nf_ip6tables = data.get(IFLA_BR_NF_CALL_IP6TABLES, b"\0")
        netfilter = BridgeNetfilter(bool(nf_iptables[0]), bool(nf_ip6tables[0]))
    netnsid = found.get(IFLA_LINK_NETNSID)
    return Link(
        index=index,
        name=wire.text(found.get(IFLA_IFNAME, b"")),
        mac=wire.mac_text(found[IFLA_ADDRESS]) if IFLA_ADDRESS in found else None,
        mtu=_u32(found.get(IFLA_MTU)) or 0,
        kind=kind,
        master=_u32(found.get(IFLA_MASTER)),
        up=bool(flags & wire.IFF_UP),
        vxlan=_vxlan_from(data) if kind == "vxlan" else None,
        alias=wire.text(found[IFLA_IFALIAS]) if IFLA_IFALIAS in found else None,
        peer_netnsid=None if netnsid is None else int(wire.I32.unpack(netnsid)[0]),
        netfilter=netfilter,
        mcast_snooping=None if snooping is None else bool(snooping[0]),
    )


def _u32(value: bytes | None) -> int | None:
    return None if value is None else int(wire.U32.unpack(value)[0])


def _vxlan_local(packed: bytes) -> str:
    if len(packed) == 4:
        return ".".join(str(octet) for octet in packed)
    return str(wire.address(packed))


def _vxlan_from(data: dict[int, bytes]) -> Vxlan:
    local = data.get(IFLA_VXLAN_LOCAL) or data.get(IFLA_VXLAN_LOCAL6)
    port = data.get(IFLA_VXLAN_PORT)
    return Vxlan(
        vni=_u32(data.get(IFLA_VXLAN_ID)),
        local=_vxlan_local(local) if local else None,
        underlay=_u32(data.get(IFLA_VXLAN_LINK)),
        port=int(wire.BE16.unpack(port)[0]) if port else None,
    )


def get_link(
    rtnl: Rtnl, name: str | None = None, index: int = 0, *, netnsid: int | None = None
) -> Link | None:
    """The link called `name` (or numbered `index`), None if there is none. `netnsid`: in the
    namespace `rtnl`'s own knows by that id (IFLA_TARGET_NETNSID), not in its own."""
    attrs = attr(IFLA_EXT_MASK, wire.u32(RTEXT_FILTER_SKIP_STATS))
    if netnsid is not None:
        attrs += attr(IFLA_IF_NETNSID, wire.I32.pack(netnsid))
    request = link_body(index, name, attrs=attrs)
    try:
        return decode_link(rtnl.request(request, wire.RTM_GETLINK)[0])
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


def _bridge_info(snooping_off: bool = True, netfilter_on: bool = True) -> bytes:
    """IFLA_LINKINFO of a bridge: multicast snooping off, the netfilter switches on."""
    data = attr(IFLA_BR_MCAST_SNOOPING, wire.u8(0)) if snooping_off else b""
    if netfilter_on:
        data += attr(IFLA_BR_NF_CALL_IPTABLES, wire.u8(1))
        data += attr(IFLA_BR_NF_CALL_IP6TABLES, wire.u8(1))
    kind = attr(IFLA_INFO_KIND, wire.asciiz("bridge"))
    return attr(IFLA_LINKINFO, kind + attr(IFLA_INFO_DATA, data))


def ensure_bridge(rtnl: Rtnl, name: str) -> Link:
    """The bridge, up, multicast snooping off, its netfilter switches on (`BridgeNetfilter`);
    created unless it exists, another invocation winning the race is fine. An existing bridge
    as it should be costs one request.

    Snooping is off because a pod network has no multicast querier: without one the bridge floods
    multicast anyway, and snooping only adds per-port work to every port added or removed.
    """
    bridge = get_link(rtnl, name)
    if bridge is None:
        # A fixed MAC from the start: otherwise the bridge takes the lowest port MAC and changes
        # it as pods come and go, which flushes every pod's neighbour entry for the gateway.
        mac = attr(IFLA_ADDRESS, wire.mac_bytes(random_mac()))
        request = link_body(name=name, up=True, attrs=mac + _bridge_info())
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
    if not bridge_in_order(bridge):
        # set down by hand, or made by an older version: one request puts all of it right
        info = _bridge_info(snooping_off=True, netfilter_on=bridge.netfilter is not None)
        rtnl.request(link_body(bridge.index, up=True, attrs=info), wire.RTM_NEWLINK)
        if bridge.netfilter is not None:
            bridge = bridge.replaced(netfilter=BridgeNetfilter(True, True))
    return bridge


def bridge_in_order(bridge: Link) -> bool:
    """A bridge as `ensure_bridge` leaves it: up, snooping off, its netfilter switches on (a
    kernel without bridge netfilter reports none: they are left alone there)."""
    netfilter_off = bridge.netfilter is not None and not all(bridge.netfilter)
    return bridge.kind == "bridge" and bridge.up and not bridge.mcast_snooping and not netfilter_off


def ensure_bridge_netfilter(rtnl: Rtnl, bridge: Link) -> bool:
    """Turn the bridge's netfilter switches on unless `bridge` (as just read) shows them on;
    True if a request was sent. A kernel that reports no switches (built without bridge
    netfilter) is left alone. Idempotent: setting a switch that is on changes nothing."""
    if bridge.netfilter is None or all(bridge.netfilter):
        return False
    info = _bridge_info(snooping_off=False, netfilter_on=True)
    rtnl.request(link_body(bridge.index, attrs=info), wire.RTM_NEWLINK)
    return True


def default_route_mtu(rtnl: Rtnl) -> int:
    """MTU of the interface that holds the IPv4 default route, else 1500."""
    index = routes.default_route_ifindex(rtnl)
    link = get_link(rtnl, index=index) if index is not None else None
    return int(link.mtu) if link is not None else DEFAULT_MTU


def veth_request(
    host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> bytes:
    """Both ends down: the kernel cannot open a veth before its peer exists (ENOTCONN), and the
    host end is brought up by `bring_up_port`, after its IPv6 is switched off (the kernel refuses
    IFLA_AF_SPEC in a create request)."""
    peer = link_body(
        name=pod_ifname,
        attrs=attr(IFLA_MTU, wire.u32(mtu)) + attr(IFLA_NET_NS_FD, wire.u32(pod_netns_fd)),
    )
    info = attr(IFLA_INFO_KIND, wire.asciiz("veth")) + attr(
        IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer)
    )
    host_attrs = attr(IFLA_MTU, wire.u32(mtu)) + attr(IFLA_MASTER, wire.u32(bridge_index))
    return link_body(name=host_ifname, attrs=host_attrs + attr(IFLA_LINKINFO, info))


def create_veth_pair(
    rtnl: Rtnl, host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> Link | None:
    """Create the pair in one request from the host: its end on the bridge, the pod end
    created directly in the pod namespace, so it never exists under its final name (say, eth0)
    on the host, where that name is usually taken. Both ends stay down (see `veth_request`).
    Returns the host end as the kernel announced it (NLM_F_ECHO, Linux >= 6.3: its index and
    MAC without a lookup; its master is set after the announcement), or None from a kernel that
    does not echo.

    Raises EEXIST if either name is taken (a link already called `host_ifname` is left alone:
    the caller decides whether it may go).
    """
    request = veth_request(host_ifname, pod_ifname, pod_netns_fd, mtu, bridge_index)
    echoed = rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW | wire.NLM_F_ECHO)
    for message in echoed:
        if len(message) >= wire.HEADER.size + IFINFOMSG.size:
            link = decode_link(message)
            if link.name == host_ifname:
                return link
    return None


def netns_id(rtnl: Rtnl, netns_fd: int, *, assign: bool = False) -> int | None:
    """The id under which `rtnl`'s namespace knows the namespace of `netns_fd` (None: none; with
    `assign`, one is given it first)."""
    from pyroute2.netlink.rtnl.nsidmsg import nsidmsg  # a rare path: an unmarked veth

    request = nsidmsg()
    request["attrs"] = [("NETNSA_FD", netns_fd)]
    (reply,) = rtnl.request(request, wire.RTM_GETNSID)
    nsid = reply.get_attr("NETNSA_NSID")
    if (nsid is None or nsid == NETNSA_NSID_NOT_ASSIGNED) and assign:
        new = nsidmsg()
        new["attrs"] = [("NETNSA_FD", netns_fd), ("NETNSA_NSID", NETNSA_NSID_NOT_ASSIGNED)]
        try:
            rtnl.request(new, wire.RTM_NEWNSID)  # -1: the kernel picks the id
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # given one meanwhile
                raise
        return netns_id(rtnl, netns_fd)
    return None if nsid is None or nsid == NETNSA_NSID_NOT_ASSIGNED else int(nsid)


def delete_marked_link_in(rtnl: Rtnl, netns_fd: int, name: str, alias: str) -> bool:
    """Delete the veth `name` marked `alias` in the namespace of `netns_fd`, reached from
    `rtnl`'s namespace by its id (IFLA_TARGET_NETNSID, Linux >= 4.20): for the agent, which holds
    that namespace's file but no socket inside it (a served DEL). False when there was none; a
    link without the mark is left alone."""
    nsid = netns_id(rtnl, netns_fd, assign=True)
    if nsid is None:
        return False
    link = get_link(rtnl, name, netnsid=nsid)
    if link is None or link.kind != "veth" or link.alias != alias:
        return False
    target = attr(IFLA_IF_NETNSID, wire.I32.pack(nsid))
    try:
        rtnl.request(link_body(link.index, attrs=target), wire.RTM_DELLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def is_attachment_veth(rtnl: Rtnl, link: Link, alias: str, pod_netns_fd: int | None) -> bool:
    """Whether minicni made `link` for the attachment whose mark is `alias`: a veth with that
    alias, or an unmarked veth whose peer lives in the pod's namespace (an ADD killed between
    creating the pair and marking it, or a pod made before veths were marked)."""
    if link.kind != "veth":
        return False
    if link.alias:
        return link.alias == alias
    if pod_netns_fd is None or link.peer_netnsid is None:
        return False
    # The dump that produced `link` gave the pod's namespace an id if it had none.
    return link.peer_netnsid == netns_id(rtnl, pod_netns_fd)


def delete_link(rtnl: Rtnl, name: str | None = None, index: int = 0) -> bool:
    """Delete a link by name (or index); False if it was not there."""
    try:
        rtnl.request(link_body(index, name), wire.RTM_DELLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def _ipv6_off() -> bytes:
    """IFLA_AF_SPEC turning the interface's IPv6 address generation off (it must come with the
    request that brings the interface up: once up with a carrier, it has its link-local)."""
    mode = attr(IFLA_INET6_ADDR_GEN_MODE, wire.u8(IN6_ADDR_GEN_MODE_NONE))
    return attr(IFLA_AF_SPEC, attr(AF_SPEC_INET6, mode))


def _alias(alias: str) -> bytes:
    return attr(IFLA_IFALIAS, wire.asciiz(alias)) if alias else b""


def port_up_request(index: int, hairpin: bool, alias: str = "") -> bytes:
    port = b""
    if hairpin:
        data = attr(IFLA_BRPORT_MODE, wire.u8(BRIDGE_MODE_HAIRPIN))
        slave = attr(IFLA_INFO_SLAVE_KIND, wire.asciiz("bridge")) + attr(IFLA_INFO_SLAVE_DATA, data)
        port = attr(IFLA_LINKINFO, slave)
    return link_body(index, up=True, attrs=_alias(alias) + _ipv6_off() + port)


def bring_up_port(rtnl: Rtnl, index: int, hairpin: bool, alias: str = "") -> None:
    """The host end of a pod's veth, on the bridge, up in one request: its mark (`alias`: the
    kernel ignores IFLA_IFALIAS when it creates a link), IPv6 address generation off, and hairpin
    on when asked.

    A bridge port needs no IPv6 of its own; with it, every port adds a link-local address and
    three IPv6 routes to the node's namespace, which every later port change walks (at 1,000
    pods that is the bulk of an ADD's and a DEL's kernel time). Hairpin lets a pod reach itself
    through a Service VIP that DNATs back to it: the bridge sends a frame back out of the port it
    came in on.
    """
    rtnl.request(port_up_request(index, hairpin, alias), wire.RTM_NEWLINK)


def configure_pod_interface(
    rtnl: Rtnl,
    index: int,
    pod_addresses: Sequence[tuple[str, int]],
    gateways: Sequence[str] = (),
    alias: str = "",
    *,
    ipv6: bool = False,
) -> None:
    """The pod's addresses (address, prefix length: one per family), the link up (with the
    attachment's mark as alias, in the same request), and a default route via each of
    `gateways` (one per family). An IPv6 address is added without duplicate address detection,
    so it is usable at once, with no sysctl in the pod.

    `ipv6` False (a network without an IPv6 range): the interface comes up with IPv6 address
    generation off, so it has no link-local address and sends no DAD, MLD or router
    solicitation, which the bridge would otherwise flood to every other pod on the node. The
    pod's loopback keeps ::1. True (the pod has an IPv6 address): the link-local stays, as
    on any IPv6 host.
    """
    for address, prefixlen in pod_addresses:
        request = addresses.address_request(index, address, prefixlen)
        rtnl.request(request, wire.RTM_NEWADDR, wire.CREATE_NEW)
    up = link_body(index, up=True, attrs=_alias(alias) + (b"" if ipv6 else _ipv6_off()))
    rtnl.request(up, wire.RTM_NEWLINK)
    for gateway in gateways:
        route = routes.default_route_request(gateway, index, protocol=RTPROT_STATIC)
        try:
            rtnl.request(route, wire.RTM_NEWROUTE, wire.CREATE_NEW)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise NetlinkError(exc.code, "the container already has a default route") from exc
            raise


def vxlan_request(name: str, vxlan: Vxlan, mac: str, mtu: int) -> Any:
    """The agent's: a VXLAN link (down, learning off: every FDB entry is set by us) for
    RTM_NEWLINK, as a pyroute2 ifinfmsg; its local address (IPv4 or IPv6) says which underlay
    family carries it."""
    local = (
        "IFLA_VXLAN_LOCAL6"
        if vxlan.local is not None and ":" in vxlan.local
        else "IFLA_VXLAN_LOCAL"
    )
    data = [
        ("IFLA_VXLAN_ID", vxlan.vni),
        (local, vxlan.local),
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


class BridgePort(Record):
    __slots__ = ("hairpin", "ifindex", "name")

    def __init__(self, ifindex: int, name: str, hairpin: bool) -> None:
        self.ifindex = ifindex
        self.name = name
        self.hairpin = hairpin


def bridge_ports(rtnl: Rtnl, bridge_index: int) -> list[BridgePort]:
    """The ports of a bridge with their hairpin mode, from one dump of the bridge family (the
    agent's: with pyroute2's decoding)."""
    ports = []
    for message in rtnl.dump(link_request(family=wire.AF_BRIDGE), wire.RTM_GETLINK):
        if message.get_attr("IFLA_MASTER") != bridge_index:
            continue
        mode = message.get_nested("IFLA_PROTINFO", "IFLA_BRPORT_MODE")
        name = message.get_attr("IFLA_IFNAME")
        ports.append(BridgePort(message["index"], name, mode == BRIDGE_MODE_HAIRPIN))
    return ports
