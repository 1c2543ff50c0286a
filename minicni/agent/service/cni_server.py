"""The agent's CNI server: the plugin's requests, forwarded by its shim, served by the warm agent.

`minicni-agent --cni-socket PATH` (default /run/minicni/cni.sock; empty: no server). A pod's CNI
call then costs the shim's interpreter start-up and the kernel's work, not the plugin's imports.
The protocol (v2, and v1 of the release before) is described in `minicni.agent.host.shim`, the
other end; in short: request (env, stdin; a DEL's namespace file) -> A (taken) or R (refused: the
shim runs the plugin in-process) -> G (go; for ADD and CHECK with the pod's netlink socket) ->
exit code and stdout. A DEL is its own go: A comes with its answer.

Who may ask: the directory is 0700 and the socket 0600 (root only), the peer's SO_PEERCRED uid
must be 0, and the caller must be in the agent's own network namespace (the kernel makes the
server side of a unix connection in the client's namespace, so SO_NETNS_COOKIE of the accepted
socket tells; SIOCGSKNS and fstat before Linux 5.14): a shim in another node's namespace that
reaches this socket through a shared file system would get its pod wired into the wrong node.
Such a request is refused, and served by the fallback in the caller's own namespace.

While the shim makes the pod's socket, the agent does an ADD's first reads of the node (the
bridge, its addresses: `served.look_ahead`); only reads, since the request may yet be abandoned.

A DEL comes with CNI_NETNS's file instead of a socket inside it (the shim enters nothing: the
agent deletes the host end and the pod end goes with it; it reaches inside only in the rare case
where the host end is gone, by the namespace's id, IFLA_TARGET_NETNSID).

What is served: every command, with the same dispatch as the executable's (`minicni.plugin.served`,
the one place the agent imports the plugin from). Refused before anything is done: a config whose
address store (dataDir) lies outside the agent's --ipam-data-dir (the directory the DaemonSet
shares with the host), an ADD while net.ipv4.ip_forward is off, or net.ipv6.conf.all.forwarding
for a network with an IPv6 range (the agent never writes a sysctl here: /proc/sys is read-only in
its container; the in-process plugin turns them on), and a request
of another protocol version. The plugin's log lines of a served request go to the agent's log;
the config's logFile is not written.

Concurrency: a thread per connection, at most MAX_PENDING connections at once (more are refused
"busy"), at most WORKERS dispatching; the threads accept their connections themselves, and one
done with its connection waits in accept() for the next (up to SPARE_THREADS of them: a thread
started per connection cost the caller ~0.3 ms, a hand-over from an accepting thread ~0.1 ms);
one request at a time per (container ID, ifname); the store's lock stays the arbiter between the
server and in-process plugins. Every read has a time-out, so a silent client ties up nothing.

A DEL is answered once it is recorded in the store; looking up its links, removing them and
releasing its address go after the answer (the kernel takes tens of milliseconds to unregister a
veth), still under the attachment's lock, so a later request for the same pod waits for it. At
start the server finishes what an earlier agent recorded and did not finish.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from minicni.agent.service.metrics import Metrics
from minicni.plugin import served

log = logging.getLogger(__name__)

VERSION = 2
VERSIONS = (1, 2)
"""What this agent serves: v2, and v1, the shim of the release before (a plugin process started
before an upgrade keeps running its version's shim)."""
MAGIC = b"MCNI"
HEADER = struct.Struct("<4sBBHII")  # magic, version, flags, netns errno, env length, stdin length
FLAG_POD_SOCKET = 1  # v1: a socket inside CNI_NETNS comes with the request
FLAG_NETNS_FILE = 2
FLAG_SOCKET_WITH_GO = 4  # v2: that socket comes with the go (the shim makes it meanwhile)
FLAG_GO_NOW = 8  # v2, DEL only: the request is its own go; b"A" comes with the answer
GO_WITH_SOCKET = struct.Struct("<cH")  # b"G", the errno of making the socket (0: attached)
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type (Linux >= 4.11)
CLONE_NEWNET = 0x40000000
MAX_ENV = 64 << 10
MAX_STDIN = 1 << 20
FIRST_READ = 64 << 10
FD_SPACE = socket.CMSG_SPACE(4 * array.array("i").itemsize)
"""Ancillary space for up to four descriptors: one is the most a message may carry, and a few
more let a message that carries too many be seen and refused (not cut short: MSG_CTRUNC)."""
REPLY = struct.Struct("<II")  # exit code, stdout length
WORKERS = 8
"""Requests dispatching at once: the GIL is released in netlink syscalls, and the kernel's rtnl
lock serialises link changes anyway; more threads would only contend."""
MAX_PENDING = 256
"""Connections held at once (waiting for a worker, or finishing a DEL); more are refused busy."""
SPARE_THREADS = WORKERS
"""Threads kept waiting in accept() after their connection is done."""
FIRST_THREADS = 2
"""Threads waiting in accept() from the start."""
BACKLOG = 128
READ_TIMEOUT = 2.0
"""Seconds for the shim to send its request, and again its go: it is a few syscalls away."""
SO_NETNS_COOKIE = 71  # Linux >= 5.14; not in the socket module
SO_PROTOCOL = 38
SO_DOMAIN = 39
SIOCGSKNS = 0x894C
NETLINK_ROUTE = 0
START_RETRY_SECONDS = 5.0
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
"""The metrics' command label: anything else (the caller's CNI_COMMAND is untrusted) is "other",
so a caller cannot add series without bound."""


class Refused(Exception):
    """Why a request is not taken: the shim runs the plugin in-process. `reason` labels it in
    the metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    env: dict[str, str]
    stdin: bytes
    pod_socket: int | None
    netns_errno: int
    netns_file: int | None = None
    """A DEL's CNI_NETNS, opened by the shim (it needs no socket inside)."""
    socket_with_go: bool = False
    """v2's ADD and CHECK: the pod's socket, or why there is none, comes with the go."""
    go_now: bool = False
    """v2's DEL: no go to wait for (run twice, by this agent and a shim that gave up waiting,
    a DEL does nothing twice)."""

    @property
    def passed(self) -> list[int]:
        return [fd for fd in (self.pod_socket, self.netns_file) if fd is not None]

    @property
    def command(self) -> str:
        return self.env.get("CNI_COMMAND", "")

    @property
    def attachment(self) -> tuple[str, str] | None:
        container_id = self.env.get("CNI_CONTAINERID", "")
        return (container_id, self.env.get("CNI_IFNAME", "")) if container_id else None


class AttachmentLocks:
    """One lock per (container ID, ifname), dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def held(self, key: tuple[str, str] | None) -> Iterator[None]:
        if key is None:
            yield
            return
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


def netns_cookie(sock: socket.socket) -> int | None:
    """The kernel's cookie of the network namespace `sock` lives in; None before Linux 5.14."""
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError as error:
        if error.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            return None
        raise


def netns_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of the network namespace socket `fd` lives in (SIOCGSKNS, Linux >= 4.9;
    CAP_NET_ADMIN over that namespace)."""
    ns = fcntl.ioctl(fd, SIOCGSKNS)
    try:
        info = os.fstat(ns)
    finally:
        os.close(ns)
    return info.st_dev, info.st_ino


class CniServer:
    def __init__(
        self,
        path: str,
        data_dir: str,
        metrics: Metrics,
        *,
        workers: int = WORKERS,
        max_pending: int = MAX_PENDING,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.path = path
        self.data_dir = data_dir
        self.metrics = metrics
        self.read_timeout = read_timeout
        self.max_pending = max_pending
        self._workers = threading.BoundedSemaphore(workers)
        self._locks = AttachmentLocks()
        self._pending = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accepting = 0  # threads waiting in accept() (under _idle, as the two below)
        self._threads = 0  # threads that accept and serve connections
        self._own_cookie: int | None = None
        self._own_netns = (0, 0)
        self._socket_inode = 0

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Finish DELs an earlier agent recorded, then listen. Raises OSError when the socket
        cannot be made (another agent serves it, a path too long for a unix socket...)."""
        self._finish_recorded_deletes()
        listener = self._listen()
        self._listener = listener
        self._own_cookie = netns_cookie(listener)
        self._own_netns = netns_identity(listener.fileno())
        with self._idle:
            self._accepting = self._threads = FIRST_THREADS
        for _ in range(FIRST_THREADS):
            self._start_thread()
        log.info("serving CNI requests on %s", self.path)

    def start_when_possible(self, stop: threading.Event) -> None:
        """`start`, now or, if the socket cannot be made yet (another agent still serves it
        during a rolling update), retried every START_RETRY_SECONDS in the background until it
        can or `stop` is set. Meanwhile the shims run the plugin in-process."""
        try:
            self.start()
            return
        except OSError as error:
            log.error("cannot serve CNI requests on %s yet: %s (retrying)", self.path, error)

        def retry() -> None:
            while not stop.wait(START_RETRY_SECONDS) and not self._stopping.is_set():
                try:
                    self.start()
                    return
                except OSError as error:
                    log.debug("cannot serve CNI requests on %s yet: %s", self.path, error)

        threading.Thread(target=retry, name="cni-server-start", daemon=True).start()

    def _listen(self) -> socket.socket:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "not a directory of ours", directory)
        os.chmod(directory, 0o700)
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)  # the directory kept everyone else out meanwhile
            self._socket_inode = os.lstat(self.path).st_ino
            listener.listen(BACKLOG)
        except BaseException:
            listener.close()
            raise
        return listener

    def _remove_stale_socket(self) -> None:
        """A socket left by an agent that died; one that answers belongs to a live agent."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(errno.EEXIST, "exists and is not a socket", self.path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)
        else:
            raise OSError(errno.EADDRINUSE, "another process serves this socket", self.path)
        finally:
            probe.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests (the shims fall back from now on), refuse those still waiting for
        a worker, and wait up to `timeout` seconds for those being served and their DELs."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(self.path).st_ino == self._socket_inode:  # not a successor's
                    os.unlink(self.path)
            # shutdown() wakes every thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        deadline = time.monotonic() + timeout
        with self._idle:
            while (self._pending or self._threads) and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            if self._pending:
                log.warning("stopping with %d CNI requests still running", self._pending)

    def _finish_recorded_deletes(self) -> None:
        try:
            finished = served.finish_recorded_deletes(self.data_dir)
        except Exception as error:  # the node's store, the kernel: report, serve anyway
            log.error("finishing recorded DELs failed: %s: %s", type(error).__name__, error)
            return
        for attachment in finished:
            log.info("finished the DEL of %s, recorded by an earlier agent", attachment)

    # -- connections --------------------------------------------------------------------------
    def _start_thread(self) -> None:
        threading.Thread(target=self._accept_and_serve, name="cni-conn", daemon=True).start()

    def _accept_and_serve(self) -> None:
        """Accept a connection and serve it, in this thread: one wake-up per request. The thread
        that takes the last waiting place starts another first, so that the next connection too
        finds one; done, a thread waits again unless SPARE_THREADS already do."""
        assert self._listener is not None
        listener = self._listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():  # the listener shut down: every thread wakes
                    with self._idle:
                        self._accepting -= 1
                        self._threads -= 1
                        self._idle.notify_all()
                    return
                time.sleep(0.05)  # EMFILE and friends: let some requests finish
                continue
            with self._idle:
                self._accepting -= 1
                busy = self._pending >= self.max_pending
                if not busy:
                    self._pending += 1
                grow = self._accepting == 0
                if grow:
                    self._accepting += 1
                    self._threads += 1
            if grow:
                self._start_thread()
            if busy:
                self._refuse(conn, Refused("busy", f"{self.max_pending} requests in progress"))
                conn.close()
            else:
                self._handle(conn)
            with self._idle:
                if self._stopping.is_set() or self._accepting >= SPARE_THREADS:
                    self._threads -= 1
                    self._idle.notify_all()
                    return
                self._accepting += 1

    def _handle(self, conn: socket.socket) -> None:
        request: Request | None = None
        try:
            conn.settimeout(self.read_timeout)
            request = self._read(conn)  # first: a refusal then reaches the shim, reason and all
            self._check_peer(conn)
            self._admit(request)
            self._serve(conn, request)
        except Refused as refusal:
            self._refuse(conn, refusal)
        except (OSError, EOFError) as error:
            self.metrics.inc("cni_connections_lost_total")
            log.debug("CNI connection lost: %s", error)
        except Exception:  # a bug: the shim gets EOF (a fallback before G, error 11 after)
            log.exception("serving a CNI request failed")
        finally:
            for fd in request.passed if request is not None else []:
                os.close(fd)
            conn.close()
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _refuse(self, conn: socket.socket, refusal: Refused) -> None:
        self.metrics.inc("cni_refusals_total", reason=refusal.reason)
        log.info("refused a CNI request: %s", refusal)
        with contextlib.suppress(OSError):
            conn.sendall(b"R" + str(refusal).encode())

    def _check_peer(self, conn: socket.socket) -> None:
        _, uid, _ = struct.unpack(
            "=iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        if uid != 0:
            raise Refused("uid", f"peer uid {uid} is not 0")
        cookie = netns_cookie(conn)
        same = (
            cookie == self._own_cookie
            if cookie is not None and self._own_cookie is not None
            else netns_identity(conn.fileno()) == self._own_netns
        )
        if not same:
            raise Refused("netns", "the caller is in another network namespace than the agent")

    def _read(self, conn: socket.socket) -> Request:
        # A request's first bytes, the descriptors with them; the rest (a config of more than
        # FIRST_READ bytes) is read by `_parse` (a 1 MiB buffer costs ~20 us per request).
        data, ancillary, msg_flags, _ = conn.recvmsg(FIRST_READ, FD_SPACE)
        received = _descriptors(ancillary)
        try:
            return self._parse(conn, data, msg_flags, received)
        except BaseException:
            for fd in received:
                os.close(fd)
            raise

    def _parse(self, conn: socket.socket, data: bytes, msg_flags: int, fds: list[int]) -> Request:
        if len(data) < 5 or data[:4] != MAGIC:
            raise Refused("malformed", "not a minicni CNI request")
        if data[4] not in VERSIONS:
            raise Refused("version", f"protocol version {data[4]}; this agent speaks 1 and 2")
        if msg_flags & socket.MSG_CTRUNC or len(fds) > 1:
            raise Refused("malformed", "more than one file descriptor")
        buffer = bytearray(data)
        while len(buffer) < HEADER.size:
            buffer += self._receive(conn, HEADER.size - len(buffer))
        _, _, flags, netns_errno, env_size, stdin_size = HEADER.unpack_from(buffer)
        if env_size > MAX_ENV or stdin_size > MAX_STDIN:
            raise Refused("malformed", "request larger than the protocol's limits")
        total = HEADER.size + env_size + stdin_size
        while len(buffer) < total:
            buffer += self._receive(conn, total - len(buffer))
        kind = flags & (FLAG_POD_SOCKET | FLAG_NETNS_FILE)
        with_go = bool(flags & FLAG_SOCKET_WITH_GO)
        if (
            len(buffer) != total
            or kind == FLAG_POD_SOCKET | FLAG_NETNS_FILE
            or bool(kind) != bool(fds)
            or (with_go and (data[4] == 1 or kind))
            or (kind == FLAG_POD_SOCKET and data[4] != 1)
        ):
            raise Refused("malformed", "lengths or file descriptors do not match the header")
        env = _decode_env(bytes(buffer[HEADER.size : HEADER.size + env_size]))
        stdin = bytes(buffer[HEADER.size + env_size :])
        if with_go:
            return Request(env, stdin, None, 0, socket_with_go=True)
        if flags & FLAG_GO_NOW:
            if data[4] == 1 or env.get("CNI_COMMAND") != "DEL":
                raise Refused("malformed", "only a DEL is its own go")
            return dataclasses.replace(
                self._passed(env, stdin, kind, fds[0] if fds else None, netns_errno), go_now=True
            )
        return self._passed(env, stdin, kind, fds[0] if fds else None, netns_errno)

    def _passed(
        self, env: dict[str, str], stdin: bytes, kind: int, passed: int | None, netns_errno: int
    ) -> Request:
        """The request with the descriptor that came with it, checked."""
        if kind == FLAG_NETNS_FILE:
            if env.get("CNI_COMMAND") != "DEL":
                raise Refused("malformed", "only a DEL comes with its namespace's file")
            assert passed is not None
            if not _is_network_namespace(passed):  # an empty file left where one was mounted...
                os.close(passed)  # ...as the shim's setns would have found: EINVAL, served
                return Request(env, stdin, None, errno.EINVAL)
            return Request(env, stdin, None, netns_errno, netns_file=passed)
        if passed is not None and not _is_route_socket(passed):
            raise Refused("malformed", "the file descriptor passed is not a NETLINK_ROUTE socket")
        return Request(env, stdin, passed, netns_errno)

    def _receive_go(self, conn: socket.socket, request: Request) -> Request | None:
        """The shim's go; None when it gave up waiting and fell back. For v2's ADD and CHECK the
        request as the go completes it: the pod's socket, or why the shim has none. A go that
        does not parse ends the connection (the shim answers CNI error 11: try again)."""
        if not request.socket_with_go:
            return request if conn.recv(1) == b"G" else None
        data, pod_socket = _receive_go_with_socket(conn)
        if data[:1] != b"G":
            if pod_socket is not None:
                os.close(pod_socket)
            return None
        if len(data) != GO_WITH_SOCKET.size or (pod_socket is None) == (data[1:] == bytes(2)):
            if pod_socket is not None:
                os.close(pod_socket)
            raise EOFError("a go that does not match the protocol")
        (_, netns_errno) = GO_WITH_SOCKET.unpack(data)
        return dataclasses.replace(request, pod_socket=pod_socket, netns_errno=netns_errno)

    def _receive(self, conn: socket.socket, size: int) -> bytes:
        chunk = conn.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the shim closed the connection")
        return chunk

    def _admit(self, request: Request) -> None:
        if self._stopping.is_set():
            raise Refused("stopping", "the agent is stopping")
        refusal = served.refusal(request.command, request.stdin, self.data_dir)
        if refusal is not None:
            raise Refused(refusal.reason, refusal.detail)

    def _serve(self, conn: socket.socket, request: Request) -> None:
        command = request.command if request.command in COMMANDS else "other"
        with self._locks.held(request.attachment):
            with self._workers:
                if self._stopping.is_set():
                    raise Refused("stopping", "the agent is stopping")
                with contextlib.ExitStack() as closing:  # what came with the go, what was read
                    ahead = None
                    go: Request | None = request
                    if not request.go_now:
                        conn.sendall(b"A")
                        if request.socket_with_go:  # the shim is making the socket meanwhile
                            ahead = served.look_ahead(request.command, request.stdin)
                            if ahead is not None:
                                closing.callback(ahead.close)
                        go = self._receive_go(conn, request)
                    if go is None:  # gave up waiting (its time-out) and fell back
                        self.metrics.inc("cni_abandoned_total")
                        return
                    if go is not request and go.pod_socket is not None:
                        closing.callback(os.close, go.pod_socket)  # came with the go
                    started = time.perf_counter()
                    outcome = served.serve(
                        go.env,
                        go.stdin,
                        go.pod_socket,
                        go.netns_errno,
                        netns_file=go.netns_file,
                        ahead=ahead,
                    )
                answer = REPLY.pack(outcome.code, len(outcome.stdout)) + outcome.stdout
                with contextlib.suppress(OSError):  # the shim's own time-out: nothing to tell
                    conn.sendall(b"A" + answer if request.go_now else answer)
                seconds = time.perf_counter() - started
            # The answer woke the shim with a "sync" wake-up, which expects this thread to sleep
            # now, and so may queue the shim on this CPU (on a 2-vCPU VM, measured: nearly
            # always). This thread goes on with bookkeeping and a DEL's kernel work: the shim
            # waited up to ~0.7 ms for them. Let it run first.
            os.sched_yield()
            self.metrics.inc(
                "cni_requests_total",
                command=command,
                outcome="ok" if outcome.code == 0 else "error",
            )
            self.metrics.observe_histogram("cni_request_duration_seconds", seconds, command=command)
            log.info(
                "CNI %s %s/%s: %s in %.1f ms",
                command,
                request.env.get("CNI_CONTAINERID", "-")[:12],
                request.env.get("CNI_IFNAME", "-"),
                "ok" if outcome.code == 0 else "error",
                seconds * 1000,
            )
            for work in outcome.deferred:  # still under the attachment's lock
                try:
                    work()
                except Exception as error:  # recorded: finished by the next request or start
                    self.metrics.inc("cni_deferred_failures_total")
                    log.error("finishing a DEL after its answer failed: %s", error)


def _receive_go_with_socket(conn: socket.socket) -> tuple[bytes, int | None]:
    """v2's go for ADD and CHECK: b"G" and an errno, with the pod's socket when the errno is 0."""
    data, ancillary, msg_flags, _ = conn.recvmsg(GO_WITH_SOCKET.size, FD_SPACE)
    received = _descriptors(ancillary)
    try:
        while data[:1] == b"G" and len(data) < GO_WITH_SOCKET.size:
            chunk = conn.recv(GO_WITH_SOCKET.size - len(data))
            if not chunk:
                break
            data += chunk
        if len(received) > 1 or msg_flags & socket.MSG_CTRUNC:
            raise EOFError("more than one file descriptor with the go")
        if received and not _is_route_socket(received[0]):
            raise EOFError("the go came with a file descriptor that is not a NETLINK_ROUTE socket")
    except BaseException:
        for fd in received:
            os.close(fd)
        raise
    return data, received[0] if received else None


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors passed (SCM_RIGHTS) in a recvmsg's ancillary data: each one is the
    receiver's to close."""
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def _is_network_namespace(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # not a namespace file (ENOTTY), or a kernel before 4.11
        return False


def _is_route_socket(fd: int) -> bool:
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return (
            probe.getsockopt(socket.SOL_SOCKET, SO_DOMAIN) == socket.AF_NETLINK
            and probe.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL) == NETLINK_ROUTE
        )
    except OSError:
        return False
    finally:
        probe.close()


def _decode_env(block: bytes) -> dict[str, str]:
    """The CNI_* variables, decoded as os.environ decodes them (bytes that are not UTF-8 become
    lone surrogates, which the dispatch then refuses as it does in-process)."""
    env: dict[str, str] = {}
    for item in block.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"CNI_"):
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env
