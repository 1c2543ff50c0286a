"""The link helpers without a kernel: which requests they send (decoded back with pyroute2) and
how they take the kernel's answers, scripted."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import links, wire
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, link_reply

CREATE_NEW = wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_EXCL


def bridge_reply(
    up: bool = True,
    kind: str = "bridge",
    netfilter: tuple[int, int] | None = None,
    snooping: int = 0,
) -> Callable[[int], bytes]:
    """The bridge as the kernel reports it; `netfilter`: its IFLA_BR_NF_CALL_IPTABLES and
    _IP6TABLES (None: a kernel without bridge netfilter, which reports neither)."""
    info: dict[str, list[tuple[str, object]]] = {"attrs": [("IFLA_INFO_KIND", kind)]}
    if kind == "bridge":
        data: list[tuple[str, object]] = [("IFLA_BR_MCAST_SNOOPING", snooping)]
        if netfilter is not None:
            data.append(("IFLA_BR_NF_CALL_IPTABLES", netfilter[0]))
            data.append(("IFLA_BR_NF_CALL_IP6TABLES", netfilter[1]))
        info["attrs"].append(("IFLA_INFO_DATA", {"attrs": data}))
    return lambda seq: link_reply(
        seq, 4, "cni0", 0, flags=int(up), IFLA_ADDRESS="02:00:00:00:00:04", IFLA_LINKINFO=info
    )


def sent_flags(sock: ScriptedSocket, position: int) -> int:
    return int(wire.HEADER.unpack_from(sock.sent[position])[2])


def test_an_existing_bridge_that_is_up_costs_one_request() -> None:
    sock = ScriptedSocket([bridge_reply(), ack])
    bridge = links.ensure_bridge(Rtnl(sock), "cni0")
    assert (bridge.index, bridge.mac, bridge.kind) == (4, "02:00:00:00:00:04", "bridge")
    assert sock.sent_types() == [wire.RTM_GETLINK]


def test_a_bridge_that_is_down_is_brought_up() -> None:
    sock = ScriptedSocket([bridge_reply(up=False), ack], [ack])
    links.ensure_bridge(Rtnl(sock), "cni0")
    assert sock.sent_types() == [wire.RTM_GETLINK, wire.RTM_NEWLINK]
    up = sock.sent_message(1)
    assert (up["index"], up["flags"], up["change"]) == (4, 1, 1)


def test_a_bridge_with_multicast_snooping_on_has_it_turned_off() -> None:
    sock = ScriptedSocket([bridge_reply(snooping=1), ack], [ack])
    links.ensure_bridge(Rtnl(sock), "cni0")
    assert sock.sent_types() == [wire.RTM_GETLINK, wire.RTM_NEWLINK]
    changed = sock.sent_message(1)
    assert changed["index"] == 4
    assert changed.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_MCAST_SNOOPING") == 0


def test_a_missing_bridge_is_created_up_with_a_pinned_mac() -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)], [ack], [bridge_reply(), ack])
    links.ensure_bridge(Rtnl(sock), "cni0")
    assert sock.sent_types() == [wire.RTM_GETLINK, wire.RTM_NEWLINK, wire.RTM_GETLINK]
    assert sent_flags(sock, 1) == CREATE_NEW
    created = sock.sent_message(1)
    assert created.get_attr("IFLA_IFNAME") == "cni0"
    assert created.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"
    snooping = created.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_MCAST_SNOOPING")
    assert snooping == 0
    assert created["flags"] & 1 and created["change"] & 1
    first_octet = int(created.get_attr("IFLA_ADDRESS").split(":")[0], 16)
    assert first_octet & 0x03 == 0x02  # locally administered, unicast


def test_a_new_bridge_is_created_with_its_netfilter_switches_on() -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)], [ack], [bridge_reply(netfilter=(1, 1)), ack])
    bridge = links.ensure_bridge(Rtnl(sock), "cni0")
    data = sock.sent_message(1).get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert data.get_attr("IFLA_BR_NF_CALL_IPTABLES") == 1
    assert data.get_attr("IFLA_BR_NF_CALL_IP6TABLES") == 1
    assert bridge.netfilter == links.BridgeNetfilter(True, True)
    assert len(sock.sent) == 3  # read back on: nothing more to send


def test_an_adopted_bridge_without_netfilter_gets_it_in_one_more_request() -> None:
    sock = ScriptedSocket([bridge_reply(netfilter=(0, 1)), ack], [ack])
    bridge = links.ensure_bridge(Rtnl(sock), "cni0")
    assert sock.sent_types() == [wire.RTM_GETLINK, wire.RTM_NEWLINK]
    changed = sock.sent_message(1)
    assert sent_flags(sock, 1) & (wire.NLM_F_CREATE | wire.NLM_F_EXCL) == 0  # a change, not a new
    assert changed["index"] == 4
    assert changed.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"
    data = changed.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert data.get_attr("IFLA_BR_NF_CALL_IPTABLES") == 1
    assert data.get_attr("IFLA_BR_NF_CALL_IP6TABLES") == 1
    assert bridge.netfilter == links.BridgeNetfilter(True, True)


def test_a_bridge_with_netfilter_on_or_unknown_costs_one_request() -> None:
    for netfilter in ((1, 1), None):
        sock = ScriptedSocket([bridge_reply(netfilter=netfilter), ack])
        links.ensure_bridge(Rtnl(sock), "cni0")
        assert sock.sent_types() == [wire.RTM_GETLINK]


def test_bridge_ports_are_read_with_their_hairpin_mode() -> None:
    def port(seq: int, index: int, name: str, master: int, mode: int) -> bytes:
        protinfo = {"attrs": [("IFLA_BRPORT_MODE", mode)]}
        return link_reply(
            seq, index, name, family=wire.AF_BRIDGE, IFLA_MASTER=master, IFLA_PROTINFO=protinfo
        )

    sock = ScriptedSocket(
        [
            lambda seq: (
                port(seq, 7, "vetha", 4, 1)
                + port(seq, 8, "vethb", 4, 0)
                + port(seq, 9, "other", 5, 1)
                + done(seq)
            )
        ]
    )
    ports = links.bridge_ports(Rtnl(sock), 4)
    assert ports == [links.BridgePort(7, "vetha", True), links.BridgePort(8, "vethb", False)]
    assert sock.sent_message(0)["family"] == wire.AF_BRIDGE


def test_a_bridge_created_meanwhile_by_another_add_is_fine() -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)], [fails(errno.EEXIST)], [bridge_reply(), ack])
    assert links.ensure_bridge(Rtnl(sock), "cni0").index == 4


def test_a_bridge_deleted_meanwhile_asks_for_a_retry() -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)], [ack], [fails(errno.ENODEV)])
    with pytest.raises(NetlinkError) as raised:
        links.ensure_bridge(Rtnl(sock), "cni0")
    assert raised.value.code == errno.EAGAIN


def test_a_link_of_another_kind_under_the_bridge_name_is_refused() -> None:
    sock = ScriptedSocket([bridge_reply(kind="veth"), ack])
    with pytest.raises(NetlinkError) as raised:
        links.ensure_bridge(Rtnl(sock), "cni0")
    assert raised.value.args == (errno.EEXIST, "cni0 exists but is a veth link")


def test_the_veth_pair_is_made_in_one_request_on_the_bridge() -> None:
    sock = ScriptedSocket([ack])
    assert links.create_veth_pair(Rtnl(sock), "vethabc", "eth0", 9, 1400, bridge_index=4) is None
    assert sent_flags(sock, 0) == CREATE_NEW | wire.NLM_F_ECHO
    host = sock.sent_message(0)
    assert host.get_attr("IFLA_IFNAME") == "vethabc"
    assert (host.get_attr("IFLA_MASTER"), host.get_attr("IFLA_MTU")) == (4, 1400)
    assert host["flags"] == 0  # down until bring_up_port has switched its IPv6 off
    assert host.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    pod = host.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "VETH_INFO_PEER")
    assert pod.get_attr("IFLA_IFNAME") == "eth0"
    assert (pod.get_attr("IFLA_NET_NS_FD"), pod.get_attr("IFLA_MTU")) == (9, 1400)
    assert pod["flags"] == 0  # the kernel cannot bring a veth up before its peer exists


def test_the_host_end_the_kernel_echoes_is_returned() -> None:
    """Linux >= 6.3 answers NLM_F_ECHO with its announcement of the new host end: the ADD takes
    its index and MAC from it instead of asking again (an older kernel echoes nothing: None)."""
    sock = ScriptedSocket(
        [
            lambda seq: link_reply(
                seq, 17, "vethabc", 0, IFLA_ADDRESS="0a:00:00:00:00:11", IFLA_MTU=1400
            ),
            ack,
        ]
    )
    host_end = links.create_veth_pair(Rtnl(sock), "vethabc", "eth0", 9, 1400, bridge_index=4)
    assert host_end is not None
    assert (host_end.index, host_end.name, host_end.mac) == (17, "vethabc", "0a:00:00:00:00:11")
    assert sock.sent_types() == [wire.RTM_NEWLINK]


def test_a_link_holding_the_host_name_is_left_to_the_caller() -> None:
    """Never delete a link on EEXIST: it may be someone else's (the caller checks the mark)."""
    sock = ScriptedSocket([fails(errno.EEXIST)])
    with pytest.raises(NetlinkError) as raised:
        links.create_veth_pair(Rtnl(sock), "vethabc", "eth0", 9, 1500, bridge_index=4)
    assert raised.value.code == errno.EEXIST
    assert sock.sent_types() == [wire.RTM_NEWLINK]


