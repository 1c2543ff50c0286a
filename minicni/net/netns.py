"""Network namespaces: enter one for the current thread, create and remove named ones.

`enter` uses setns(2) directly instead of pyroute2's `IPRoute(netns=...)`, which forks a helper
process per socket (10 ms instead of 0.1 ms): `os.setns` from Python 3.12, before it the C
library's through `_ctypes` (all of ctypes costs the plugin ~5 ms a pod start). A netlink socket
opened inside `enter` stays bound to that namespace after the thread has left it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace it is (Linux >= 4.11)


def _libc_setns() -> Callable[[int, int], None]:
    """setns(2) from the C library, for Python < 3.12."""
    import _ctypes

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

    class Libc:
        # dlopen(NULL): the program itself, the C library included. The stubs want a path.
        _handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]

    function = Function(("setns", Libc()))  # type: ignore[arg-type]  # a CDLL-like handle

    def setns(fd: int, nstype: int) -> None:
        if function(fd, nstype) != 0:
            code = _ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return setns


_SETNS: Callable[[int, int], None] | None = getattr(os, "setns", None)


def _setns(fd: int) -> None:
    global _SETNS
    if _SETNS is None:
        _SETNS = _libc_setns()
    _SETNS(fd, CLONE_NEWNET)


def current_netns_path() -> str:
    """Path naming the namespace of the calling thread (Linux >= 3.17)."""
    return "/proc/thread-self/ns/net"


class NotNetworkNamespace(OSError):
    """The path exists but names no network namespace (a FIFO, a directory, a plain file...)."""


def open_netns(path: str) -> int:
    """A file descriptor for the network namespace at `path` (the caller closes it).

    Never blocks and never opens a device: a FIFO, a socket, a directory, a file or a namespace
    of another type raise NotNetworkNamespace at once, a missing path FileNotFoundError.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):  # nsfs files (and their bind mounts) look like regular files
        raise NotNetworkNamespace(errno.EINVAL, _not_netns(mode), path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode  # the path may have been swapped since the stat
        if not stat.S_ISREG(mode):
            raise NotNetworkNamespace(errno.EINVAL, _not_netns(mode), path)
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = None  # ENOTTY: a plain file, not nsfs
        if kind != CLONE_NEWNET:
            what = "a file" if kind is None else "a namespace of another type"
            raise NotNetworkNamespace(errno.EINVAL, f"is {what}, not a network namespace", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_netns(mode: int) -> str:
    kinds = {
        stat.S_IFIFO: "a FIFO",
        stat.S_IFDIR: "a directory",
        stat.S_IFSOCK: "a socket",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
    }
    return f"is {kinds.get(stat.S_IFMT(mode), 'not a file')}, not a network namespace"


@contextmanager
def enter(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace at `path`, then come back.

    Raises FileNotFoundError if `path` does not exist and NotNetworkNamespace if it is not a
    network namespace, at once (see `open_netns`).
    """
    target = open_netns(path)
    try:
        home = os.open(current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


def same_netns(path_a: str, path_b: str) -> bool:
    """True if both paths name the same network namespace (compared by device and inode)."""
    a, b = os.stat(path_a), os.stat(path_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def path_of(name: str) -> str:
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)


def create(name: str) -> str:
    """Create a named namespace under /run/netns (as `ip netns add` does); returns its path.

    Raises FileExistsError if the name is taken. Runs unshare in pyroute2's child process so the
    caller's own namespace is untouched.
    """
    from pyroute2 import netns as pyroute2_netns

    path = path_of(name)
    if os.path.exists(path):
        raise FileExistsError(errno.EEXIST, "network namespace exists", path)
    try:
        pyroute2_netns.create(name)
    except BaseException:
        # The helper process may time out (a loaded host) after the bind mount was made.
        remove(name)
        raise
    return path


def remove(name: str) -> bool:
    """Remove a named namespace; False if it was already gone. Links inside it go with it."""
    path = path_of(name)
    if not os.path.exists(path):
        return False
    import ctypes  # the agent and the lab only: the plugin never removes a namespace

    ctypes.CDLL(None, use_errno=True).umount2(path.encode(), 2)  # MNT_DETACH
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
