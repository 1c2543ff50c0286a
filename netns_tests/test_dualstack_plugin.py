"""The plugin on dual-stack and IPv6-only networks, run as a runtime runs it, for every config
version: an address of each family on the pod interface, usable at once (no duplicate address
detection), a gateway of each family on the bridge, a default route per family, a reservation of
each in the store; CHECK sees both; DEL, GC and a full range of one family leave nothing behind.
Each test runs on both of the plugin's paths: served by the agent, and in-process (the fallback);
an IPv6 pod keeps its link-local address, which an IPv4-only pod does without."""

from __future__ import annotations

import json
from ipaddress import ip_interface
from typing import Any

import pytest

from netns_tests.conftest import (
    PLUGIN_PATHS,
    FakeNode,
    addresses_in,
    check_then_delete,
    in_netns,
    links_in,
    ping,
)

pytestmark = [pytest.mark.root, pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)]

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
SUBNET6 = "fd00:99::/64"
DUAL = ["10.99.0.0/24", SUBNET6]


def ip6_routes(path: str) -> list[dict[str, Any]]:
    shown = in_netns(path, "ip", "-6", "-j", "route", "show")
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout))


def address_flags(path: str, ifname: str) -> dict[str, dict[str, Any]]:
    """Every global address on `ifname` with what `ip -j addr` says of it (tentative, nodad)."""
    shown = in_netns(path, "ip", "-j", "addr", "show", "dev", ifname)
    assert shown.returncode == 0, shown.stderr
    return {
        f"{a['local']}/{a['prefixlen']}": a
        for a in json.loads(shown.stdout)[0]["addr_info"]
        if a.get("scope") == "global"
    }


