"""The launcher the agent installs for hosts that have its Python: it must behave exactly like the
plugin for a runtime that execs it, and replacing it must happen only when it changed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from minicni.agent.host.launcher import install_plugin


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
