"""Atomic file replacement: readers (kubelet, containerd, the runtime exec'ing the plugin) see the
old file or the new one, never a half-written one, and an exec never meets "text file busy"."""

from __future__ import annotations

import contextlib
import os


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
    fd, tmp = _create_temporary(directory, os.path.basename(path))
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


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new file `.<name>.<random>.tmp`, opened O_EXCL with mode 0600, as `tempfile.mkstemp`
    makes one; tempfile itself (shutil, random...) would cost every plugin call ~5 ms."""
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {directory}")