def assert_dual_stack_pod(node: FakeNode, result: dict[str, Any], pod: str) -> tuple[str, str]:
    """The result and the kernel agree on a pod with an address of each family; returns them."""
    four, six = result["ips"]
    assert (four["interface"], six["interface"]) == (2, 2)
    assert (four["gateway"], six["gateway"]) == ("10.99.0.1", "fd00:99::1")
    assert str(ip_interface(four["address"]).network) == "10.99.0.0/24"
    assert str(ip_interface(six["address"]).network) == SUBNET6
    assert result["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.99.0.1"},
        {"dst": "::/0", "gw": "fd00:99::1"},
    ]
    on_pod = address_flags(pod, "eth0")
    assert set(on_pod) == {four["address"], six["address"]}
    assert not on_pod[six["address"]].get("tentative")  # usable at once: no DAD
    assert on_pod[six["address"]].get("nodad") is True
    link_local = in_netns(pod, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
    assert " fe80::" in link_local.stdout, link_local  # an IPv6 pod keeps its link-local
    defaults = [r for r in ip6_routes(pod) if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in defaults] == [("fd00:99::1", "eth0")]
    bridge = address_flags(node.host, node.bridge)
    assert set(bridge) == {"10.99.0.1/24", "fd00:99::1/64"}
    assert not bridge["fd00:99::1/64"].get("tentative")
    forwarding = in_netns(node.host, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
    assert forwarding.stdout.strip() == "1"
    address4, address6 = (ip["address"].split("/")[0] for ip in (four, six))
    reservations = node.reservations()
    assert {address4, address6} <= set(reservations)
    assert reservations[address6]["ifname"] == "eth0" and reservations[address6]["netns"] == pod
    return address4, address6


@pytest.mark.parametrize("version", VERSIONS)
def test_dual_stack_add_check_del(node: FakeNode, version: str) -> None:
    pod, cid = node.pod(), node.container_id()
    config = node.config(version, subnet=DUAL)
    added = node.add(pod, cid, config=config)
    assert added.code == 0, added
    result = added.json
    assert result["cniVersion"] == version
    if version.startswith("0."):
        assert [ip["version"] for ip in result["ips"]] == ["4", "6"]  # 0.3.x/0.4.0's shape
    else:
        assert all("version" not in ip for ip in result["ips"])
    address4, address6 = assert_dual_stack_pod(node, result, pod)
    assert ping(pod, "10.99.0.1") and ping(pod, "fd00:99::1")  # right after ADD

    check_then_delete(node, config, result, cid, pod, version)
    assert not {address4, address6} & set(node.reservations())
    assert not [p for p in node.store_dir.iterdir() if p.name.startswith("owner")]
    assert result["interfaces"][1]["name"] not in links_in(node.host)


def test_check_sees_each_family(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    config = node.config(subnet=DUAL)
    result = node.add(pod, cid, config=config).json
    checking = dict(config, prevResult=result)
    six = result["ips"][1]["address"]

    in_netns(pod, "ip", "-6", "route", "del", "default")
    missing_route = node.run("CHECK", checking, cid, pod)
    assert missing_route.json["code"] == 102 and "::/0" in missing_route.json["msg"]
    in_netns(pod, "ip", "-6", "route", "add", "default", "via", "fd00:99::1")
    assert node.run("CHECK", checking, cid, pod).code == 0

    in_netns(pod, "ip", "addr", "del", six, "dev", "eth0")
    missing_address = node.run("CHECK", checking, cid, pod)
    assert missing_address.json["code"] == 102 and six in missing_address.json["msg"]

    in_netns(pod, "ip", "addr", "add", six, "dev", "eth0", "nodad")
    (node.store_dir / six.split("/")[0]).unlink()
    (node.store_dir / f"owner6-{cid}@eth0").unlink()
    no_reservation = node.run("CHECK", checking, cid, pod)
    assert no_reservation.json["code"] == 102 and "IPv6" in no_reservation.json["msg"]


def test_a_full_ipv6_range_undoes_the_ipv4_reservation_and_leaves_no_link(node: FakeNode) -> None:
    config = node.config(subnet=["10.99.0.0/24", "fd00:99::/126"])  # ::2 and ::3 for pods
    for _ in range(2):
        assert node.add(node.pod(), node.container_id(), config=config).code == 0
    before_links = set(links_in(node.host))
    before = node.reservations()
    pod, cid = node.pod(), node.container_id()
    full = node.add(pod, cid, config=config)
    assert full.code != 0 and full.json["code"] == 101, full
    assert node.reservations() == before  # its IPv4 address was given back
    assert set(links_in(node.host)) == before_links
    assert "eth0" not in links_in(pod)
    assert not [p for p in node.store_dir.iterdir() if cid in p.name]


def test_an_ipv6_only_network_gives_the_pod_ipv6_only(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    config = node.config("1.0.0", subnet=SUBNET6)
    added = node.add(pod, cid, config=config)
    assert added.code == 0, added
    result = added.json
    (ip,) = result["ips"]
    assert (ip["gateway"], result["routes"]) == (
        "fd00:99::1",
        [{"dst": "::/0", "gw": "fd00:99::1"}],
    )
    assert addresses_in(pod, "eth0") == set()  # no IPv4 at all
    assert addresses_in(pod, "eth0", family=10) == {ip["address"]}
    assert addresses_in(node.host, node.bridge) == set()
    assert addresses_in(node.host, node.bridge, family=10) == {"fd00:99::1/64"}
    assert ping(pod, "fd00:99::1")
    assert node.run("CHECK", dict(config, prevResult=result), cid, pod).code == 0
    assert node.run("DEL", config, cid, pod).code == 0
    assert node.reservations() == {}


def test_ipam_ranges_one_set_per_family_and_gc_releases_both(node: FakeNode) -> None:
    ipam = {
        "type": "host-local",
        "ranges": [
            [{"subnet": "10.99.0.0/24"}],
            [{"subnet": SUBNET6, "rangeStart": "fd00:99::100"}],
        ],
    }
    config = node.config("1.1.0", subnet=None, ipam=ipam)
    kept_pod, kept = node.pod(), node.container_id()
    gone_pod, gone = node.pod(), node.container_id()
    for pod, cid in ((kept_pod, kept), (gone_pod, gone)):
        added = node.add(pod, cid, config=config)
        assert added.code == 0, added
        assert added.json["ips"][1]["address"].startswith("fd00:99::1")  # from rangeStart on
    assert len(node.reservations()) == 4
    valid = {"cni.dev/valid-attachments": [{"containerID": kept, "ifname": "eth0"}]}
    collected = node.run("GC", dict(config, **valid))
    assert (collected.code, collected.stdout) == (0, ""), collected
    left = node.reservations()
    assert len(left) == 2 and {r["containerID"] for r in left.values()} == {kept}
    assert "eth0" in links_in(kept_pod)
