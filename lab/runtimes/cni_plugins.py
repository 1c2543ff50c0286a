"""The CNI plugins a node ships besides minicni: `loopback`, as kind and kubeadm nodes do.

containerd runs `loopback` from its CNI bin dir for every sandbox (to bring `lo` up in it); kind's
node image and kubeadm's `kubernetes-cni` package put it there, and so does the lab, from Debian's
containernetworking-plugins. The agent installs only minicni itself.
"""

from __future__ import annotations

import os
import shutil

REFERENCE_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
LOOPBACK = "loopback"


def install_loopback(bin_dir: str, source_dir: str = REFERENCE_BIN_DIR) -> str:
    """Copy `loopback` into `bin_dir` (to a temporary name, then renamed: a runtime never runs a
    half-written file). Returns its path."""
    source = os.path.join(source_dir, LOOPBACK)
    if not os.access(source, os.X_OK):
        raise FileNotFoundError(f"{source} is missing: apt-get install containernetworking-plugins")
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, LOOPBACK)
    temporary = os.path.join(bin_dir, f".{LOOPBACK}.tmp")
    shutil.copy2(source, temporary)
    os.replace(temporary, target)
    return target
