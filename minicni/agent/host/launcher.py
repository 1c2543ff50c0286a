"""Install the plugin executable into the CNI bin dir, atomically.

Modes:
- "launcher": a small /bin/sh launcher that runs the plugin with the Python this process runs on.
  For hosts that have that Python (a pip-installed agent, the network-namespace lab).
- "bundle": the plugin and the Python runtime it needs are copied under `runtime_dir` and the
  launcher runs them from there, so the host needs no Python at all (kind's node images have
  none). This is what the DaemonSet uses.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
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


def host_write_error(error: OSError) -> str:
    """An OSError, and for a permission error on a host directory who owns it: the long-running
    agent has NET_ADMIN and NET_RAW only, so as root it still obeys the permission bits."""
    text = f"{type(error).__name__}: {error}"
    if error.errno not in (errno.EACCES, errno.EPERM) or not error.filename:
        return text
    directory = os.path.dirname(os.fspath(error.filename)) or "."
    try:
        status = os.stat(directory)
    except OSError:
        return text
    return (
        f"{text} ({directory} is owned by uid {status.st_uid}, mode "
        f"{stat.S_IMODE(status.st_mode):04o}: `minicni-agent --install-only`, run with "
        "CAP_DAC_OVERRIDE as the DaemonSet's init container does, writes there)"
    )
