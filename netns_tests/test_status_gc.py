"""STATUS (ready to serve ADD, else code 50) and GC (release what the runtime no longer knows)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_tests.conftest import FakeNode, links_in

pytestmark = pytest.mark.root


def test_status_ok(node: FakeNode) -> None:
    status = node.run("STATUS", None, None, None, None)
    assert (status.code, status.stdout) == (0, ""), status
    # A store that has served pods is still fine.
    pod = node.pod()
    assert node.add(pod, node.container_id()).code == 0
    assert node.run("STATUS", None, None, None, None).code == 0


def test_status_below_1_1_0_is_code_1(node: FakeNode) -> None:
    status = node.run("STATUS", node.config("1.0.0"), None, None, None)
    assert status.code != 0 and status.json["code"] == 1, status


def assert_not_available(node: FakeNode, config: dict[str, Any], reason: str) -> None:
    status = node.run("STATUS", config, None, None, None)
    assert status.code != 0, status
    assert status.json["code"] == 50, status
    assert reason in f"{status.json['msg']} {status.json['details']}", status


def test_status_data_dir_is_a_file(node: FakeNode) -> None:
    blocker = node.tmp / "not-a-dir"
    blocker.write_text("x")
    assert_not_available(node, node.config(dataDir=str(blocker)), str(blocker))


def test_status_data_dir_cannot_be_created(node: FakeNode) -> None:
    assert_not_available(node, node.config(dataDir="/proc/minicni-pt"), "/proc/minicni-pt")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only file system (root ignores permission bits, not EROFS)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "ptnet").mkdir()
        (mount / "ptnet" / "lock").touch()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_status_data_dir_not_writable(node: FakeNode, read_only_dir: Path) -> None:
    assert_not_available(node, node.config(dataDir=str(read_only_dir)), "Read-only file system")


def test_status_invalid_config(node: FakeNode) -> None:
    assert_not_available(node, node.config(subnet=None), "subnet")


def test_status_range_full(node: FakeNode) -> None:
    config = node.config(subnet="10.99.0.0/30")  # a single pod address: .2
    assert node.run("STATUS", config, None, None, None).code == 0
    pod, cid = node.pod(), node.container_id()
    assert node.add(pod, cid, config=config).code == 0
    assert_not_available(node, config, "1 of 1")
    assert node.run("DEL", config, cid, pod).code == 0
    assert node.run("STATUS", config, None, None, None).code == 0


# -- GC ---------------------------------------------------------------------------------------
def attachments(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"containerID": cid, "ifname": ifname} for cid, ifname in pairs]


@pytest.fixture
def three_pods(node: FakeNode) -> list[tuple[str, str, dict[str, Any]]]:
    pods = []
    for _ in range(3):
        pod, cid = node.pod(), node.container_id()
        added = node.add(pod, cid)
        assert added.code == 0, added
        pods.append((pod, cid, added.json))
    return pods


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_releases_what_is_not_valid(
    node: FakeNode, three_pods: list[tuple[str, str, dict[str, Any]]], key: str
) -> None:
    (_, keep_cid, keep), (_, cid_b, b), (_, _, c) = three_pods
    valid = attachments((keep_cid, "eth0"), ("some-other-container", "eth0"))
    collected = node.run("GC", node.config(**{key: valid}), None, None, None)
    assert (collected.code, collected.stdout) == (0, ""), collected

    left = node.reservations()
    assert [r["containerID"] for r in left.values()] == [keep_cid]
    host_links = links_in(node.host)
    assert keep["interfaces"][1]["name"] in host_links
    assert b["interfaces"][1]["name"] not in host_links
    assert c["interfaces"][1]["name"] not in host_links
    owners = sorted(p.name for p in node.store_dir.iterdir() if p.name.startswith("owner-"))
    assert owners == [f"owner-{keep_cid}@eth0"]
    # The kept pod still checks out, and a runtime's late DEL of a collected pod succeeds.
    assert node.run("CHECK", node.config(prevResult=keep), keep_cid, three_pods[0][0]).code == 0
    assert node.run("DEL", None, cid_b, three_pods[1][0]).code == 0


def test_gc_keeps_everything_valid(
    node: FakeNode, three_pods: list[tuple[str, str, dict[str, Any]]]
) -> None:
    valid = attachments(*((cid, "eth0") for _, cid, _ in three_pods))
    before = node.reservations()
    collected = node.run("GC", node.config(**{"cni.dev/valid-attachments": valid}), None, None)
    assert collected.code == 0, collected
    assert node.reservations() == before


def test_gc_matches_the_interface_too(
    node: FakeNode, three_pods: list[tuple[str, str, dict[str, Any]]]
) -> None:
    valid = attachments(*((cid, "net1") for _, cid, _ in three_pods))
    collected = node.run("GC", node.config(**{"cni.dev/valid-attachments": valid}), None, None)
    assert collected.code == 0, collected
    assert node.reservations() == {}


@pytest.mark.parametrize("empty", [[], None], ids=["empty-list", "null"])
def test_gc_with_no_valid_attachments_releases_all(
    node: FakeNode, three_pods: list[tuple[str, str, dict[str, Any]]], empty: Any
) -> None:
    """libcni marshals an empty Go slice of attachments as JSON null."""
    config = node.config()
    config["cni.dev/valid-attachments"] = empty
    collected = node.run("GC", config, None, None, None)
    assert (collected.code, collected.stdout) == (0, ""), collected
    assert node.reservations() == {}
    assert not {name for name in links_in(node.host) if name.startswith("veth")}


def test_gc_below_1_1_0_is_code_1(node: FakeNode) -> None:
    config = node.config("1.0.0", **{"cni.dev/valid-attachments": []})
    collected = node.run("GC", config, None, None, None)
    assert collected.code != 0 and collected.json["code"] == 1, collected
