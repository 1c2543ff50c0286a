"""The node's CNI network configuration list, written atomically and only when it changes.

The file is written to a hidden temporary name in the same directory and renamed into place, so a
runtime never reads half a file; the temporary name ends in `.tmp`, an extension runtimes ignore.
A runtime loads only the first config file of the directory, so one that sorts before ours is
reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from minicni import defaults
from minicni.cni.version import SUPPORTED_VERSIONS
from minicni.fileutil import write_atomic

# The newest version every runtime generation in the field accepts: libcni 1.1 (containerd 1.6 and
# 1.7, podman 4, CRI-O of that era) ignores `cniVersions` and refuses a 1.1.0 result, while
# libcni >= 1.2 (containerd 2.x) picks the highest entry of `cniVersions` it knows -- 1.1.0, which
# brings STATUS and GC. The plugin answers in whichever version it is asked.
CNI_VERSION = "1.0.0"
CNI_VERSIONS = SUPPORTED_VERSIONS
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConflistSettings:
    pod_cidr: IPv4Network
    mtu: int
    data_dir: str
    log_file: str = defaults.LOG_FILE
    bridge: str = defaults.BRIDGE


def render(settings: ConflistSettings) -> str:
    plugin: dict[str, Any] = {
        "type": defaults.PLUGIN_NAME,
        "bridge": settings.bridge,
        "subnet": str(settings.pod_cidr),
        "mtu": settings.mtu,
        "hairpinMode": True,
        "isDefaultGateway": True,
        "dataDir": settings.data_dir,
        "logFile": settings.log_file,
    }
    document = {
        "cniVersion": CNI_VERSION,
        "cniVersions": list(CNI_VERSIONS),
        "name": defaults.NETWORK_NAME,
        "plugins": [plugin],
    }
    return json.dumps(document, indent=2) + "\n"


def write_conflist(conf_dir: Path, settings: ConflistSettings) -> bool:
    path = conf_dir / defaults.CONFLIST_NAME
    changed = write_atomic(str(path), render(settings).encode())
    if changed:
        log.info("wrote %s (subnet %s, mtu %d)", path, settings.pod_cidr, settings.mtu)
        shadowing = configs_before(conf_dir, defaults.CONFLIST_NAME)
        if shadowing:
            log.warning(
                "%s sort before %s: runtimes that load only the first file will not use minicni",
                ", ".join(shadowing),
                defaults.CONFLIST_NAME,
            )
    return changed


def configs_before(conf_dir: Path, name: str) -> list[str]:
    return sorted(
        entry.name
        for entry in conf_dir.iterdir()
        if entry.suffix in CONFIG_SUFFIXES and entry.name < name and not entry.name.startswith(".")
    )
