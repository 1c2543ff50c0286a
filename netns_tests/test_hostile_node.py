"""A node with things on it that minicni did not make: CNI_NETNS naming a FIFO, a directory, a
file or a socket (fail fast, never block), and a link that already holds the host veth name
minicni derives (never deleted: ADD fails and says so, DEL and GC leave it alone)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minicni.net.links import host_veth_name
from netns_tests.conftest import FakeNode, addresses_in, host_snapshot, in_netns, links_in

pytestmark = pytest.mark.root

FAST = 20  # seconds: the plugin answers at once or the test fails (a blocked open never returns)


@pytest.fixture(params=["fifo", "directory", "regular-file", "socket", "mount-namespace"])
def not_a_netns(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "netns"
    kind = request.param
    held: socket.socket | None = None
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "regular-file":
        path.write_text("not a namespace")
    elif kind == "socket":
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.bind(str(path))
        held.listen()
    else:
        path = Path("/proc/self/ns/mnt")  # a namespace, of the wrong type
    yield str(path)
    if held is not None:
        held.close()


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_netns_that_is_no_network_namespace_fails_fast(
    node: FakeNode, not_a_netns: str, command: str
) -> None:
    before = host_snapshot(node.host)
    config = node.config(prevResult={"interfaces": [], "ips": []})
    run = node.run(command, config, node.container_id(), not_a_netns, timeout=FAST)
    assert run.code != 0 and run.json["code"] == 4, run
    assert "CNI_NETNS" in run.json["msg"] and "Traceback" not in run.stderr
    assert host_snapshot(node.host) == before
    assert node.reservations() == {}


def test_del_with_a_netns_that_is_no_network_namespace_releases_the_address(
    node: FakeNode, not_a_netns: str
) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    deleted = node.run("DEL", None, cid, not_a_netns, timeout=FAST)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert node.reservations() == {}
    assert added.json["interfaces"][1]["name"] not in links_in(node.host)


def _foreign_bridge(node: FakeNode, name: str) -> None:
    for argv in (
        ("ip", "link", "add", name, "type", "bridge"),
        ("ip", "addr", "add", "192.0.2.1/24", "dev", name),
    ):
        assert in_netns(node.host, *argv).returncode == 0


def _foreign_veth(node: FakeNode, name: str) -> None:
    made = in_netns(node.host, "ip", "link", "add", name, "type", "veth", "peer", "name", "fpeer")
    assert made.returncode == 0, made.stderr


@pytest.mark.parametrize("make", [_foreign_bridge, _foreign_veth], ids=["bridge", "veth"])
def test_a_foreign_link_with_the_host_veth_name_is_never_deleted(
    node: FakeNode, make: object
) -> None:
    pod, cid = node.pod(), node.container_id()
    name = host_veth_name(cid, "eth0")
    make(node, name)  # type: ignore[operator]
    before = (host_snapshot(node.host), host_snapshot(pod), addresses_in(node.host, name))

    added = node.add(pod, cid)
    assert added.code != 0 and added.json["code"] == 104, added
    assert name in added.json["msg"]
    assert "Traceback" not in added.stderr
    assert node.reservations() == {}
    # The bridge minicni made for the pods may stay (node infrastructure); nothing else changed.
    host_after = host_snapshot(node.host)
    links_before = {link for link in before[0][0] if link[0] != node.bridge}
    assert {link for link in host_after[0] if link[0] != node.bridge} == links_before
    assert (host_snapshot(pod), addresses_in(node.host, name)) == before[1:]

    deleted = node.run("DEL", None, cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert name in links_in(node.host)
    assert addresses_in(node.host, name) == before[2]


def test_gc_leaves_a_foreign_link_alone(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    # The pod goes away behind minicni's back; someone else takes the host veth's name.
    subprocess.run(["ip", "netns", "delete", os.path.basename(pod)], check=True)
    name = host_veth_name(cid, "eth0")
    deadline = time.monotonic() + 10  # the kernel destroys a namespace's links asynchronously
    while name in links_in(node.host) and time.monotonic() < deadline:
        time.sleep(0.05)
    _foreign_bridge(node, name)
    collected = node.run("GC", node.config(**{"cni.dev/valid-attachments": []}))
    assert (collected.code, collected.stdout) == (0, ""), collected
    assert node.reservations() == {}
    assert addresses_in(node.host, name) == {"192.0.2.1/24"}


def test_the_same_attachment_in_a_new_netns_replaces_its_own_host_veth(node: FakeNode) -> None:
    """A runtime that re-creates a sandbox with the same container ID, without a DEL: the host
    veth carries minicni's mark for this attachment, so it is minicni's to replace."""
    first_pod, second_pod, cid = node.pod(), node.pod(), node.container_id()
    assert node.add(first_pod, cid).code == 0
    again = node.add(second_pod, cid)
    assert again.code == 0, again
    assert "eth0" not in links_in(first_pod) and "eth0" in links_in(second_pod)
    assert node.run("DEL", None, cid, second_pod).code == 0
    assert host_veth_name(cid, "eth0") not in links_in(node.host)


def test_the_host_veth_carries_its_attachment_as_alias(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    for path, ifname in ((node.host, added.json["interfaces"][1]["name"]), (pod, "eth0")):
        shown = in_netns(path, "ip", "-o", "link", "show", "dev", ifname)
        assert f"alias minicni {cid}/eth0" in shown.stdout, shown.stdout
    assert node.run("DEL", None, cid, pod).code == 0


def test_an_unmarked_veth_into_the_pod_is_removed_only_with_the_pod_netns(node: FakeNode) -> None:
    """What an ADD killed between creating the pair and marking it leaves: a veth with the
    derived name whose peer is in the pod. DEL knows it by its peer; without CNI_NETNS it cannot
    tell, and leaves it (the pair goes with the pod's namespace)."""
    pod, cid = node.pod(), node.container_id()
    name = host_veth_name(cid, "eth0")
    made = in_netns(
        node.host, "ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", pod
    )
    assert made.returncode == 0, made.stderr
    assert node.run("DEL", None, cid, None).code == 0
    assert name in links_in(node.host)
    assert node.run("DEL", None, cid, pod).code == 0
    assert name not in links_in(node.host) and "eth0" not in links_in(pod)


def test_a_planted_lock_symlink_is_refused_and_its_target_not_created(
    node: FakeNode, tmp_path: Path
) -> None:
    target = tmp_path / "planted-target"
    node.store_dir.mkdir(parents=True)
    os.symlink(target, node.store_dir / "lock")
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code != 0 and added.json["code"] == 5, added
    assert "symlink" in added.json["details"] and "lock" in added.json["details"]
    assert not target.exists() and not target.is_symlink()
    assert node.reservations() == {}
