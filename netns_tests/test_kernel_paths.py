"""Kernel states an ADD meets on a real node besides a clean one: the leftover of a killed ADD,
a bridge someone set down, a pod end that already exists; and what the ADD leaves, read back
with `ip`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from minicni.cni import errors
from minicni.net.links import host_veth_name
from netns_tests.conftest import PLUGIN_PATHS, FakeNode, addresses_in, in_netns, links_in, ping

pytestmark = pytest.mark.root


def ip_json(path: str, *argv: str) -> list[dict[str, Any]]:
    shown = in_netns(path, "ip", "-j", "-d", *argv)
    assert shown.returncode == 0, shown.stderr
    result: list[dict[str, Any]] = json.loads(shown.stdout)
    return result


def test_a_leftover_host_veth_of_a_killed_add_is_replaced(node: FakeNode) -> None:
    """A veth carrying this pod's mark (minicni made it): replaced. An unmarked one whose peer
    is elsewhere could be anyone's: see test_hostile_node.py."""
    pod, cid = node.pod(), node.container_id()
    leftover = host_veth_name(cid, "eth0")
    made = in_netns(node.host, "ip", "link", "add", leftover, "type", "veth", "peer", "lost0")
    assert made.returncode == 0, made.stderr
    marked = in_netns(node.host, "ip", "link", "set", leftover, "alias", f"minicni {cid}/eth0")
    assert marked.returncode == 0, marked.stderr

    added = node.add(pod, cid)
    assert added.code == 0, added
    host_links = links_in(node.host)
    assert "lost0" not in host_links  # the old pair is gone, its peer with it
    assert host_links[leftover].master == node.bridge and host_links[leftover].up
    assert ping(pod, "10.99.0.1")


# Served, the agent reads the bridge while the shim makes the pod's socket; each ADD still puts
# right what it finds wrong.
@pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)
def test_a_bridge_set_down_is_brought_up_again(node: FakeNode) -> None:
    assert node.add(node.pod(), node.container_id()).code == 0
    in_netns(node.host, "ip", "link", "set", node.bridge, "down")
    pod = node.pod()
    assert node.add(pod, node.container_id()).code == 0
    assert links_in(node.host)[node.bridge].up
    assert ping(pod, "10.99.0.1")


@pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)
def test_a_stale_gateway_on_the_bridge_is_replaced(node: FakeNode) -> None:
    """The node's pod CIDR changed: the old gateway goes, the new one comes back."""
    assert node.add(node.pod(), node.container_id()).code == 0
    in_netns(node.host, "ip", "addr", "flush", "dev", node.bridge)
    in_netns(node.host, "ip", "addr", "add", "10.77.0.1/24", "dev", node.bridge)
    pod = node.pod()
    assert node.add(pod, node.container_id()).code == 0
    assert addresses_in(node.host, node.bridge) == {"10.99.0.1/24"}
    assert ping(pod, "10.99.0.1")


@pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)
def test_a_deleted_bridge_is_made_again(node: FakeNode) -> None:
    first = node.pod()
    assert node.add(first, node.container_id()).code == 0
    assert in_netns(node.host, "ip", "link", "del", node.bridge).returncode == 0
    pod = node.pod()
    assert node.add(pod, node.container_id()).code == 0
    bridge = links_in(node.host)[node.bridge]
    assert bridge.kind == "bridge" and bridge.up
    assert addresses_in(node.host, node.bridge) == {"10.99.0.1/24"}
    assert ping(pod, "10.99.0.1")


@pytest.mark.parametrize("node", ["in-process", *PLUGIN_PATHS], indirect=True)
def test_an_existing_pod_interface_is_refused_before_anything_changes(node: FakeNode) -> None:
    pod = node.pod()
    in_netns(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "eth1")
    added = node.add(pod, node.container_id())
    assert added.code == 1 and added.json["code"] == errors.INTERFACE_EXISTS, added
    assert node.reservations() == {}
    store = list(node.store_dir.iterdir()) if node.store_dir.exists() else []
    assert not [p.name for p in store if p.name.startswith(("owner", "."))]
    assert not {name for name in links_in(node.host) if name.startswith("veth")}


@pytest.mark.parametrize("node", ["in-process", *PLUGIN_PATHS], indirect=True)
def test_an_add_repeated_for_a_running_pod_fails_and_the_pod_keeps_its_address(
    node: FakeNode,
) -> None:
    pod, cid = node.pod(), node.container_id()
    first = node.add(pod, cid)
    assert first.code == 0, first
    (address,) = node.reservations()
    again = node.add(pod, cid)
    assert again.code == 1 and again.json["code"] == errors.INTERFACE_EXISTS, again
    assert list(node.reservations()) == [address]
    assert ping(pod, "10.99.0.1")


