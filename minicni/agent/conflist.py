"""The node's CNI network configuration list, written atomically and only when it changes.

The file is written to a hidden temporary name in the same directory and renamed into place, so a
runtime never reads half a file; the temporary name ends in `.tmp`, an extension runtimes ignore.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

CONFLIST_NAME = "10-minicni.conflist"
NETWORK_NAME = "minicni"
CNI_VERSION = "1.1.0"
BRIDGE_NAME = "minicni0"
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConflistSettings:
    pod_cidr: IPv4Network
    mtu: int
    data_dir: str
    bridge: str = BRIDGE_NAME


def render(settings: ConflistSettings) -> str:
    plugin: dict[str, Any] = {
        "type": "minicni",
        "bridge": settings.bridge,
        "subnet": str(settings.pod_cidr),
        "mtu": settings.mtu,
        "hairpinMode": True,
        "isDefaultGateway": True,
        "dataDir": settings.data_dir,
    }
    document = {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": [plugin]}
    return json.dumps(document, indent=2) + "\n"


def write_atomically(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write `content` to `path` unless it already holds it; True if the file changed."""
    try:
        if path.read_text() == content:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return True


def write_conflist(conf_dir: Path, settings: ConflistSettings) -> bool:
    path = conf_dir / CONFLIST_NAME
    changed = write_atomically(path, render(settings))
    if changed:
        log.info("wrote %s (subnet %s, mtu %d)", path, settings.pod_cidr, settings.mtu)
        shadowing = configs_before(conf_dir, CONFLIST_NAME)
        if shadowing:
            log.warning(
                "%s sort before %s: runtimes that load only the first file will not use minicni",
                ", ".join(shadowing),
                CONFLIST_NAME,
            )
    return changed


def configs_before(conf_dir: Path, name: str) -> list[str]:
    return sorted(
        entry.name
        for entry in conf_dir.iterdir()
        if entry.suffix in CONFIG_SUFFIXES and entry.name < name and not entry.name.startswith(".")
    )
