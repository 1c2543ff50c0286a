"""Node-level behaviour: the reboot sweep, the MTU default, a changed pod CIDR, a stable bridge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from netns_tests.conftest import FakeNode, addresses_in, in_netns, links_in, ping

pytestmark = pytest.mark.root


def fake_older_boot(node: FakeNode, address: str) -> None:
    """Make the reservation of `address` (and the store) look as if made before a reboot."""
    reservation = node.store_dir / address
    data = json.loads(reservation.read_text())
    data["bootID"] = "00000000-0000-0000-0000-000000000000"
    reservation.write_text(json.dumps(data))
    (node.store_dir / "boot_id").write_text("00000000-0000-0000-0000-000000000000\n")


def test_reboot_sweep_releases_what_pods_of_an_older_boot_left(node: FakeNode) -> None:
    gone_pod, gone_cid = node.pod(), node.container_id()
    alive_pod, alive_cid = node.pod(), node.container_id()
    gone = node.add(gone_pod, gone_cid).json["ips"][0]["address"].split("/")[0]
    alive = node.add(alive_pod, alive_cid).json["ips"][0]["address"].split("/")[0]
    fake_older_boot(node, gone)
    fake_older_boot(node, alive)
    # The "reboot" took the first pod's namespace; the second one's was kept (a runtime may
    # keep namespaces on persistent storage).
    subprocess.run(["ip", "netns", "delete", Path(gone_pod).name], check=True)

    new_pod, new_cid = node.pod(), node.container_id()
    added = node.add(new_pod, new_cid)
    assert added.code == 0, added
    owners = {r["containerID"] for r in node.reservations().values()}
    assert owners == {alive_cid, new_cid}
    assert not (node.store_dir / f"owner-{gone_cid}@eth0").exists()
    assert (node.store_dir / "boot_id").read_text().strip() == (
        Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    )
    assert gone in node.log_file.read_text()  # the sweep says what it released
    # The late DEL for the swept pod still succeeds.
    assert node.run("DEL", None, gone_cid, gone_pod).code == 0
    assert alive in node.reservations()


def test_reservations_of_this_boot_survive_a_lost_netns(node: FakeNode) -> None:
    """Only a reboot triggers the sweep: a netns gone in this boot waits for its DEL."""
    pod, cid = node.pod(), node.container_id()
    address = node.add(pod, cid).json["ips"][0]["address"].split("/")[0]
    subprocess.run(["ip", "netns", "delete", Path(pod).name], check=True)
    assert node.add(node.pod(), node.container_id()).code == 0
    assert address in node.reservations()


def test_mtu_defaults_to_the_default_route_interface(node: FakeNode) -> None:
    commands = [
        ["ip", "link", "add", "uplink", "mtu", "1400", "type", "veth", "peer", "name", "upeer"],
        ["ip", "link", "set", "uplink", "up"],
        ["ip", "addr", "add", "192.0.2.2/24", "dev", "uplink"],
        ["ip", "route", "add", "default", "via", "192.0.2.1"],
    ]
    for command in commands:
        done = in_netns(node.host, *command)
        assert done.returncode == 0, done.stderr
    pod = node.pod()
    added = node.add(pod, node.container_id())
    assert added.code == 0, added
    assert added.json["interfaces"][2]["mtu"] == 1400
    assert links_in(pod)["eth0"].mtu == 1400
    assert links_in(node.host)[added.json["interfaces"][1]["name"]].mtu == 1400


def test_mtu_is_1500_without_a_default_route(node: FakeNode) -> None:
    pod = node.pod()
    added = node.add(pod, node.container_id())
    assert added.code == 0, added
    assert links_in(pod)["eth0"].mtu == 1500


def test_a_changed_pod_cidr_replaces_the_gateway_address(node: FakeNode) -> None:
    old_pod, old_cid = node.pod(), node.container_id()
    assert node.add(old_pod, old_cid).code == 0
    assert addresses_in(node.host, node.bridge) == {"10.99.0.1/24"}
    assert node.run("DEL", None, old_cid, old_pod).code == 0

    node.subnet = "10.98.0.0/24"
    pod = node.pod()
    added = node.add(pod, node.container_id())
    assert added.code == 0, added
    assert added.json["ips"][0]["address"] == "10.98.0.2/24"
    assert addresses_in(node.host, node.bridge) == {"10.98.0.1/24"}
    assert ping(pod, "10.98.0.1")


def test_bridge_mac_stays_when_ports_come_and_go(node: FakeNode) -> None:
    """Pinned at creation, so pods' neighbour entries for the gateway stay valid."""
    first_pod, first_cid = node.pod(), node.container_id()
    first = node.add(first_pod, first_cid).json
    mac = first["interfaces"][0]["mac"]
    others = [(node.pod(), node.container_id()) for _ in range(3)]
    for pod, cid in others:
        assert node.add(pod, cid).json["interfaces"][0]["mac"] == mac
    assert node.run("DEL", None, first_cid, first_pod).code == 0
    assert links_in(node.host)[node.bridge].mac == mac
