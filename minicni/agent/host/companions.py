"""Plugins the runtime runs beside ours, checked in the node's CNI bin dir.

containerd (1.6, 1.7, and 2.x unless `use_internal_loopback` is set) executes `loopback` from its
CNI bin dir for every sandbox, before our plugin; without it every sandbox fails with "failed to
find plugin loopback". kind and kubeadm nodes ship it with the reference plugins. CRI-O and
containerd with `use_internal_loopback` bring their pods' `lo` up themselves, and the agent cannot
tell which runtime it serves: so a missing `loopback` is a warning (log, metric, /readyz), not a
reason to hold the node back.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK = "loopback"


def missing_loopback(bin_dir: Path) -> str | None:
    """A warning when `bin_dir` has no executable `loopback`, else None."""
    if os.access(bin_dir / LOOPBACK, os.X_OK):
        return None
    return (
        f"no executable {LOOPBACK!r} in {bin_dir}: containerd runs it for every pod sandbox, "
        "so sandboxes fail there unless the runtime brings lo up itself (CRI-O, containerd's "
        "use_internal_loopback); install the reference CNI plugins (containernetworking-plugins)"
    )
