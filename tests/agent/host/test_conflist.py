"""The conflist: its content, and that it is written atomically and only when it changes."""

import json
import os
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

from minicni.agent.host.conflist import (
    Placement,
    config_files,
    config_in_effect,
    ensure_first,
    shadowing_message,
    write_conflist,
)
from minicni.agent.model.conflist import ConflistSettings, render
from minicni.defaults import CONFLIST_NAME

SETTINGS = ConflistSettings((IPv4Network("10.244.1.0/24"),), 1450, "/var/lib/cni/networks")


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
    moved = ConflistSettings((IPv4Network("10.244.7.0/24"),), 1450, "/var/lib/cni/networks")
    assert write_conflist(tmp_path, moved) is True
    assert os.stat(path).st_ino != inode
    assert json.loads(path.read_text())["plugins"][0]["subnet"] == "10.244.7.0/24"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_creates_the_directory(tmp_path: Path) -> None:
    assert write_conflist(tmp_path / "net.d", SETTINGS)
    assert (tmp_path / "net.d" / CONFLIST_NAME).is_file()


def test_the_runtime_loads_the_first_config_by_byte_order(tmp_path: Path) -> None:
    for name in ("10-minicni.conflist", "10-calico.conflist", "99-x.json", "00-notes.txt",
                 ".10-minicni.conflist.abc.tmp", ".05-hidden.conf", "Z-upper.conf"):  # fmt: skip
        (tmp_path / name).write_text("{}")
    (tmp_path / "01-dir.conf").mkdir()
    # libcni: non-directories ending .conf/.conflist/.json, dot-files too, byte order
    assert config_files(tmp_path) == [
        ".05-hidden.conf",
        "10-calico.conflist",
        "10-minicni.conflist",
        "99-x.json",
        "Z-upper.conf",
    ]
    assert config_in_effect(tmp_path) == ".05-hidden.conf"


def test_a_config_sorting_first_shadows_ours(tmp_path: Path) -> None:
    write_conflist(tmp_path, SETTINGS)
    assert ensure_first(tmp_path, exclusive=False) == Placement(None)
    (tmp_path / "10-flannel.conflist").write_text("{}")
    placement = ensure_first(tmp_path, exclusive=False)
    assert placement == Placement(str(tmp_path / "10-flannel.conflist"))
    assert "10-flannel.conflist sorts before 10-minicni.conflist" in shadowing_message(
        str(placement.shadowed_by)
    )
    assert (tmp_path / "10-flannel.conflist").exists()  # not ours to touch unless exclusive


def test_exclusive_moves_every_other_config_aside(tmp_path: Path) -> None:
    write_conflist(tmp_path, SETTINGS)
    for name in ("05-cilium.conflist", "10-containerd-net.conflist", "99-loopback.conf"):
        (tmp_path / name).write_text(name)
    placement = ensure_first(tmp_path, exclusive=True)
    assert placement.shadowed_by is None
    assert placement.moved == (
        "05-cilium.conflist",
        "10-containerd-net.conflist",
        "99-loopback.conf",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "05-cilium.conflist.minicni_bak",
        "10-containerd-net.conflist.minicni_bak",
        CONFLIST_NAME,
        "99-loopback.conf.minicni_bak",
    ]
    assert (tmp_path / "05-cilium.conflist.minicni_bak").read_text() == "05-cilium.conflist"


PORTMAP_1_1 = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")


def test_portmap_is_chained_with_the_versions_both_speak() -> None:
    document = json.loads(render(replace(SETTINGS, portmap_versions=PORTMAP_1_1)))
    assert document["plugins"][1] == {
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "snat": True,
    }
    # a libcni >= 1.2 runtime would pick 1.1.0, which this portmap refuses
    assert document["cniVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    assert document["cniVersion"] == "1.0.0"


def test_an_old_portmap_lowers_the_version_a_newer_one_keeps_it() -> None:
    old = json.loads(render(replace(SETTINGS, portmap_versions=("0.3.0", "0.3.1", "0.4.0"))))
    assert (old["cniVersion"], old["cniVersions"]) == ("0.4.0", ["0.3.0", "0.3.1", "0.4.0"])
    new = json.loads(render(replace(SETTINGS, portmap_versions=(*PORTMAP_1_1, "1.1.0"))))
    assert new["cniVersions"][-1] == "1.1.0" and new["cniVersion"] == "1.0.0"


def test_a_portmap_without_a_common_version_is_not_chained() -> None:
    document = json.loads(render(replace(SETTINGS, portmap_versions=("0.1.0", "0.2.0"))))
    assert [plugin["type"] for plugin in document["plugins"]] == ["minicni"]
    assert document["cniVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def test_a_dual_stack_node_lists_both_subnets_and_a_single_stack_one_a_string() -> None:
    from ipaddress import IPv6Network

    dual = replace(
        SETTINGS, pod_cidrs=(IPv4Network("10.244.1.0/24"), IPv6Network("fd00:10:244:1::/64"))
    )
    assert json.loads(render(dual))["plugins"][0]["subnet"] == [
        "10.244.1.0/24",
        "fd00:10:244:1::/64",
    ]
    six = replace(SETTINGS, pod_cidrs=(IPv6Network("fd00:10:244:1::/64"),))
    assert json.loads(render(six))["plugins"][0]["subnet"] == "fd00:10:244:1::/64"
