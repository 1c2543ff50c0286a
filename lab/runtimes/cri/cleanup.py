"""Removing what a containerd node leaves on the host: processes, mounts, cgroups, cache files.

Each function works from facts that survive the process that started the node (paths, socket
address, cgroup name, sandbox ids), so a lab left by a killed run can still be removed; each
touches only what carries one of those names, never another user's runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CGROUP_BASE = "/sys/fs/cgroup"
CNI_RESULTS_DIR = "/var/lib/cni/results"  # libcni's cache (containerd 1.6 has no knob for it)
SHIM_SOCKET_DIR = "/run/containerd/s"  # fixed in containerd 1.6, whatever the config says
# Directories a runtime makes on the host by itself; removed afterwards if we made them and they
# are empty (see `absent`, `remove_if_empty`).
RUNTIME_HOST_DIRS = ("/var/lib/cni", CNI_RESULTS_DIR, "/run/containerd", SHIM_SOCKET_DIR)


# ------------------------------------------------------------ processes


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return [part.decode(errors="replace") for part in stream.read().split(b"\0") if part]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def shims_of(address: str) -> list[int]:
    """Pids of containerd shims serving the containerd at `address` (their `-address` argument)."""
    found = []
    for pid in _pids():
        argv = _cmdline(pid)
        if argv and os.path.basename(argv[0]).startswith("containerd-shim") and "-address" in argv:
            index = argv.index("-address")
            if index + 1 < len(argv) and argv[index + 1] == address:
                found.append(pid)
    return found


def kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of `pids` runs (zombies count as gone); returns those still running."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if _running(pid)]
        if remaining:
            time.sleep(0.02)
    return remaining


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------ cgroups


def cgroup_roots() -> list[Path]:
    """Every hierarchy's mount point: /sys/fs/cgroup itself (v2), or one per v1 controller plus
    the named and unified ones of a hybrid host."""
    base = Path(CGROUP_BASE)
    if (base / "cgroup.controllers").exists():
        return [base]
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())
    except OSError:
        return []


def cgroup_dirs(parent: str) -> list[Path]:
    """The cgroup `parent` (cgroupfs path) and everything below it, in every hierarchy, deepest
    first."""
    found = []
    for root in cgroup_roots():
        top = root / parent.strip("/")
        if top.is_dir():
            for directory, _dirs, _files in os.walk(top, topdown=False):
                found.append(Path(directory))
    return found


def cgroup_pids(parent: str) -> set[int]:
    pids: set[int] = set()
    for directory in cgroup_dirs(parent):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
    return pids


def remove_cgroups(parent: str) -> list[str]:
    """Kill what still runs in the tree, then rmdir it (runc leaves empty cgroups behind with the
    cgroupfs driver). Returns the cgroups that could not be removed."""
    kill(cgroup_pids(parent))
    wait_gone(cgroup_pids(parent))
    left = []
    for directory in cgroup_dirs(parent):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as err:
            left.append(f"{directory}: {err.strerror}")
    return left


# ------------------------------------------------------------ mounts

# mountinfo writes a space, tab, newline or backslash in a path as \ooo (octal)
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below `directory`, deepest first (the order to unmount them)."""
    top = os.path.realpath(directory).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == top or point.startswith(top + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(directory: str) -> list[str]:
    """Unmount (lazily, so a busy one goes too) every mount below `directory`: pod netns files,
    rootfs overlays, /dev/shm of sandboxes. Returns those still mounted."""
    for point in mounts_under(directory):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    return mounts_under(directory)


def remove_tree(directory: str, attempts: int = 5) -> list[str]:
    """Unmount what is mounted below `directory`, then delete it; never follows a mount into the
    host's files (rmtree is not run while anything is still mounted). Goes again, a little later,
    when something still worked in it while it was walked (podman's storage mounts itself again
    when a late `podman container cleanup` starts); says what stood in the way."""
    errors: list[str] = []

    def record(_function: object, path: str, info: tuple[type, BaseException, object]) -> None:
        errors.append(f"{path}: {getattr(info[1], 'strerror', None) or info[1]}")

    for attempt in range(attempts):
        left = unmount_under(directory)
        if left:
            return [f"still mounted, not removed: {', '.join(left)}"]
        errors.clear()
        shutil.rmtree(directory, onerror=record)
        if not os.path.lexists(directory):
            return []
        time.sleep(0.1 * (attempt + 1))
    return [f"could not remove {directory} ({'; '.join(errors[:3]) or 'it came back'})"]


# ------------------------------------------------------------ host files


def shim_socket(address: str, sandbox_id: str, namespace: str = "k8s.io") -> str:
    """Where containerd 1.6 puts the shim socket of a task: sha256 of `<address>/<ns>/<id>`
    under /run/containerd/s (containerd's runtime/v2/shim SocketAddress)."""
    digest = hashlib.sha256(os.path.join(address, namespace, sandbox_id).encode()).hexdigest()
    return os.path.join(SHIM_SOCKET_DIR, digest)


def remove_host_files(address: str, sandbox_ids: Iterable[str]) -> None:
    """The libcni cache entries (`<network>-<id>-<ifname>`) and shim sockets of our sandboxes:
    what a killed runtime leaves in the host's shared directories."""
    ids = set(sandbox_ids)
    if not ids:
        return
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(CNI_RESULTS_DIR):
            if any(f"-{sandbox_id}-" in name for sandbox_id in ids):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(CNI_RESULTS_DIR, name))
    for sandbox_id in ids:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shim_socket(address, sandbox_id))


def absent(directories: Iterable[str] = RUNTIME_HOST_DIRS) -> list[str]:
    """Those of `directories` that do not exist yet: the ones the caller will have created."""
    return [d for d in directories if not os.path.lexists(d)]


def remove_if_empty(directories: Iterable[str]) -> None:
    """rmdir each (deepest first); one that is not empty, another user's now, stays."""
    for directory in sorted(directories, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
