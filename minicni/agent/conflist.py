"""The node's CNI network configuration list, written atomically and only when it changes.

The file is written to a hidden temporary name in the same directory and renamed into place, so a
runtime never reads half a file; the temporary name ends in `.tmp`, an extension runtimes ignore.

A runtime uses only the first config file of the directory: containerd's go-cni loads
`max_conf_num = 1` file of libcni's `ConfFiles` (every non-directory ending in .conf, .conflist or
.json, dot-files included, sorted by name), CRI-O's default network is the first by name too. So
`10-calico.conflist`, `10-flannel.conflist` or `10-containerd-net.conflist` win over ours:
`config_in_effect` names the file a runtime will use. `move_aside` is Cilium's `cni.exclusive`:
every other config file is renamed to `<name>.minicni_bak` (an extension no runtime loads), so it
can be put back by hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from minicni.cni.version import SUPPORTED_VERSIONS
from minicni.fileutil import write_atomic

CONFLIST_NAME = "10-minicni.conflist"
NETWORK_NAME = "minicni"
# The newest version every runtime generation in the field accepts: libcni 1.1 (containerd 1.6 and
# 1.7, podman 4, CRI-O of that era) ignores `cniVersions` and refuses a 1.1.0 result, while
# libcni >= 1.2 (containerd 2.x) picks the highest entry of `cniVersions` it knows -- 1.1.0, which
# brings STATUS and GC. The plugin answers in whichever version it is asked.
CNI_VERSION = "1.0.0"
CNI_VERSIONS = SUPPORTED_VERSIONS
BRIDGE_NAME = "minicni0"
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
SET_ASIDE_SUFFIX = ".minicni_bak"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConflistSettings:
    pod_cidr: IPv4Network
    mtu: int
    data_dir: str
    log_file: str = "/var/log/minicni.log"
    bridge: str = BRIDGE_NAME
    portmap_versions: tuple[str, ...] | None = None
    """The versions of a `portmap` to chain (see `portmap.py`); None: not chained."""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def versions(settings: ConflistSettings) -> tuple[str, list[str]]:
    """`cniVersion` and `cniVersions`: every plugin of the list must speak the one a runtime
    picks, so with portmap only the versions both speak, and `cniVersion` the highest of them
    up to 1.0.0 (what libcni 1.1 runtimes accept)."""
    common = [v for v in CNI_VERSIONS if v in (settings.portmap_versions or CNI_VERSIONS)]
    capped = [v for v in common if _version_key(v) <= _version_key(CNI_VERSION)]
    return max(capped, key=_version_key), common


def chains_portmap(settings: ConflistSettings) -> bool:
    """portmap is chained when one is there and it speaks a version we do (up to 1.0.0)."""
    if not settings.portmap_versions:
        return False
    return any(
        v in settings.portmap_versions and _version_key(v) <= _version_key(CNI_VERSION)
        for v in CNI_VERSIONS
    )


def render(settings: ConflistSettings) -> str:
    plugin: dict[str, Any] = {
        "type": "minicni",
        "bridge": settings.bridge,
        "subnet": str(settings.pod_cidr),
        "mtu": settings.mtu,
        "hairpinMode": True,
        "isDefaultGateway": True,
        "dataDir": settings.data_dir,
        "logFile": settings.log_file,
    }
    plugins = [plugin]
    if not chains_portmap(settings):
        settings = dataclasses.replace(settings, portmap_versions=None)
    else:
        # hostPort, as kindnet and flannel chain it; snat (portmap's default, spelt out) makes a
        # pod that reaches its own hostPort through the node's address see a reply (hairpin)
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    version, offered = versions(settings)
    document = {
        "cniVersion": version,
        "cniVersions": offered,
        "name": NETWORK_NAME,
        "plugins": plugins,
    }
    return json.dumps(document, indent=2) + "\n"


def write_conflist(conf_dir: Path, settings: ConflistSettings) -> bool:
    path = conf_dir / CONFLIST_NAME
    changed = write_atomic(str(path), render(settings).encode())
    if changed:
        log.info("wrote %s (subnet %s, mtu %d)", path, settings.pod_cidr, settings.mtu)
    return changed


def config_files(conf_dir: Path) -> list[str]:
    """The files a runtime loads, in its order (libcni's ConfFiles, byte-wise name order)."""
    found = []
    with os.scandir(conf_dir) as entries:
        for entry in entries:
            if os.path.splitext(entry.name)[1] in CONFIG_SUFFIXES and not entry.is_dir():
                found.append(entry.name)
    return sorted(found, key=os.fsencode)


def config_in_effect(conf_dir: Path) -> str | None:
    """The file a runtime that loads only the first config (containerd, CRI-O) will use."""
    files = config_files(conf_dir)
    return files[0] if files else None


def move_aside(conf_dir: Path, keep: str = CONFLIST_NAME) -> list[str]:
    """Rename every config file but `keep` to `<name>.minicni_bak`; returns the names moved."""
    moved = []
    for name in config_files(conf_dir):
        if name == keep:
            continue
        os.rename(conf_dir / name, conf_dir / (name + SET_ASIDE_SUFFIX))
        log.warning("moved %s aside to %s%s", conf_dir / name, name, SET_ASIDE_SUFFIX)
        moved.append(name)
    return moved


@dataclass(frozen=True)
class Placement:
    shadowed_by: str | None
    """The path of the config file the runtime loads instead of ours; None when ours is first."""
    moved: tuple[str, ...] = ()


def ensure_first(conf_dir: Path, exclusive: bool, name: str = CONFLIST_NAME) -> Placement:
    """Check that `name` is the config a runtime loads; with `exclusive`, move the others aside."""
    first = config_in_effect(conf_dir)
    moved: list[str] = []
    if first != name and exclusive:
        moved = move_aside(conf_dir, keep=name)
        first = config_in_effect(conf_dir)
    shadowed = str(conf_dir / first) if first is not None and first != name else None
    return Placement(shadowed, tuple(moved))


def shadowing_message(shadowed_by: str) -> str:
    return (
        f"{shadowed_by} sorts before {CONFLIST_NAME}: the runtime loads only the first config "
        "file, so pods would not get minicni; remove it, or set --cni-exclusive "
        "(MINICNI_CNI_EXCLUSIVE=true) to move the other configs aside"
    )