def test_what_an_add_leaves_in_the_kernel(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    config = node.config(mtu=1400)
    assert node.add(pod, cid, config=config).code == 0
    host_veth = host_veth_name(cid, "eth0")
    [host_end] = ip_json(node.host, "link", "show", host_veth)
    assert host_end["mtu"] == 1400 and host_end["master"] == node.bridge
    assert host_end["operstate"] == "UP"
    [bridge] = ip_json(node.host, "link", "show", node.bridge)
    assert bridge["operstate"] in ("UP", "UNKNOWN") and "UP" in bridge["flags"]
    [pod_end] = ip_json(pod, "addr", "show", "eth0")
    assert pod_end["mtu"] == 1400 and pod_end["operstate"] == "UP"
    addresses = [
        (a["local"], a["prefixlen"]) for a in pod_end["addr_info"] if a["family"] == "inet"
    ]
    assert addresses == [("10.99.0.2", 24)]
    [default] = ip_json(pod, "route", "show", "default")
    assert (default["gateway"], default["dev"], default["protocol"]) == (
        "10.99.0.1",
        "eth0",
        "static",
    )


@contextlib.contextmanager
def captured(path: str, ifname: str) -> Iterator[list[str]]:
    """Frames seen on `ifname` during the body, one `tcpdump -e` line each (filled at exit)."""
    frames: list[str] = []
    capture = subprocess.Popen(
        ["nsenter", f"--net={path}", "tcpdump", "-i", ifname, "-e", "-n", "-l", "-U", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stderr is not None
        while "listening on" not in (line := capture.stderr.readline()):
            assert line, "tcpdump did not start"
        yield frames
    finally:
        capture.terminate()
        out, _ = capture.communicate(timeout=10)
        frames.extend(out.splitlines())


def test_an_ipv4_pod_network_has_no_ipv6_chatter_on_the_bridge(node: FakeNode) -> None:
    """Neither end of a pod's veth generates IPv6 addresses: no link-local, so a new pod sends
    no DAD, MLD or router solicitation, which the bridge would flood to every other pod (at
    1,000 pods, 6,000 deliveries each). The bridge does no multicast snooping (no querier)."""
    first = node.pod()
    assert node.add(first, node.container_id()).code == 0
    second = node.pod()
    with captured(first, "eth0") as frames:
        added = node.add(second, node.container_id())
        assert added.code == 0, added
        time.sleep(2.5)  # DAD, MLD reports and the first router solicitation: within 1 s
    new_macs = {added.json["interfaces"][i]["mac"] for i in (1, 2)}
    assert not [frame for frame in frames if any(mac in frame for mac in new_macs)], frames

    for path, ifname in ((second, "eth0"), (node.host, added.json["interfaces"][1]["name"])):
        [shown] = ip_json(path, "addr", "show", ifname)
        assert [a for a in shown["addr_info"] if a["family"] == "inet6"] == [], shown
        [link] = ip_json(path, "link", "show", ifname)
        assert link["inet6_addr_gen_mode"] == "none", link
    [lo] = ip_json(second, "addr", "show", "lo")
    assert "::1" in {a["local"] for a in lo["addr_info"]}  # loopback keeps its IPv6
    [bridge] = ip_json(node.host, "link", "show", node.bridge)
    assert bridge["linkinfo"]["info_data"]["mcast_snooping"] == 0


def bridge_netfilter(node: FakeNode) -> tuple[int, int]:
    (bridge,) = ip_json(node.host, "link", "show", node.bridge)
    data = bridge["linkinfo"]["info_data"]
    return data["nf_call_iptables"], data["nf_call_ip6tables"]


def test_the_bridge_sends_its_traffic_through_iptables_whatever_the_sysctl(
    node: FakeNode,
) -> None:
    # the node's own switch off, as on a host that never loaded the k8s sysctls
    in_netns(node.host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    assert node.add(node.pod(), node.container_id()).code == 0
    assert bridge_netfilter(node) == (1, 1)


def test_an_adopted_bridge_gets_its_netfilter_switches_on(node: FakeNode) -> None:
    # made by someone else (an older minicni, an admin) without them
    made = in_netns(node.host, "ip", "link", "add", node.bridge, "type", "bridge")
    assert made.returncode == 0, made.stderr
    assert bridge_netfilter(node) == (0, 0)
    assert node.add(node.pod(), node.container_id()).code == 0
    assert bridge_netfilter(node) == (1, 1)
    assert node.add(node.pod(), node.container_id()).code == 0  # already on: unchanged, fine
    assert bridge_netfilter(node) == (1, 1)