def _veth(alias: str | None = None, peer_netnsid: int | None = None) -> links.Link:
    return links.Link(
        7,
        "vethabc",
        "00:00:00:00:00:01",
        1500,
        "veth",
        4,
        True,
        alias=alias,
        peer_netnsid=peer_netnsid,
    )


def test_a_veth_with_the_attachments_alias_is_ours() -> None:
    mark = links.attachment_alias("c1", "eth0")
    assert mark == "minicni c1/eth0"
    sock = ScriptedSocket()
    assert links.is_attachment_veth(Rtnl(sock), _veth(mark), mark, None)
    assert not links.is_attachment_veth(Rtnl(sock), _veth("minicni c2/eth0"), mark, None)
    assert not links.is_attachment_veth(Rtnl(sock), _veth("someone's"), mark, 9)
    bridge = links.Link(7, "vethabc", "00:00:00:00:00:01", 1500, "bridge", None, True, alias=mark)
    assert not links.is_attachment_veth(Rtnl(sock), bridge, mark, 9)
    assert sock.sent == []


def test_the_alias_of_a_long_container_id_fits_the_kernels_limit() -> None:
    mark = links.attachment_alias("c" * 300, "eth0")
    assert len(mark.encode()) <= 255 and mark != links.attachment_alias("c" * 299, "eth0")


