"""The struct encoders of the plugin's hot path against pyroute2's message definitions: every
number and layout in minicni.net.codes is pyroute2's, and every request built with them is,
byte for byte, the request pyroute2's classes build from the same values."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.net import addresses, codes, links, routes, wire
from minicni.net.rtnl import encode_request


def number(message_class: Any, name: str) -> int:
    return wire.attribute_codes(message_class)[name]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (codes.IFINFOMSG, ifinfmsg),
        (codes.IFADDRMSG, ifaddrmsg),
        (codes.RTMSG, rtmsg),
    ],
)
def test_the_message_bodies_are_pyroute2s(ours: Any, theirs: Any) -> None:
    assert ours.format == wire.body_struct(theirs).format


NUMBERS = [
    (
        ifinfmsg,
        "IFLA_ADDRESS IFLA_IFNAME IFLA_MTU IFLA_MASTER IFLA_LINKINFO IFLA_IFALIAS IFLA_AF_SPEC "
        "IFLA_NET_NS_FD IFLA_EXT_MASK IFLA_LINK_NETNSID IFLA_IF_NETNSID",
    ),
    (ifinfmsg.ifinfo, "IFLA_INFO_KIND IFLA_INFO_DATA IFLA_INFO_SLAVE_KIND IFLA_INFO_SLAVE_DATA"),
    (ifinfmsg.ifinfo.data_map["veth"], "VETH_INFO_PEER"),
    (
        ifinfmsg.ifinfo.data_map["bridge"],
        "IFLA_BR_MCAST_SNOOPING IFLA_BR_NF_CALL_IPTABLES IFLA_BR_NF_CALL_IP6TABLES",
    ),
    (
        ifinfmsg.ifinfo.data_map["vxlan"],
        "IFLA_VXLAN_ID IFLA_VXLAN_LINK IFLA_VXLAN_LOCAL IFLA_VXLAN_LOCAL6 IFLA_VXLAN_PORT",
    ),
    (ifinfmsg.ifinfo.bridge_slave_data, "IFLA_BRPORT_MODE"),
    (ifinfmsg.af_spec_inet.inet6, "IFLA_INET6_ADDR_GEN_MODE"),
    (ifaddrmsg, "IFA_ADDRESS IFA_LOCAL"),
    (rtmsg, "RTA_DST RTA_OIF RTA_GATEWAY RTA_PRIORITY RTA_PREFSRC RTA_TABLE"),
]


@pytest.mark.parametrize(("message_class", "names"), NUMBERS)
def test_every_attribute_number_is_pyroute2s(message_class: Any, names: str) -> None:
    for name in names.split():
        assert getattr(codes, name) == number(message_class, name), name


def test_the_address_family_inside_af_spec_is_pyroute2s() -> None:
    assert number(ifinfmsg.af_spec_inet, "AF_INET6") == codes.AF_SPEC_INET6


def same_request(ours: bytes, theirs: Any, msg_type: int = wire.RTM_NEWLINK) -> None:
    assert encode_request(ours, msg_type, 0, 7) == encode_request(theirs, msg_type, 0, 7)


def pyroute2_link(index: int = 0, name: str | None = None, up: bool = False, **attrs: Any) -> Any:
    return links.link_request(index, name, up, **attrs)


def test_a_link_lookup_is_pyroute2s() -> None:
    same_request(
        links.link_body(0, "eth0", attrs=wire.attr(codes.IFLA_EXT_MASK, wire.u32(8))),
        pyroute2_link(0, "eth0", ext_mask=8),
        wire.RTM_GETLINK,
    )
    same_request(links.link_body(9), pyroute2_link(9), wire.RTM_DELLINK)


def test_the_veth_pair_is_pyroute2s() -> None:
    peer = pyroute2_link(name="eth0", mtu=1400, net_ns_fd=9)
    info = {"attrs": [("VETH_INFO_PEER", peer)]}
    theirs = pyroute2_link(
        name="vethabc",
        mtu=1400,
        master=4,
        linkinfo={"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", info)]},
    )
    same_request(links.veth_request("vethabc", "eth0", 9, 1400, 4), theirs)


def test_the_bridge_requests_are_pyroute2s() -> None:
    data = [
        ("IFLA_BR_MCAST_SNOOPING", 0),
        ("IFLA_BR_NF_CALL_IPTABLES", 1),
        ("IFLA_BR_NF_CALL_IP6TABLES", 1),
    ]
    info = {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": data})]}
    mac = "02:11:22:33:44:55"
    created = links.link_body(
        name="cni0", up=True, attrs=wire.attr(codes.IFLA_ADDRESS, wire.mac_bytes(mac))
    )
    same_request(
        created + links._bridge_info(),
        pyroute2_link(name="cni0", up=True, address=mac, linkinfo=info),
    )
    same_request(
        links.link_body(4, up=True, attrs=links._bridge_info()),
        pyroute2_link(4, up=True, linkinfo=info),
    )
    netfilter_only = {
        "attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": data[1:]})]
    }
    same_request(
        links.link_body(4, attrs=links._bridge_info(snooping_off=False)),
        pyroute2_link(4, linkinfo=netfilter_only),
    )


@pytest.mark.parametrize("hairpin", [True, False])
def test_bringing_up_a_port_is_pyroute2s(hairpin: bool) -> None:
    theirs = pyroute2_link(7, up=True, ifalias="minicni c1/eth0")
    inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]}
    theirs["attrs"].append(("IFLA_AF_SPEC", {"attrs": [("AF_INET6", inet6)]}))
    if hairpin:
        port = {"attrs": [("IFLA_BRPORT_MODE", 1)]}
        slave = [("IFLA_INFO_SLAVE_KIND", "bridge"), ("IFLA_INFO_SLAVE_DATA", port)]
        theirs["attrs"].append(("IFLA_LINKINFO", {"attrs": slave}))
    same_request(links.port_up_request(7, hairpin, "minicni c1/eth0"), theirs)


@pytest.mark.parametrize(
    ("address", "prefixlen"), [("10.244.1.5", 24), ("fd00::5", 64)], ids=["v4", "v6"]
)
def test_an_address_request_is_pyroute2s(address: str, prefixlen: int) -> None:
    theirs = ifaddrmsg()
    theirs["family"] = wire.AF_INET6 if ":" in address else wire.AF_INET
    theirs["prefixlen"] = prefixlen
    theirs["index"] = 2
    if theirs["family"] == wire.AF_INET6:
        theirs["flags"] = 0x02  # IFA_F_NODAD: a pod's IPv6 address is usable at once
    local = [("IFA_LOCAL", address)] if theirs["family"] == wire.AF_INET else []
    theirs["attrs"] = [*local, ("IFA_ADDRESS", address)]
    same_request(addresses.address_request(2, address, prefixlen), theirs, wire.RTM_NEWADDR)


def pyroute2_route(**fields: Any) -> Any:
    msg = rtmsg()
    attrs = fields.pop("attrs")
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    return msg


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            routes.route_request(
                IPv4Network("10.244.2.0/24"), IPv4Address("192.168.50.12"), table=254,
                protocol=109, oif=3, onlink=True, prefsrc=IPv4Address("10.244.1.1"),
                priority=20,
            ),
            pyroute2_route(
                family=2, dst_len=24, proto=109, scope=0, type=1, flags=4, table=254,
                attrs=[("RTA_DST", "10.244.2.0"), ("RTA_GATEWAY", "192.168.50.12"),
                       ("RTA_OIF", 3), ("RTA_PRIORITY", 20), ("RTA_PREFSRC", "10.244.1.1")],
            ),
        ),
        (
            routes.route_request(
                IPv6Network("fd00:2::/64"), IPv6Address("fe80::1"), table=28003, protocol=109,
                route_type=0,
            ),
            pyroute2_route(
                family=10, dst_len=64, proto=109, scope=0, type=0, flags=0, table=252,
                attrs=[("RTA_DST", "fd00:2::"), ("RTA_GATEWAY", "fe80::1"), ("RTA_TABLE", 28003)],
            ),
        ),
        (
            routes.default_route_request("10.244.1.1", 2, protocol=4),
            pyroute2_route(
                family=2, dst_len=0, proto=4, scope=0, type=1, flags=0, table=254,
                attrs=[("RTA_GATEWAY", "10.244.1.1"), ("RTA_OIF", 2)],
            ),
        ),
    ],
    ids=["host-gw", "ipv6-in-a-big-table", "pod-default"],
)  # fmt: skip
def test_a_route_request_is_pyroute2s(ours: bytes, theirs: Any) -> None:
    same_request(ours, theirs, wire.RTM_NEWROUTE)


def test_a_link_decodes_as_pyroute2_reads_it() -> None:
    vxlan = [
        ("IFLA_VXLAN_ID", 1),
        ("IFLA_VXLAN_LOCAL", "192.168.50.11"),
        ("IFLA_VXLAN_LINK", 2),
        ("IFLA_VXLAN_PORT", 8472),
    ]
    info = {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": vxlan})]}
    theirs = pyroute2_link(9, "minicni-vxlan", up=True, mtu=1450, master=3, linkinfo=info)
    theirs["attrs"].append(("IFLA_ADDRESS", "0e:6d:c0:a8:32:0b"))
    link = links.decode_link(encode_request(theirs, wire.RTM_NEWLINK, 0, 1))
    assert link == links.Link(
        index=9,
        name="minicni-vxlan",
        mac="0e:6d:c0:a8:32:0b",
        mtu=1450,
        kind="vxlan",
        master=3,
        up=True,
        vxlan=links.Vxlan(1, "192.168.50.11", 2, 8472),
    )


def test_a_vxlan_over_an_ipv6_underlay_decodes_its_local_address() -> None:
    vxlan = [("IFLA_VXLAN_ID", 1), ("IFLA_VXLAN_LOCAL6", "fd00:50::11"), ("IFLA_VXLAN_PORT", 8472)]
    info = {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": vxlan})]}
    theirs = pyroute2_link(10, "minicni-vxlan6", linkinfo=info)
    link = links.decode_link(encode_request(theirs, wire.RTM_NEWLINK, 0, 1))
    assert link.vxlan == links.Vxlan(1, "fd00:50::11", None, 8472)


def test_a_link_with_its_mark_and_peer_decodes_as_pyroute2_reads_it() -> None:
    data = [("IFLA_BR_NF_CALL_IPTABLES", 1), ("IFLA_BR_NF_CALL_IP6TABLES", 0)]
    info = {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": data})]}
    bridge = links.decode_link(
        encode_request(pyroute2_link(4, "cni0", linkinfo=info), wire.RTM_NEWLINK, 0, 1)
    )
    assert bridge.netfilter == links.BridgeNetfilter(True, False)
    veth = pyroute2_link(7, "vethabc", ifalias="minicni c1/eth0", link_netnsid=3)
    link = links.decode_link(encode_request(veth, wire.RTM_NEWLINK, 0, 1))
    assert (link.alias, link.peer_netnsid) == ("minicni c1/eth0", 3)
