"""The node's CNI network configuration list, written atomically and only when it changes, and
whether the runtime will use it.

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

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from minicni import defaults
from minicni.agent.model.conflist import ConflistSettings, render
from minicni.fileutil import write_atomic

CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
SET_ASIDE_SUFFIX = ".minicni_bak"

log = logging.getLogger(__name__)


def write_conflist(conf_dir: Path, settings: ConflistSettings) -> bool:
    path = conf_dir / defaults.CONFLIST_NAME
    changed = write_atomic(str(path), render(settings).encode())
    if changed:
        subnets = ", ".join(str(cidr) for cidr in settings.pod_cidrs)
        log.info("wrote %s (subnet %s, mtu %d)", path, subnets, settings.mtu)
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


def move_aside(conf_dir: Path, keep: str = defaults.CONFLIST_NAME) -> list[str]:
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


def ensure_first(conf_dir: Path, exclusive: bool, name: str = defaults.CONFLIST_NAME) -> Placement:
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
        f"{shadowed_by} sorts before {defaults.CONFLIST_NAME}: the runtime loads only the first "
        "config file, so pods would not get minicni; remove it, or set --cni-exclusive "
        "(MINICNI_CNI_EXCLUSIVE=true) to move the other configs aside"
    )