def ipv6_addr_gen_mode(sent: ifinfmsg) -> int | None:
    inet6 = sent.get_nested("IFLA_AF_SPEC", "AF_INET6")
    return None if inet6 is None else inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE")


def test_the_port_comes_up_without_ipv6_and_with_hairpin_in_one_request() -> None:
    sock = ScriptedSocket([ack])
    links.bring_up_port(Rtnl(sock), 7, hairpin=True)
    assert sock.sent_types() == [wire.RTM_NEWLINK]
    sent = sock.sent_message(0)
    assert (sent["index"], sent["flags"] & 1, sent["change"] & 1) == (7, 1, 1)
    assert ipv6_addr_gen_mode(sent) == links.IN6_ADDR_GEN_MODE_NONE
    slave = sent.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA")
    assert slave.get_attr("IFLA_BRPORT_MODE") == links.BRIDGE_MODE_HAIRPIN


def test_a_port_without_hairpin_carries_no_bridge_port_data() -> None:
    sock = ScriptedSocket([ack])
    links.bring_up_port(Rtnl(sock), 7, hairpin=False)
    sent = sock.sent_message(0)
    assert sent.get_attr("IFLA_LINKINFO") is None
    assert ipv6_addr_gen_mode(sent) == links.IN6_ADDR_GEN_MODE_NONE


def test_an_ipv4_pod_interface_comes_up_without_ipv6() -> None:
    sock = ScriptedSocket([ack], [ack], [ack])
    links.configure_pod_interface(Rtnl(sock), 2, [("10.1.0.5", 24)], ["10.1.0.1"])
    assert sock.sent_types() == [wire.RTM_NEWADDR, wire.RTM_NEWLINK, wire.RTM_NEWROUTE]
    assert ipv6_addr_gen_mode(sock.sent_message(1)) == links.IN6_ADDR_GEN_MODE_NONE


def test_a_pod_interface_with_ipv6_keeps_its_address_generation() -> None:
    sock = ScriptedSocket([ack], [ack])
    links.configure_pod_interface(Rtnl(sock), 2, [("10.1.0.5", 24)], [], ipv6=True)
    assert ipv6_addr_gen_mode(sock.sent_message(1)) is None


