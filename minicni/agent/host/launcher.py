"""Install the plugin executable into the CNI bin dir, atomically.

Modes:
- "launcher": a small /bin/sh launcher that runs the plugin with the Python this process runs on.
  For hosts that have that Python (a pip-installed agent, the network-namespace lab).
- "bundle": the plugin and the Python runtime it needs are copied under `runtime_dir` and the
  launcher runs them from there, so the host needs no Python at all (kind's node images have
  none). This is what the DaemonSet uses.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from minicni import defaults
from minicni.fileutil import write_atomic

MODES = ("bundle", "launcher", "none")


def launcher_script(python: str) -> bytes:
    return (
        "#!/bin/sh\n"
        "# minicni CNI plugin launcher, written by minicni-agent.\n"
        f'exec {shlex.quote(python)} -I -m minicni "$@"\n'
    ).encode()


def install_plugin(
    cni_bin_dir: Path,
    *,
    mode: str = defaults.PLUGIN_INSTALL,
    runtime_dir: Path = Path(defaults.PLUGIN_DIR),
) -> bool:
    """Put `<cni_bin_dir>/minicni` in place; True if anything on disk changed."""
    if mode == "none":
        return False
    if mode == "launcher":
        return write_atomic(
            str(cni_bin_dir / defaults.PLUGIN_NAME), launcher_script(sys.executable), 0o755
        )
    if mode == "bundle":
        from minicni.agent.host.bundle import (
            install_bundle,  # copies files; only the agent needs it
        )

        return install_bundle(cni_bin_dir, runtime_dir)
    raise ValueError(f"unknown plugin install mode {mode!r}; expected one of {', '.join(MODES)}")
