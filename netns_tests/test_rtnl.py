"""The rtnetlink client against the kernel, in a namespace made for each test; results are read
back with `ip`, never with the client itself."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import netns
from minicni.net.rtnl import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    Rtnl,
    open_route_socket,
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
