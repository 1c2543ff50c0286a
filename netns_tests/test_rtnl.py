"""The rtnetlink client against the kernel, in a namespace made for each test; results are read
back with `ip`, never with the client itself."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import netns
from minicni.net.rtnl import Rtnl, open_route_socket
from minicni.net.wire import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    NetlinkError,
)
from netns_tests.conftest import unique_name

pytestmark = pytest.mark.root


@pytest.fixture
def namespace() -> Iterator[str]:
    name = unique_name("ptr")
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def open_in(name: str) -> Rtnl:
    with netns.enter(netns.path_of(name)):
        return Rtnl()


def ip_links(name: str) -> list[str]:
    shown = subprocess.run(
        ["ip", "-n", name, "-j", "link", "show"], capture_output=True, text=True, check=True
    )
    return [link["ifname"] for link in json.loads(shown.stdout)]


def new_bridge(name: str) -> ifinfmsg:
    msg = ifinfmsg()
    msg["attrs"] = [
        ("IFLA_IFNAME", name),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}),
    ]
    return msg


def test_a_client_opened_in_a_namespace_changes_that_namespace(namespace: str) -> None:
    bridge = unique_name("ptb")
    with open_in(namespace) as client:
        assert client.request(new_bridge(bridge), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL) == []
        with pytest.raises(NetlinkError) as raised:
            client.request(new_bridge(bridge), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
    assert raised.value.code == errno.EEXIST
    assert bridge in ip_links(namespace)
    assert bridge not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_get_returns_the_link_and_a_missing_one_raises_enodev(namespace: str) -> None:
    with open_in(namespace) as client:
        request = ifinfmsg()
        request["attrs"] = [("IFLA_IFNAME", "lo")]
        [lo] = client.request(request, RTM_GETLINK)
        request = ifinfmsg()
        request["attrs"] = [("IFLA_IFNAME", "missing0")]
        with pytest.raises(NetlinkError) as raised:
            client.request(request, RTM_GETLINK)
    assert lo["index"] == 1 and lo.get_attr("IFLA_IFNAME") == "lo"
    assert raised.value.code == errno.ENODEV


class CountingSocket:
    """A real netlink socket that counts the datagrams it receives."""

    def __init__(self) -> None:
        self.sock = open_route_socket()
        self.received = 0

    def send(self, data: bytes, /) -> int:
        return self.sock.send(data)

    def recvmsg(self, bufsize: int, /) -> tuple[bytes, list[Any], int, Any]:
        self.received += 1
        return self.sock.recvmsg(bufsize)

    def close(self) -> None:
        self.sock.close()


def test_a_dump_spanning_several_datagrams_returns_every_link(namespace: str) -> None:
    # Few links, deleted before the namespace goes: a namespace torn down with hundreds of
    # links keeps the kernel's cleanup busy and stalls the next test's unshare().
    names = [f"rb{i}" for i in range(40)]  # ~1.5 KB each in a dump, 32 KB at most a datagram
    with netns.enter(netns.path_of(namespace)):
        counting = CountingSocket()
    with Rtnl(counting) as client:
        for name in names:
            client.request(new_bridge(name), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
        counting.received = 0
        dumped = [link.get_attr("IFLA_IFNAME") for link in client.dump(ifinfmsg(), RTM_GETLINK)]
        datagrams = counting.received
        expected = sorted(ip_links(namespace))
        for name in names:
            request = ifinfmsg()
            request["attrs"] = [("IFLA_IFNAME", name)]
            client.request(request, RTM_DELLINK)
    assert datagrams >= 2
    assert sorted(dumped) == expected and len(dumped) == len(names) + 1


def test_an_error_carries_the_kernels_explanation(namespace: str) -> None:
    request = ifinfmsg()
    request["attrs"] = [
        ("IFLA_IFNAME", "x0"),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "nokind")]}),
    ]
    with open_in(namespace) as client, pytest.raises(NetlinkError) as raised:
        client.request(request, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
    assert raised.value.code == errno.EOPNOTSUPP
    assert "Unknown device type" in str(raised.value)


def test_a_batch_of_routes_is_acked_one_by_one_and_dumped_back_typed(namespace: str) -> None:
    """More routes than one datagram holds, on a strict socket with the agent's receive buffer:
    each request gets its own outcome, and the typed dump (filtered by protocol in the kernel)
    reads back exactly what `ip` shows."""
    from ipaddress import IPv4Address, IPv4Network

    from minicni.net import links, routes, wire
    from minicni.net.addresses import address_request

    count = 1200  # three datagrams
    with netns.enter(netns.path_of(namespace)):
        client = Rtnl(strict=True, receive_buffer=1 << 20)
    with client:
        peer = links.link_request(name="d1")  # brought up once it exists
        info = {"attrs": [("VETH_INFO_PEER", peer)]}
        pair = links.link_request(
            name="d0",
            up=True,
            linkinfo={"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", info)]},
        )
        client.request(pair, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
        link, far = links.find_link(client, "d0"), links.find_link(client, "d1")
        assert link is not None and far is not None
        client.request(links.link_request(far.index, up=True), RTM_NEWLINK)
        client.request(
            address_request(link.index, "192.168.77.1", 24), wire.RTM_NEWADDR, NLM_F_CREATE
        )
        wanted = [IPv4Network(f"10.{i // 250}.{i % 250}.0/24") for i in range(count)]
        requests = [
            (
                routes.route_request(
                    dst, IPv4Address("192.168.77.2"), table=254, protocol=109, oif=link.index
                ),
                wire.RTM_NEWROUTE,
                wire.CREATE_NEW,
            )
            for dst in [*wanted, wanted[0]]  # the last one again: EEXIST, for it alone
        ]
        outcomes = client.batch(requests)
        dumped = routes.dump_routes(client, protocol=109)
    *added, again = outcomes
    assert added == [None] * count
    assert again is not None and again.code == errno.EEXIST
    assert sorted(r.dst for r in dumped) == sorted(wanted)
    shown = subprocess.run(
        ["ip", "-n", namespace, "-j", "route", "show", "proto", "109"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(shown.stdout)) == count
