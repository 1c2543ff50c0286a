"""The launcher the agent installs for hosts that have its Python: it must behave exactly like the
plugin for a runtime that execs it, and replacing it must be atomic and only when it changed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from minicni.agent.host.launcher import install_plugin
from minicni.fileutil import write_atomic


def test_installed_launcher_answers_version_like_the_plugin(tmp_path: Path) -> None:
    assert install_plugin(tmp_path, mode="launcher") is True
    exe = tmp_path / "minicni"
    assert os.access(exe, os.X_OK)
    proc = subprocess.run(
        [str(exe)],
        input=b'{"cniVersion": "1.1.0"}',
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1.1.0" in json.loads(proc.stdout)["supportedVersions"]


def test_reinstalling_an_unchanged_launcher_changes_nothing(tmp_path: Path) -> None:
    install_plugin(tmp_path, mode="launcher")
    before = os.stat(tmp_path / "minicni")
    assert install_plugin(tmp_path, mode="launcher") is False
    after = os.stat(tmp_path / "minicni")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_write_atomic_replaces_the_inode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "10-minicni.conflist"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    # A reader holding the old file keeps reading the old content: the new file is a new inode.
    with open(target, "rb") as reader:
        assert write_atomic(str(target), b"new") is True
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10-minicni.conflist"]
