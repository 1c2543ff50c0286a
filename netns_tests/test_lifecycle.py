"""ADD, CHECK and DEL as a runtime runs them, for every supported config version, checked against
the kernel: links, addresses, routes, bridge port, MTU, hairpin, and the reservation files. Each
test runs on both of the plugin's paths: served by the agent, and in-process (the fallback)."""

from __future__ import annotations

import json
import os
import subprocess
from ipaddress import IPv4Interface
from typing import Any

import pytest

from netns_tests.conftest import (
    PLUGIN_PATHS,
    FakeNode,
    addresses_in,
    check_then_delete,
    host_snapshot,
    in_netns,
    links_in,
    ping,
    routes_in,
    tree,
)

pytestmark = [pytest.mark.root, pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)]

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def hairpin(node: FakeNode, port: str) -> bool:
    shown = in_netns(node.host, "bridge", "-d", "-j", "link", "show", "dev", port)
    assert shown.returncode == 0, shown.stderr
    return bool(json.loads(shown.stdout)[0]["hairpin"])


def assert_added(node: FakeNode, result: dict[str, Any], pod: str, ifname: str = "eth0") -> str:
    """The result and the kernel agree on a working pod; returns the pod's address."""
    bridge_if, host_if, pod_if = result["interfaces"]
    assert bridge_if["name"] == node.bridge and "sandbox" not in bridge_if
    assert "sandbox" not in host_if
    assert pod_if["name"] == ifname and pod_if["sandbox"] == pod
    (ip,) = result["ips"]
    assert ip["interface"] == 2 and result["interfaces"][ip["interface"]] is pod_if
    assert ip["gateway"] == "10.99.0.1"
    address = IPv4Interface(ip["address"])
    assert str(address.network) == node.subnet
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]

    host_links = links_in(node.host)
    bridge = host_links[node.bridge]
    assert (bridge.kind, bridge.up, bridge.mac) == ("bridge", True, bridge_if["mac"])
    veth = host_links[host_if["name"]]
    assert (veth.kind, veth.master, veth.up, veth.mac) == (
        "veth",
        node.bridge,
        True,
        host_if["mac"],
    )
    assert len(host_if["name"]) <= 15
    assert "10.99.0.1/24" in addresses_in(node.host, node.bridge)
    assert hairpin(node, host_if["name"])

    pod_link = links_in(pod)[ifname]
    assert (pod_link.kind, pod_link.up, pod_link.mac) == ("veth", True, pod_if["mac"])
    assert pod_link.mtu == veth.mtu == pod_if["mtu"]
    assert addresses_in(pod, ifname) == {ip["address"]}
    assert ("0.0.0.0/0", "10.99.0.1", ifname) in routes_in(pod)

    reservation = node.reservations()[str(address.ip)]
    assert reservation["ifname"] == ifname and reservation["netns"] == pod
    assert in_netns(node.host, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    return str(address.ip)


def assert_deleted(node: FakeNode, result: dict[str, Any], pod: str | None) -> None:
    host_veth = result["interfaces"][1]["name"]
    assert host_veth not in links_in(node.host)
    if pod is not None and os.path.exists(pod):
        assert result["interfaces"][2]["name"] not in links_in(pod)
    address = result["ips"][0]["address"].split("/")[0]
    assert address not in node.reservations()
    assert not [p for p in node.store_dir.iterdir() if p.name.startswith("owner-")]


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del(node: FakeNode, version: str) -> None:
    pod, cid = node.pod(), node.container_id()
    config = node.config(version)
    added = node.add(pod, cid, config=config)
    assert added.code == 0, added
    result = added.json
    assert result["cniVersion"] == version
    versioned = version.startswith("0.")
    assert all(("version" in ip) == versioned for ip in result["ips"])
    if versioned:
        assert [ip["version"] for ip in result["ips"]] == ["4"]
    assert_added(node, result, pod)
    assert ping(pod, "10.99.0.1")

    check_then_delete(node, config, result, cid, pod, version)
    assert_deleted(node, result, pod)
    assert cid[:12] in node.log_text()


def test_check_reports_what_is_missing(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    config = node.config(prevResult=result)
    address = result["ips"][0]["address"]
    in_netns(pod, "ip", "route", "del", "default")
    missing_route = node.run("CHECK", config, cid, pod)
    assert missing_route.code != 0 and missing_route.json["code"] == 102
    assert "route" in missing_route.json["msg"]
    in_netns(pod, "ip", "addr", "del", address, "dev", "eth0")
    missing_addr = node.run("CHECK", config, cid, pod)
    assert missing_addr.code != 0 and address in missing_addr.json["msg"]
    in_netns(pod, "ip", "link", "del", "eth0")
    missing_link = node.run("CHECK", config, cid, pod)
    assert missing_link.code != 0 and "eth0" in missing_link.json["msg"]
    assert node.run("DEL", config, cid, pod).code == 0


def test_check_without_reservation_fails(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    for entry in node.store_dir.iterdir():
        if entry.name[0].isdigit():
            entry.unlink()
    checked = node.run("CHECK", node.config(prevResult=result), cid, pod)
    assert checked.code != 0 and checked.json["code"] == 102, checked
    assert "reserved" in checked.json["msg"]
    assert node.run("DEL", None, cid, pod).code == 0


def test_check_without_prev_result_is_an_error(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    assert node.add(pod, cid).code == 0
    checked = node.run("CHECK", None, cid, pod)
    assert checked.code != 0 and checked.json["code"] == 7, checked


def test_two_pods_reach_each_other_and_a_second_interface(node: FakeNode) -> None:
    a, b = node.pod(), node.pod()
    cid_a, cid_b = node.container_id(), node.container_id()
    addr_a = assert_added(node, node.add(a, cid_a).json, a)
    addr_b = assert_added(node, node.add(b, cid_b).json, b)
    assert addr_a != addr_b
    assert ping(a, addr_b) and ping(b, addr_a)
    # A second interface of the same container is a second attachment with its own address.
    net1 = node.run("ADD", node.config(isDefaultGateway=False), cid_a, a, "net1")
    assert net1.code == 0, net1
    assert net1.json["routes"] == []
    assert IPv4Interface(net1.json["ips"][0]["address"]).ip not in (addr_a, addr_b)
    assert len({name for name in links_in(node.host) if name.startswith("veth")}) == 3
    for cid, pod, ifname in ((cid_a, a, "net1"), (cid_a, a, "eth0"), (cid_b, b, "eth0")):
        assert node.run("DEL", None, cid, pod, ifname).code == 0
    assert node.reservations() == {}


def test_del_twice(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    for _ in range(2):
        deleted = node.run("DEL", None, cid, pod)
        assert (deleted.code, deleted.stdout) == (0, ""), deleted
        assert_deleted(node, result, pod)


def test_del_removes_a_pod_end_whose_host_end_was_moved_away(node: FakeNode) -> None:
    """The host end is no longer in the node (moved to another namespace): DEL finds the pod end
    by its mark and deletes it, which takes the moved host end too. Served, the agent holds the
    pod's namespace file only and reaches in by its id."""
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    host_if = result["interfaces"][1]["name"]
    elsewhere = node.pod()
    moved = in_netns(node.host, "ip", "link", "set", host_if, "netns", elsewhere)
    assert moved.returncode == 0, moved.stderr
    deleted = node.run("DEL", None, cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert "eth0" not in links_in(pod)
    assert host_if not in links_in(elsewhere)
    assert node.reservations() == {}


def test_del_of_something_never_added(node: FakeNode) -> None:
    pod = node.pod()
    deleted = node.run("DEL", None, node.container_id(), pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted


def test_del_after_the_netns_is_deleted(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    subprocess.run(["ip", "netns", "delete", os.path.basename(pod)], check=True)
    assert not os.path.exists(pod)
    deleted = node.run("DEL", None, cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert_deleted(node, result, None)
    assert node.run("DEL", None, cid, pod).code == 0


def test_del_after_the_netns_is_unmounted(node: FakeNode) -> None:
    """A runtime that crashed may leave CNI_NETNS as an empty file whose namespace is gone."""
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    subprocess.run(["umount", pod], check=True)
    assert os.path.exists(pod)  # a plain file now, no namespace behind it
    deleted = node.run("DEL", None, cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert_deleted(node, result, None)
    assert node.run("DEL", None, cid, pod).code == 0


def test_del_with_empty_netns(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    result = node.add(pod, cid).json
    deleted = node.run("DEL", None, cid, "")
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert_deleted(node, result, None)
    unset = node.run("DEL", None, cid, None)
    assert (unset.code, unset.stdout) == (0, ""), unset


def test_add_onto_an_existing_ifname_changes_nothing(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    in_netns(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    host_before, pod_before = host_snapshot(node.host), host_snapshot(pod)
    added = node.add(pod, cid)
    assert added.code != 0 and added.json["code"] == 100, added
    assert "eth0" in added.json["msg"]
    assert host_snapshot(node.host) == host_before
    assert host_snapshot(pod) == pod_before
    assert node.reservations() == {}


def test_add_of_a_second_ifname_after_an_existing_one(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    first = node.add(pod, cid)
    assert first.code == 0, first
    before = (host_snapshot(node.host), host_snapshot(pod), tree(node.store_dir))
    again = node.add(pod, cid)
    assert again.code != 0 and again.json["code"] == 100, again
    assert (host_snapshot(node.host), host_snapshot(pod), tree(node.store_dir)) == before
    assert node.run("CHECK", node.config(prevResult=first.json), cid, pod).code == 0


def test_add_into_a_missing_netns(node: FakeNode) -> None:
    before = host_snapshot(node.host)
    added = node.add("/run/netns/pt-does-not-exist", node.container_id())
    assert added.code != 0 and added.json["code"] == 3, added
    assert host_snapshot(node.host) == before
    assert node.reservations() == {}


def test_add_into_the_plugins_own_netns(node: FakeNode) -> None:
    before = host_snapshot(node.host)
    added = node.add(node.host, node.container_id())
    assert added.code != 0 and added.json["code"] == 8, added
    assert host_snapshot(node.host) == before
    assert node.reservations() == {}


def test_options_mtu_no_hairpin_no_gateway_dns(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    dns = {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    config = node.config(mtu=1400, hairpinMode=False, isDefaultGateway=False, dns=dns)
    added = node.add(pod, cid, config=config)
    assert added.code == 0, added
    result = added.json
    assert result["dns"] == dns
    assert result["routes"] == []
    host_veth = result["interfaces"][1]["name"]
    assert links_in(node.host)[host_veth].mtu == 1400
    assert links_in(pod)["eth0"].mtu == 1400
    assert result["interfaces"][2]["mtu"] == 1400
    assert not hairpin(node, host_veth)
    assert addresses_in(node.host, node.bridge) == set()
    assert not any(dst == "0.0.0.0/0" for dst, _, _ in routes_in(pod))
    assert node.run("CHECK", dict(config, prevResult=result), cid, pod).code == 0
    assert node.run("DEL", config, cid, pod).code == 0


def test_stdout_holds_exactly_one_document_and_logs_go_elsewhere(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    json.loads(added.stdout)  # any log line on stdout would break this
    assert f"ADD {cid}/eth0" in node.log_text()
    if node.served:  # the agent logs it: its stderr, not the plugin's log file
        assert added.stderr == "" and not node.log_file.exists()
    else:
        assert "ADD" in added.stderr


def test_a_reservation_rewrites_the_spare_instead_of_making_a_file(node: FakeNode) -> None:
    """The store recycles its files: the agent makes a spare after it answers an ADD, an
    in-process DEL leaves the released one; the next reservation rewrites it in place, so no
    pod start waits for the file system to allocate an inode."""
    pod, cid = node.pod(), node.container_id()
    assert node.add(pod, cid).code == 0
    assert node.run("DEL", None, cid, pod).code == 0
    node.wait_for_deletes()
    spare = node.store_dir / "spare"
    inode = spare.stat().st_ino
    second = node.add(node.pod(), node.container_id())
    assert second.code == 0, second
    address = second.json["ips"][0]["address"].split("/")[0]
    assert (node.store_dir / address).stat().st_ino == inode
    assert json.loads((node.store_dir / address).read_text())["address"] == address
