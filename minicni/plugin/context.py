"""Where a command runs: in the plugin's own process, or in the node agent's CNI server.

The commands are the same in both; what differs is how they reach the pod's network namespace,
whether they may write sysctls, and whether a DEL may finish after its answer:

- In-process (`in_process`): the plugin runs as the runtime's full root on the host. It opens
  CNI_NETNS and enters it (setns) to open a netlink socket there.
- Served (`served`): the agent may neither open the path (`/run/netns` is not mounted in its
  container) nor enter a namespace (it has NET_ADMIN and NET_RAW, no SYS_ADMIN). The shim, which
  runs as the runtime's full root, opened a NETLINK_ROUTE socket inside the namespace and passed
  it over the unix socket: a netlink socket stays bound to the namespace it was made in, and the
  namespace itself is derived from it (SIOCGSKNS) where a request needs it (IFLA_NET_NS_FD).
  A DEL, which configures nothing inside, gets the namespace's file instead (`PassedNamespace`):
  the shim enters nothing for it.
  The agent's /proc/sys is read-only, so it never writes a sysctl; and a DEL is answered once it
  is recorded, the links and the address going after the answer (see `commands.delete`).
"""

from __future__ import annotations

import errno
import os

from minicni.cni import errors
from minicni.cni.errors import CniError
from minicni.net import netns
from minicni.net.rtnl import Rtnl, adopt_route_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Deferred = list[Callable[[], None]]

    from minicni.plugin.commands import HostView
    from minicni.plugin.config import NetConf

SIOCGSKNS = 0x894C
"""ioctl on a socket: a file descriptor of the network namespace it lives in (Linux >= 4.9)."""


class PodNetns:
    """The pod's network namespace (CNI_NETNS) as one command reaches it."""

    socketless = False
    """True when there is the namespace's file but no socket inside it (`rtnl` cannot be)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def require(self) -> None:
        """A CNI error unless the namespace exists and is not the plugin's own."""
        raise NotImplementedError

    def open_fd(self) -> int:
        """A file descriptor of the namespace (the caller closes it); OSError if it is gone."""
        raise NotImplementedError

    def rtnl(self) -> Rtnl:
        """A netlink client bound to the namespace; OSError if it is gone."""
        raise NotImplementedError


class NetnsPath(PodNetns):
    """In-process: the path is opened and entered."""

    def require(self) -> None:
        """Checked without ever blocking (a FIFO) or opening anything but a namespace."""
        path = self.path
        try:
            fd = netns.open_netns(path)
        except (FileNotFoundError, NotADirectoryError):
            raise CniError(
                errors.UNKNOWN_CONTAINER, "network namespace does not exist", repr(path)
            ) from None
        except netns.NotNetworkNamespace as exc:
            raise CniError(
                errors.INVALID_ENVIRONMENT, f"CNI_NETNS {exc.strerror}", repr(path)
            ) from None
        except OSError as exc:
            raise CniError(
                errors.INVALID_ENVIRONMENT,
                f"CNI_NETNS cannot be opened: {exc.strerror}",
                repr(path),
            ) from None
        try:
            _refuse_own(os.fstat(fd), path)
        finally:
            os.close(fd)

    def open_fd(self) -> int:
        return netns.open_netns(self.path)

    def rtnl(self) -> Rtnl:
        with netns.enter(self.path):
            return Rtnl(strict=True)


class PassedSocket(PodNetns):
    """Served: a NETLINK_ROUTE socket the shim made inside the namespace, or, when the shim could
    not open CNI_NETNS, the errno it got (the same errors as in-process follow from it)."""

    def __init__(self, path: str, sock_fd: int | None, open_errno: int = 0) -> None:
        super().__init__(path)
        self._fd = sock_fd
        self._errno = open_errno or errno.ENOENT
        self._bound = False

    def _missing(self) -> OSError:
        return OSError(self._errno, os.strerror(self._errno), self.path)

    def require(self) -> None:
        """The same errors as in-process, from what the shim met opening CNI_NETNS."""
        path = self.path
        if self._fd is None:
            if self._errno in (errno.ENOENT, errno.ENOTDIR):
                raise CniError(
                    errors.UNKNOWN_CONTAINER, "network namespace does not exist", repr(path)
                )
            if self._errno == errno.EINVAL:  # opened, but setns refused it
                raise CniError(
                    errors.INVALID_ENVIRONMENT,
                    "CNI_NETNS is not a network namespace",
                    repr(path),
                )
            raise CniError(
                errors.INVALID_ENVIRONMENT,
                f"CNI_NETNS cannot be opened: {os.strerror(self._errno)}",
                repr(path),
            )
        fd = self.open_fd()
        try:
            _refuse_own(os.fstat(fd), path)
        finally:
            os.close(fd)

    def open_fd(self) -> int:
        if self._fd is None:
            raise self._missing()
        import fcntl

        return fcntl.ioctl(self._fd, SIOCGSKNS)

    def rtnl(self) -> Rtnl:
        if self._fd is None:
            raise self._missing()
        import socket

        sock = socket.socket(fileno=os.dup(self._fd))
        if not self._bound:
            adopt_route_socket(sock, strict=True)
            self._bound = True
        return Rtnl(sock)


class PassedNamespace(PodNetns):
    """Served DEL: the namespace's file itself, which the shim opened (it enters nothing: a DEL
    deletes the host end, and the pod end goes with it). What reaches inside, in the rare case
    the host end is gone, goes through the namespace's id (`links.delete_marked_link_in`)."""

    socketless = True

    def __init__(self, path: str, netns_fd: int) -> None:
        super().__init__(path)
        self._fd = netns_fd

    def require(self) -> None:
        _refuse_own(os.fstat(self._fd), self.path)

    def open_fd(self) -> int:
        return os.dup(self._fd)

    def rtnl(self) -> Rtnl:
        raise OSError(errno.EOPNOTSUPP, "no socket inside the namespace (a DEL passes its file)")


def _refuse_own(theirs: os.stat_result, path: str) -> None:
    ours = os.stat(netns.current_netns_path())
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        raise CniError(8, "CNI_NETNS is the plugin's own network namespace", repr(path))


class CommandContext:
    """What the commands need from the process they run in."""

    def __init__(
        self,
        pod: Callable[[str], PodNetns],
        *,
        served: bool,
        netconf: NetConf | None = None,
        ahead: HostView | None = None,
    ) -> None:
        self.pod = pod
        self.served = served
        self.netconf = netconf
        """The request's config, parsed already (served: the agent parsed it to admit the
        request); None: the command parses it."""
        self.ahead = ahead
        """Served ADD: the node as read while the shim made the pod's socket."""
        self.deferred: Deferred = []
        """Work a served request leaves for after its answer, run by the server in order: a
        DEL's links and address, an ADD's spare for the next reservation."""

    @property
    def writes_sysctls(self) -> bool:
        return not self.served


def in_process() -> CommandContext:
    return CommandContext(NetnsPath, served=False)


def served(
    sock_fd: int | None,
    open_errno: int,
    netns_fd: int | None = None,
    netconf: NetConf | None = None,
    ahead: HostView | None = None,
) -> CommandContext:
    """`netns_fd`: a DEL's namespace file, passed instead of a socket inside it; `netconf`: the
    request's config, as the agent parsed it; `ahead`: what the agent read of the node while
    the shim made the pod's socket."""

    def pod(path: str) -> PodNetns:
        if netns_fd is not None:
            return PassedNamespace(path, netns_fd)
        return PassedSocket(path, sock_fd, open_errno)

    return CommandContext(pod, served=True, netconf=netconf, ahead=ahead)
