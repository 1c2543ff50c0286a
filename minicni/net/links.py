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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_address
from typing import Any, NamedTuple

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.nsidmsg import nsidmsg

from minicni.net import addresses, routes, wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError

DEFAULT_MTU = 1500
RTPROT_STATIC = wire.RTPROT_STATIC  # the protocol IPRoute gave the pod's default route; kept
BRIDGE_MODE_HAIRPIN = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # replies without the counters: smaller, quicker to decode
IFALIAS_MAX = 255  # bytes (IFALIASZ - 1)
NETNSA_NSID_NOT_ASSIGNED = 0xFFFFFFFF  # -1 as the uint32 pyroute2 decodes


class BridgeNetfilter(NamedTuple):
    """The bridge's own switches that send its bridged IPv4 / IPv6 traffic through iptables
    (IFLA_BR_NF_CALL_IPTABLES / _IP6TABLES); each is ORed with the node's sysctl
    net.bridge.bridge-nf-call-ip(6)tables. With br_netfilter they keep Services working on the
    bridge even on a node where that sysctl is 0: a reply between two pods of one bridge then
    passes conntrack, which undoes the Service's DNAT."""

    iptables: bool
    ip6tables: bool


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
    alias: str | None = None
    peer_netnsid: int | None = None  # a veth's: where its peer is, as seen from this namespace
    netfilter: BridgeNetfilter | None = None
    """A bridge's netfilter switches; None for other links, or a kernel built without bridge
    netfilter (it reports no such attribute)."""


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so DEL and GC find the veth without any saved state."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:11]}"


def attachment_alias(container_id: str, ifname: str) -> str:
    """The alias (IFLA_IFALIAS) minicni gives both ends of an attachment's veth: its mark, by
    which DEL and GC tell their own link from anyone else's, and a hint for `ip link`."""
    alias = f"minicni {container_id}/{ifname}"
    if len(alias.encode()) <= IFALIAS_MAX:
        return alias
    return f"minicni sha256:{hashlib.sha256(f'{container_id}/{ifname}'.encode()).hexdigest()}"


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
    netfilter = _bridge_netfilter_from(message) if kind == "bridge" else None
    return Link(
        index=message["index"],
        name=message.get_attr("IFLA_IFNAME"),
        mac=message.get_attr("IFLA_ADDRESS"),
        mtu=message.get_attr("IFLA_MTU"),
        kind=kind,
        master=message.get_attr("IFLA_MASTER"),
        up=bool(message["flags"] & wire.IFF_UP),
        vxlan=_vxlan_from(message) if kind == "vxlan" else None,
        alias=message.get_attr("IFLA_IFALIAS"),
        peer_netnsid=message.get_attr("IFLA_LINK_NETNSID"),
        netfilter=netfilter,
    )


def _bridge_netfilter_from(message: Any) -> BridgeNetfilter | None:
    data = message.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    if data is None:
        return None
    iptables = data.get_attr("IFLA_BR_NF_CALL_IPTABLES")
    if iptables is None:
        return None
    return BridgeNetfilter(bool(iptables), bool(data.get_attr("IFLA_BR_NF_CALL_IP6TABLES")))


def _vxlan_from(message: Any) -> Vxlan:
    data = message.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    if data is None:
        return Vxlan(None, None, None, None)
    return Vxlan(
        vni=data.get_attr("IFLA_VXLAN_ID"),
        local=data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
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


BRIDGE_NETFILTER_ON = (("IFLA_BR_NF_CALL_IPTABLES", 1), ("IFLA_BR_NF_CALL_IP6TABLES", 1))


def _bridge_info(*data: tuple[str, int]) -> dict[str, Any]:
    attrs: list[tuple[str, Any]] = [("IFLA_INFO_KIND", "bridge")]
    if data:
        attrs.append(("IFLA_INFO_DATA", {"attrs": list(data)}))
    return {"attrs": attrs}


def ensure_bridge(rtnl: Rtnl, name: str) -> Link:
    """The bridge, up, its netfilter switches on (`BridgeNetfilter`); created unless it exists,
    another invocation winning the race is fine. An existing bridge costs one request."""
    bridge = get_link(rtnl, name)
    if bridge is None:
        # A fixed MAC from the start: otherwise the bridge takes the lowest port MAC and changes
        # it as pods come and go, which flushes every pod's neighbour entry for the gateway.
        request = link_request(
            name=name,
            up=True,
            address=random_mac(),
            linkinfo=_bridge_info(*BRIDGE_NETFILTER_ON),
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
    if not bridge.up:
        rtnl.request(link_request(bridge.index, up=True), wire.RTM_NEWLINK)
    if ensure_bridge_netfilter(rtnl, bridge):
        bridge = replace(bridge, netfilter=BridgeNetfilter(True, True))
    return bridge


def ensure_bridge_netfilter(rtnl: Rtnl, bridge: Link) -> bool:
    """Turn the bridge's netfilter switches on unless `bridge` (as just read) shows them on;
    True if a request was sent. A kernel that reports no switches (built without bridge
    netfilter) is left alone. Idempotent: setting a switch that is on changes nothing."""
    if bridge.netfilter is None or all(bridge.netfilter):
        return False
    request = link_request(bridge.index, linkinfo=_bridge_info(*BRIDGE_NETFILTER_ON))
    rtnl.request(request, wire.RTM_NEWLINK)
    return True


def default_route_mtu(rtnl: Rtnl) -> int:
    """MTU of the interface that holds the IPv4 default route, else 1500."""
    index = routes.default_route_ifindex(rtnl)
    link = get_link(rtnl, index=index) if index is not None else None
    return int(link.mtu) if link is not None else DEFAULT_MTU


def veth_request(
    host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> Any:
    # The pod end stays down: the kernel cannot open a veth before its peer exists (ENOTCONN).
    peer = link_request(name=pod_ifname, mtu=mtu, net_ns_fd=pod_netns_fd)
    info = {"attrs": [("VETH_INFO_PEER", peer)]}
    return link_request(
        name=host_ifname,
        up=True,
        mtu=mtu,
        master=bridge_index,
        linkinfo={"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", info)]},
    )


def create_veth_pair(
    rtnl: Rtnl, host_ifname: str, pod_ifname: str, pod_netns_fd: int, mtu: int, bridge_index: int
) -> None:
    """Create the pair in one request from the host: its end up and on the bridge, the pod end
    created directly in the pod namespace, so it never exists under its final name (say, eth0)
    on the host, where that name is usually taken.

    Raises EEXIST if either name is taken (a link already called `host_ifname` is left alone:
    the caller decides whether it may go).
    """
    request = veth_request(host_ifname, pod_ifname, pod_netns_fd, mtu, bridge_index)
    rtnl.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)


