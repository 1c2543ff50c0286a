"""ADD is a transaction: when it fails after reserving an address, the reservation and every link it
made are gone before the error comes back. Failures are injected through the kernel's own state,
never through hooks in the product code."""

from __future__ import annotations

import json

import pytest

from netns_tests.conftest import PLUGIN_PATHS, FakeNode, host_snapshot, in_netns, links_in, tree

pytestmark = [pytest.mark.root, pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)]


def snapshot(node: FakeNode, pod: str) -> tuple[object, ...]:
    # Reservations and owner links; the lock, boot_id and round-robin files are bookkeeping.
    store = {
        name: content
        for name, content in tree(node.store_dir).items()
        if name[0].isdigit() or name.startswith("owner-")
    }
    return host_snapshot(node.host), host_snapshot(pod), store


def test_range_exhaustion(node: FakeNode) -> None:
    config = node.config(subnet="10.99.0.0/29")  # .2 .. .6: five pod addresses
    pods = [(node.pod(), node.container_id()) for _ in range(6)]
    addresses = []
    for pod, cid in pods[:5]:
        added = node.add(pod, cid, config=config)
        assert added.code == 0, added
        addresses.append(added.json["ips"][0]["address"])
    assert sorted(addresses) == [f"10.99.0.{i}/29" for i in range(2, 7)]

    pod, cid = pods[5]
    before = snapshot(node, pod)
    full = node.add(pod, cid, config=config)
    assert full.code != 0 and full.json["code"] == 101, full
    assert "10.99.0.1-10.99.0.6" in full.json["details"]
    assert snapshot(node, pod) == before
    assert "eth0" not in links_in(pod)

    # Freeing one address makes room again.
    assert node.run("DEL", config, pods[1][1], pods[1][0]).code == 0
    again = node.add(pod, cid, config=config)
    assert again.code == 0, again
    assert again.json["ips"][0]["address"] == addresses[1]
    for pod, cid in pods[:1] + pods[2:]:
        assert node.run("DEL", config, cid, pod).code == 0
    assert node.reservations() == {}


def test_failure_at_the_route_step_leaves_nothing(node: FakeNode) -> None:
    """A default route already in the container: the veth exists and has its address when the
    route step fails, so the undo has real work to do."""
    warm_pod = node.pod()
    assert node.add(warm_pod, node.container_id()).code == 0  # the bridge exists already
    pod, cid = node.pod(), node.container_id()
    in_netns(pod, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
    in_netns(pod, "ip", "addr", "add", "192.0.2.2/24", "dev", "uplink")
    in_netns(pod, "ip", "link", "set", "uplink", "up")
    assert in_netns(pod, "ip", "route", "add", "default", "via", "192.0.2.1").returncode == 0
    before = snapshot(node, pod)

    added = node.add(pod, cid)
    assert added.code != 0, added
    document = json.loads(added.stdout)
    assert document["code"] == 103 and "default route" in document["details"], document
    assert snapshot(node, pod) == before
    assert "Traceback" not in added.stdout


def test_failure_at_the_bridge_step_leaves_nothing(node: FakeNode) -> None:
    """A link that is not a bridge already carries the bridge's name."""
    in_netns(node.host, "ip", "link", "add", node.bridge, "type", "veth", "peer", "name", "ptpeer")
    pod, cid = node.pod(), node.container_id()
    before = snapshot(node, pod)
    added = node.add(pod, cid)
    assert added.code != 0, added
    assert added.json["code"] == 103, added
    assert node.bridge in added.json["msg"] and "veth" in added.json["details"]
    assert snapshot(node, pod) == before
    assert node.reservations() == {}


def test_failure_in_a_fresh_node_leaves_only_the_bridge(node: FakeNode) -> None:
    """The bridge and its gateway address are node infrastructure, shared by every pod; a failed
    first ADD may leave them, but no reservation, veth or pod-side change."""
    pod, cid = node.pod(), node.container_id()
    assert (
        in_netns(pod, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "p").returncode
        == 0
    )
    in_netns(pod, "ip", "addr", "add", "192.0.2.2/24", "dev", "uplink")
    in_netns(pod, "ip", "link", "set", "uplink", "up")
    in_netns(pod, "ip", "route", "add", "default", "via", "192.0.2.1")
    pod_before = host_snapshot(pod)
    added = node.add(pod, cid)
    assert added.code != 0 and added.json["code"] == 103, added
    assert host_snapshot(pod) == pod_before
    assert node.reservations() == {}
    assert {n for n in links_in(node.host) if n.startswith("veth")} == set()