def test_delete_link_tells_whether_there_was_one() -> None:
    sock = ScriptedSocket([ack], [fails(errno.ENODEV)])
    client = Rtnl(sock)
    assert links.delete_link(client, "vethabc") is True
    assert links.delete_link(client, "vethabc") is False


def test_an_existing_default_route_in_the_pod_is_named() -> None:
    sock = ScriptedSocket([ack], [ack], [fails(errno.EEXIST)])
    with pytest.raises(NetlinkError) as raised:
        links.configure_pod_interface(Rtnl(sock), 2, [("10.1.0.5", 24)], ["10.1.0.1"])
    assert raised.value.args == (errno.EEXIST, "the container already has a default route")
    assert sock.sent_types() == [wire.RTM_NEWADDR, wire.RTM_NEWLINK, wire.RTM_NEWROUTE]


def test_a_dual_stack_pod_gets_both_addresses_then_up_then_a_default_route_each() -> None:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    sock = ScriptedSocket([ack], [ack], [ack], [ack], [ack])
    links.configure_pod_interface(
        Rtnl(sock),
        2,
        [("10.1.0.5", 24), ("fd00:1::5", 64)],
        ["10.1.0.1", "fd00:1::1"],
        ipv6=True,
    )
    assert ipv6_addr_gen_mode(sock.sent_message(2)) is None  # the pod keeps its link-local
    assert sock.sent_types() == [
        *[wire.RTM_NEWADDR] * 2,
        wire.RTM_NEWLINK,
        *[wire.RTM_NEWROUTE] * 2,
    ]
    four, six = sock.sent_message(0, ifaddrmsg), sock.sent_message(1, ifaddrmsg)
    assert four["flags"] == 0  # IPv4 has no duplicate address detection
    assert (six["family"], six["flags"] & 0x02) == (wire.AF_INET6, 0x02)  # IFA_F_NODAD
    route6 = sock.sent_message(4, rtmsg)
    assert (route6["family"], route6["dst_len"], route6.get_attr("RTA_GATEWAY")) == (
        wire.AF_INET6,
        0,
        "fd00:1::1",
    )


def test_a_missing_link_is_none() -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)])
    assert links.find_link(Rtnl(sock), "eth0") is None
    assert isinstance(sock.sent_message(0), ifinfmsg)


def test_a_vxlan_link_is_created_down_without_learning_and_read_back() -> None:
    vxlan = links.Vxlan(vni=1, local="192.168.50.11", underlay=2, port=8472)
    request = links.vxlan_request("minicni-vxlan", vxlan, "0e:6d:c0:a8:32:0b", 1450)
    data = [
        ("IFLA_VXLAN_ID", 1),
        ("IFLA_VXLAN_LOCAL", "192.168.50.11"),
        ("IFLA_VXLAN_LINK", 2),
        ("IFLA_VXLAN_PORT", 8472),
    ]
    info = {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": data})]}
    sock = ScriptedSocket(
        [ack], [lambda seq: link_reply(seq, 9, "minicni-vxlan", 0, IFLA_LINKINFO=info), ack]
    )
    client = Rtnl(sock)
    client.request(request, wire.RTM_NEWLINK, wire.CREATE_NEW)
    sent = sock.sent_message(0)
    assert sent["flags"] == 0  # down until it is configured
    assert (sent.get_attr("IFLA_ADDRESS"), sent.get_attr("IFLA_MTU")) == ("0e:6d:c0:a8:32:0b", 1450)
    sent_data = sent.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert sent_data.get_attr("IFLA_VXLAN_LEARNING") == 0
    assert (sent_data.get_attr("IFLA_VXLAN_ID"), sent_data.get_attr("IFLA_VXLAN_PORT")) == (1, 8472)
    # The port goes out in network byte order (the kernel's be16): 8472 is 0x2118.
    assert bytes.fromhex("2118") in sock.sent[0]
    link = links.find_link(client, "minicni-vxlan")
    assert link is not None and link.kind == "vxlan"
    assert link.vxlan == vxlan


def test_a_link_is_deleted_by_index_too() -> None:
    sock = ScriptedSocket([ack])
    assert links.delete_link(Rtnl(sock), index=9) is True
    sent = sock.sent_message(0)
    assert (sent["index"], sent.get_attr("IFLA_IFNAME")) == (9, None)
