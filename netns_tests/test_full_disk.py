"""A full file system under dataDir or under the log file, through the installed executable: ADD
fails with code 5 and leaves no reservation, owner link or temporary file (before, each failed
ADD leaked a zero-byte address file for good); a full log file system costs log lines, never the
ADD or a `--- Logging error ---` traceback."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns_tests.conftest import FakeNode, host_snapshot, links_in

pytestmark = pytest.mark.root


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of our own (unmounted at the end)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "pt-full", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(mount_point: Path) -> None:
    """Take every block (inodes are left: files can still be created, empty)."""
    fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_add_on_a_full_data_dir_fails_with_code_5_and_leaves_nothing(
    node: FakeNode, small_fs: Path
) -> None:
    config = node.config(dataDir=str(small_fs / "data"))
    store = small_fs / "data" / node.network
    pod, cid = node.pod(), node.container_id()  # the store in use before the disk fills up
    assert node.add(pod, cid, config=config).code == 0
    assert node.run("DEL", config, cid, pod).code == 0
    # The DEL left its file as the spare, which the next ADD would rewrite in place, needing
    # no new space (see the next test): without it, every ADD needs space.
    (store / "spare").unlink()
    fill(small_fs)
    for _ in range(3):
        pod, cid = node.pod(), node.container_id()
        before = host_snapshot(pod)
        added = node.add(pod, cid, config=config)
        assert added.code != 0 and added.json["code"] == 5, added
        assert "No space left" in added.json["details"]
        assert "Traceback" not in added.stderr
        left = {n for n in os.listdir(store) if n[0].isdigit() or n.startswith(("owner-", "."))}
        assert left == set()  # no address, owner link or temporary file
        assert host_snapshot(pod) == before
        assert not {n for n in links_in(node.host) if n.startswith("veth")}

    (small_fs / "filler").unlink()  # space again: the addresses were never lost
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid, config=config)
    assert added.code == 0, added
    assert added.json["ips"][0]["address"] == "10.99.0.3/24"  # round robin goes on
    assert node.run("DEL", config, cid, pod).code == 0
    assert not [n for n in os.listdir(store) if n[0].isdigit() or n.startswith(("owner-", "."))]


def test_the_spare_a_del_left_takes_one_more_pod_on_a_full_data_dir(
    node: FakeNode, small_fs: Path
) -> None:
    config = node.config(dataDir=str(small_fs / "data"))
    store = small_fs / "data" / node.network
    pod, cid = node.pod(), node.container_id()
    assert node.add(pod, cid, config=config).code == 0
    spare = os.stat(store / "10.99.0.2").st_ino
    assert node.run("DEL", config, cid, pod).code == 0
    fill(small_fs)
    added = node.add(node.pod(), node.container_id(), config=config)
    assert added.code == 0, added
    assert os.stat(store / "10.99.0.3").st_ino == spare


def test_a_full_log_file_system_does_not_fail_add_nor_print_tracebacks(
    node: FakeNode, small_fs: Path
) -> None:
    fill(small_fs)
    log_file = small_fs / "minicni.log"
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid, config=node.config(logFile=str(log_file)))
    assert added.code == 0, added
    assert "Logging error" not in added.stderr and "Traceback" not in added.stderr, added
    assert "could not write" in added.stderr and str(log_file) in added.stderr
    deleted = node.run("DEL", node.config(logFile=str(log_file)), cid, pod)
    assert deleted.code == 0 and "Traceback" not in deleted.stderr, deleted
