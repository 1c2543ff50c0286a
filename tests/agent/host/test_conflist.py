"""The conflist: its content, and that it is written atomically and only when it changes."""

import json
import os
from ipaddress import IPv4Network
from pathlib import Path

from minicni.agent.host.conflist import write_conflist
from minicni.agent.model.conflist import ConflistSettings, render
from minicni.defaults import CONFLIST_NAME

SETTINGS = ConflistSettings(IPv4Network("10.244.1.0/24"), 1450, "/var/lib/cni/networks")


def test_render_matches_the_plugin_contract() -> None:
    assert json.loads(render(SETTINGS)) == {
        "cniVersion": "1.0.0",
        "cniVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        "name": "minicni",
        "plugins": [
            {
                "type": "minicni",
                "bridge": "minicni0",
                "subnet": "10.244.1.0/24",
                "mtu": 1450,
                "hairpinMode": True,
                "isDefaultGateway": True,
                "dataDir": "/var/lib/cni/networks",
                "logFile": "/var/log/minicni.log",
            }
        ],
    }


def test_written_once_then_left_alone(tmp_path: Path) -> None:
    assert write_conflist(tmp_path, SETTINGS) is True
    path = tmp_path / CONFLIST_NAME
    inode = os.stat(path).st_ino
    assert write_conflist(tmp_path, SETTINGS) is False
    assert os.stat(path).st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFLIST_NAME]


def test_a_change_replaces_the_file_by_rename(tmp_path: Path) -> None:
    write_conflist(tmp_path, SETTINGS)
    path = tmp_path / CONFLIST_NAME
    inode = os.stat(path).st_ino
    moved = ConflistSettings(IPv4Network("10.244.7.0/24"), 1450, "/var/lib/cni/networks")
    assert write_conflist(tmp_path, moved) is True
    assert os.stat(path).st_ino != inode
    assert json.loads(path.read_text())["plugins"][0]["subnet"] == "10.244.7.0/24"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_creates_the_directory(tmp_path: Path) -> None:
    assert write_conflist(tmp_path / "net.d", SETTINGS)
    assert (tmp_path / "net.d" / CONFLIST_NAME).is_file()
