"""Atomic file replacement: readers (kubelet, containerd, the runtime exec'ing the plugin) see the
old file or the new one, never a half-written one, and an exec never meets "text file busy"."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> bool:
    """Write `data` to `path` through a temporary file in the same directory and a rename.

    Does nothing and returns False when the file already holds exactly `data` with `mode`.
    `durable=False` skips the fsync, for bookkeeping that may be lost in a crash.
    """
    try:
        with open(path, "rb") as f:
            unchanged = f.read() == data and (os.stat(path).st_mode & 0o7777) == mode
        if unchanged:
            return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True
