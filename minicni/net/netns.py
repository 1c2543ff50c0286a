"""Network namespaces: enter one for the current thread, create and remove named ones.

`enter` uses setns(2) directly instead of pyroute2's `IPRoute(netns=...)`, which forks a helper
process per socket (10 ms instead of 0.1 ms): `os.setns` from Python 3.12, before it the C
library's through `_ctypes` (all of ctypes costs the plugin ~5 ms a pod start). A netlink socket
opened inside `enter` stays bound to that namespace after the thread has left it.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


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


@contextmanager
def enter(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace at `path`, then come back.

    Raises FileNotFoundError if `path` does not exist and OSError(EINVAL) if it is not a network
    namespace.
    """
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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