def set_alias(rtnl: Rtnl, name: str, alias: str) -> None:
    """The kernel ignores IFLA_IFALIAS when it creates a link: one request more, by name."""
    rtnl.request(link_request(name=name, ifalias=alias), wire.RTM_NEWLINK)


def netns_id(rtnl: Rtnl, netns_fd: int) -> int | None:
    """The id under which `rtnl`'s namespace knows the namespace of `netns_fd` (None: none)."""
    request = nsidmsg()
    request["attrs"] = [("NETNSA_FD", netns_fd)]
    (reply,) = rtnl.request(request, wire.RTM_GETNSID)
    nsid = reply.get_attr("NETNSA_NSID")
    return None if nsid is None or nsid == NETNSA_NSID_NOT_ASSIGNED else int(nsid)


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
        rtnl.request(link_request(index, name), wire.RTM_DELLINK)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def set_hairpin(rtnl: Rtnl, index: int) -> None:
    """Let a pod reach itself through a Service VIP that DNATs back to it: the bridge sends a
    frame back out of the port it came in on. The port must already be on the bridge."""
    protinfo = (
        "IFLA_PROTINFO",
        {"attrs": [("IFLA_BRPORT_MODE", BRIDGE_MODE_HAIRPIN)]},
        wire.NLA_F_NESTED,  # the bridge reads IFLA_PROTINFO as a nest only when flagged so
    )
    request = link_request(index, family=wire.AF_BRIDGE)
    request["attrs"].append(protinfo)
    rtnl.request(request, wire.RTM_SETLINK)


def configure_pod_interface(
    rtnl: Rtnl,
    index: int,
    pod_addresses: Sequence[tuple[str, int]],
    gateways: Sequence[str] = (),
    alias: str = "",
) -> None:
    """The pod's addresses (address, prefix length: one per family), the link up (with the
    attachment's mark as alias, in the same request), and a default route via each of
    `gateways` (one per family). An IPv6 address is added without duplicate address detection,
    so it is usable at once, with no sysctl in the pod."""
    for address, prefixlen in pod_addresses:
        request = addresses.address_request(index, address, prefixlen)
        rtnl.request(request, wire.RTM_NEWADDR, wire.CREATE_NEW)
    up = link_request(index, up=True)
    if alias:
        up["attrs"].append(("IFLA_IFALIAS", alias))
    rtnl.request(up, wire.RTM_NEWLINK)
    for gateway in gateways:
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
    """A VXLAN link (down, learning off: every FDB entry is set by us) for RTM_NEWLINK; its
    local address (IPv4 or IPv6) says which underlay family carries it."""
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


class BridgePort(NamedTuple):
    ifindex: int
    name: str
    hairpin: bool


def bridge_ports(rtnl: Rtnl, bridge_index: int) -> list[BridgePort]:
    """The ports of a bridge with their hairpin mode, from one dump of the bridge family."""
    ports = []
    for message in rtnl.dump(link_request(family=wire.AF_BRIDGE), wire.RTM_GETLINK):
        if message.get_attr("IFLA_MASTER") != bridge_index:
            continue
        mode = message.get_nested("IFLA_PROTINFO", "IFLA_BRPORT_MODE")
        name = message.get_attr("IFLA_IFNAME")
        ports.append(BridgePort(message["index"], name, mode == BRIDGE_MODE_HAIRPIN))
    return ports
