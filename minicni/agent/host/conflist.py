"""The node's CNI network configuration list, written atomically and only when it changes.

The file is written to a hidden temporary name in the same directory and renamed into place, so a
runtime never reads half a file; the temporary name ends in `.tmp`, an extension runtimes ignore.
A runtime loads only the first config file of the directory, so one that sorts before ours is
reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

from minicni import defaults
from minicni.agent.model.conflist import ConflistSettings, render
from minicni.fileutil import write_atomic

CONFIG_SUFFIXES = (".conf", ".conflist", ".json")

log = logging.getLogger(__name__)


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
