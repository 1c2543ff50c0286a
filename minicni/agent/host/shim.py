"""minicni's CNI plugin executable while the node agent serves CNI requests: a shim.

The runtime execs `/opt/cni/bin/minicni`, a launcher the agent installs, which runs this file
compiled (by the agent, with the interpreter that runs it). The bundle's launcher is a "#!" line
naming the bundled interpreter and a .pyc of this file with the agent's socket in it
(`BAKED_SOCKET`): the kernel starts the interpreter on the .pyc, and the bundle's ._pth makes the
run isolated, without site and without writing bytecode, as -I -S -B would. Elsewhere it runs as
if it were started as

    python3 -I -S -B shim.pyc SOCKET [site]

(a Python script the kernel starts with that interpreter, `#!python3 -ISB`, which sets sys.argv
so and runs the .pyc's code; or, where that cannot be, a /bin/sh script running that command line).

It forwards the request (env and stdin) over the agent's unix socket and writes the agent's answer:
the interpreter's start-up is then the whole cost of a pod's CNI call (~10 ms), not the plugin's
imports (~60 ms). It imports nothing beyond what the interpreter has loaded at start-up, plus
`_socket`, and on Python < 3.12 `_ctypes` (for setns) when the command needs the pod's namespace.
No json, no minicni: this is not a module of the agent but a program of its own. When the agent
cannot take the request it runs the plugin in-process, exactly as the launcher without the shim
does (`python -m minicni`); `site` (launcher mode: the agent's venv) is set up only then.

In the bundle, the shim does not wait for the interpreter's start-up to finish: the bundle's boot
copy of `encodings`, the first file the interpreter imports, runs this .pyc's `early()` when the
interpreter was started on it. A request the agent serves ends there (~2 ms sooner: codecs, I/O,
signal handlers and the program's own .pyc are never set up); one it does not take is handed to
`main()`, which runs the plugin in-process once the interpreter is up.

Protocol v2 (little-endian integers; the agent's side is `minicni.agent.service.cni_server`,
which also serves v1, the shim of the release before):

    shim -> agent  one sendmsg: b"MCNI", u8 version, u8 flags, u16 netns errno, u32 env length,
                   u32 stdin length, then the env (b"K=V" items, each ended by a NUL: the CNI_*
                   variables only), then stdin. Flags bit 1: with SCM_RIGHTS, CNI_NETNS itself,
                   opened (DEL: it configures nothing inside, so the shim enters nothing). Bit 2:
                   a NETLINK_ROUTE socket made inside CNI_NETNS comes with the go (ADD, CHECK:
                   the shim makes it while the agent reads and checks the request). For a DEL
                   whose CNI_NETNS would not open, no descriptor, and its errno instead. Bit 3:
                   the request is its own go (DEL only: it is idempotent, so a shim that gives up
                   waiting and runs it in-process too does nothing twice).
                   Limits: env 64 KiB, stdin 1 MiB (a larger request runs in-process).
                   (v1: bit 0, that socket attached here; G one byte.)
    agent -> shim  b"A" (a worker has the request), or b"R" and a reason, then the agent closes
                   (refused: uid, netns, version, dataDir, ip_forward, ipv6_forwarding,
                   busy, stopping, malformed). With bit 3, b"A" comes with the answer (below).
    shim -> agent  b"G" (go), and with bit 2 a u16 errno: 0 and, with SCM_RIGHTS, the socket;
                   else why CNI_NETNS would not open or enter. The agent dispatches only after
                   this; from here the shim never falls back, so a request is never run twice.
                   (Not with bit 3.)
    agent -> shim  u32 exit code, u32 stdout length, stdout.

The shim runs the plugin in-process when the socket is absent or refuses the connection, the
connection queue is full, the agent answers R or speaks another version, or no verdict comes
within ACCEPT_TIMEOUT seconds (env MINICNI_CNI_ACCEPT_TIMEOUT). After G, a lost connection or no
answer within REPLY_TIMEOUT seconds is CNI error 11 (try again later): the runtime retries.

Why the shim makes the pod's netlink socket: the agent (NET_ADMIN and NET_RAW only) may not enter
a namespace, but a netlink socket stays bound to the namespace it was created in; the shim, run by
the runtime as full root, enters CNI_NETNS just long enough to create it, and passes it.
"""

import _socket
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported when the shim runs
    from collections.abc import Callable
    from typing import NoReturn

    SetNs = Callable[[int, int], None]

BAKED_SOCKET = ""
"""The agent's socket, compiled in for the bundle's launcher (`launcher.compiled_shim`); empty: it
comes as argv[1]."""
VERSION = 2
MAGIC = b"MCNI"
FLAG_NETNS_FILE = 2
FLAG_SOCKET_WITH_GO = 4
FLAG_GO_NOW = 8
MAX_ENV = 64 << 10
MAX_STDIN = 1 << 20
ACCEPT_TIMEOUT = 10.0
"""Seconds from connecting until the agent takes or refuses the request. A request queued behind a
burst of pod starts is served sooner than a fallback would run (each costs ~50 ms of CPU)."""
REPLY_TIMEOUT = 240.0
"""Seconds from G until the answer: longer than any ADD takes; the runtime's deadline is its own."""
CLONE_NEWNET = 0x40000000
SOCKET_COMMANDS = (b"ADD", b"CHECK")
"""Commands that configure or read the pod's side: the agent needs a socket inside its namespace.
A DEL gets the namespace's file only (the agent deletes the host end; the pod end goes with it)."""
PLUGIN_STDIN_LIMIT = (4 << 20) + 1
"""What the plugin reads of stdin at most (minicni.cni.skel.MAX_CONFIG_BYTES and one byte, to
know it is too large): an oversized stdin is handed back no further."""
PLUGIN_ENTRY = "minicni.__main__"
"""The plugin's entry, as `python -m minicni` runs it (named, not imported: see the docstring)."""
FALLBACK_ENV = b"MINICNI_FAST_PATH_UNAVAILABLE"
"""Tells the in-process plugin why it runs, for its log (how an operator sees fallbacks)."""


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def fall_back(why: bytes, stdin: bytes | None, site: bool) -> "NoReturn":
    """Run the plugin in this process, as the launcher without the shim does. `stdin`: what was
    read of it already, handed back on fd 0 through a memory file."""
    if stdin is not None:
        fd = posix.memfd_create("minicni-stdin", posix.MFD_CLOEXEC)
        write_all(fd, stdin)
        size = len(stdin)
        while size < PLUGIN_STDIN_LIMIT and (chunk := posix.read(0, 1 << 16)):
            write_all(fd, chunk)  # the rest of an oversized stdin, as far as the plugin reads
            size += len(chunk)
        posix.lseek(fd, 0, 0)
        posix.dup2(fd, 0)
        posix.close(fd)
    posix.environ[FALLBACK_ENV] = why  # before `os` is imported, so os.environ has it
    if site:
        import site as site_module

        site_module.main()
    __import__(PLUGIN_ENTRY)  # runs the plugin's main(), which exits
    posix._exit(1)  # not reached


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view) :]


def read_stdin(limit: int) -> bytes:
    """Up to `limit` + 1 bytes: one more than the limit says it is too large."""
    chunks = []
    size = 0
    while size <= limit:
        chunk = posix.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def setns_function() -> "SetNs":
    setns: SetNs | None = getattr(posix, "setns", None)  # Python >= 3.12
    if setns is not None:
        return setns
    load_ctypes()
    import _ctypes  # in sys.modules now

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

    class Libc:
        # dlopen(NULL): the program itself, the C library included. The stubs want a path.
        _handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]

    raw_setns = Function(("setns", Libc()))  # type: ignore[arg-type]  # a CDLL-like handle

    def setns_311(fd: int, nstype: int) -> None:
        if raw_setns(fd, nstype) != 0:
            code = _ctypes.get_errno()
            raise OSError(code, posix.strerror(code))

    return setns_311


def load_ctypes() -> None:
    """`_ctypes` alone in sys.modules (~0.4 ms; all of ctypes would cost ~8 ms), for setns on
    Python < 3.12.

    Bound lazily: of the ~170 functions it calls, loading it and one setns use a few dozen
    (RTLD_NOW, Python's default, looks up all of them first: ~0.1 ms). Loaded from lib-dynload,
    where CPython puts it, as importlib's recipe for a file imports one (spec_from_file_location,
    module_from_spec: the frozen functions importlib.util hands out), without the search of the
    module path (a finder and a directory listing per entry, up to the one that has it: ~0.15 ms);
    by that search when it is not there (built in, or elsewhere). Python's flags are put back for
    what the process imports next (the plugin, in a fallback)."""
    flags = sys.getdlopenflags()
    sys.setdlopenflags(posix.RTLD_LAZY)
    try:
        dynload = [entry for entry in sys.path if entry.endswith("/lib-dynload")]
        if dynload and "_ctypes" not in sys.builtin_module_names:
            bootstrap = sys.modules["_frozen_importlib"]  # importlib's, loaded at start-up
            external = sys.modules["_frozen_importlib_external"]
            origin = dynload[0] + "/_ctypes" + external.EXTENSION_SUFFIXES[0]
            spec = external.spec_from_file_location("_ctypes", origin)
            try:
                module = bootstrap.module_from_spec(spec)
            except ImportError:  # not there: the search below
                pass
            else:
                spec.loader.exec_module(module)
                sys.modules["_ctypes"] = module
                return
        import _ctypes  # noqa: F401
    finally:
        sys.setdlopenflags(flags)


def regular(mode: int) -> bool:
    """S_ISREG (the stat module is not loaded): nsfs files, bind mounts included, are regular."""
    return mode & 0o170000 == 0o100000


def open_netns(netns: bytes) -> tuple[int | None, int]:
    """The namespace file at `netns`, opened; or the errno of opening it. Only a regular file is
    opened (what a namespace looks like), without blocking or becoming a controlling terminal."""
    flags = posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK | posix.O_NOCTTY
    try:
        if not regular(posix.stat(netns).st_mode):  # a FIFO, a device...: never opened
            return None, 22  # EINVAL: not a network namespace
        target = posix.open(netns, flags)
    except OSError as error:
        return None, error.errno or 2  # ENOENT
    if not regular(posix.fstat(target).st_mode):  # swapped since the stat
        posix.close(target)
        return None, 22
    return target, 0


def pod_socket(netns: bytes) -> tuple[_socket.socket | None, int]:
    """A NETLINK_ROUTE socket created inside the namespace at `netns`, this thread back home
    after; or the errno of opening or entering it."""
    target, error = open_netns(netns)
    if target is None:
        return None, error
    try:
        home = posix.open(b"/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            setns = setns_function()
            try:
                setns(target, CLONE_NEWNET)
            except OSError as error:
                return None, error.errno or 22  # EINVAL: not a network namespace
            try:
                kind = _socket.SOCK_RAW | _socket.SOCK_CLOEXEC
                return _socket.socket(_socket.AF_NETLINK, kind, 0), 0
            finally:
                setns(home, CLONE_NEWNET)
        finally:
            posix.close(home)
    finally:
        posix.close(target)


def rights_of(fd: int | None) -> list[tuple[int, int, bytes]]:
    """The ancillary data passing `fd` (SCM_RIGHTS), or none."""
    return [] if fd is None else [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, u32(fd))]


def receive_exactly(sock: _socket.socket, size: int, data: bytes = b"") -> bytes:
    """At least `size` bytes, starting with `data` (received already)."""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def lost(stdin: bytes, why: str) -> bytes:
    """CNI error 11 for a request the agent took and then lost: it may be half done, so it must
    not run again here; the runtime retries (a DEL first, for an ADD)."""
    version = b"1.0.0"
    start = stdin.find(b'"cniVersion"')
    if start >= 0:
        rest = stdin[start + 12 :].lstrip(b" \t\r\n:").lstrip()
        if rest[:1] == b'"':
            candidate = rest[1 : rest.find(b'"', 1)]
            if candidate and len(candidate) <= 16 and candidate.replace(b".", b"").isdigit():
                version = candidate
    detail = why.replace("\\", "/").replace('"', "'").encode()
    return (
        b'{"cniVersion": "' + version + b'", "code": 11, '
        b'"msg": "the minicni agent lost the request; try again", "details": "' + detail + b'"}\n'
    )


def accept_timeout(environ: dict[bytes, bytes]) -> float:
    try:
        return float(environ.get(b"MINICNI_CNI_ACCEPT_TIMEOUT", ACCEPT_TIMEOUT))
    except ValueError:
        return ACCEPT_TIMEOUT


EARLY_FALLBACK = "_minicni_shim_fallback"
"""Where `early` leaves, in `sys`, why it could not forward the request and the stdin it read:
`main` then runs the plugin in-process with them."""


def early() -> None:
    """The shim, run by the bundle's interpreter before the rest of its start-up: from the first
    file it imports (its boot copy of `encodings`, see `minicni.agent.host.bundle.BOOT_SHIM`), as
    soon as the module path is set. A request the agent serves ends the process here. What the
    agent cannot take is left to `main`, which runs the plugin in-process once the interpreter
    is up. Saves what the start-up does after that import (~2 ms of ~10 on a 2-CPU node: codecs,
    I/O, signal handlers, the program's .pyc), which a served request never uses.

    Here, only what the interpreter set up before that import works: builtins, `sys`, `posix`,
    the import system, and the built-in codecs (UTF-8, ASCII, Latin-1), which is all the shim
    uses until it falls back. SIGPIPE is not ignored yet: a runtime that closed our stdout before
    reading the answer ends the shim by that signal rather than by an error."""
    if not BAKED_SOCKET:  # the launcher names the socket: it is not run from the boot file
        return
    try:
        pending = forward(BAKED_SOCKET.encode(), posix.environ)
    except Exception:  # before it read stdin (see `forward`): main starts over
        return
    setattr(sys, EARLY_FALLBACK, pending)


def main() -> None:
    argv = sys.argv
    if BAKED_SOCKET:  # run by the bundle's launcher: its interpreter has no site to set up
        path, site = BAKED_SOCKET.encode(), False
    else:
        path = argv[1].encode() if len(argv) > 1 else b""
        site = len(argv) > 2 and argv[2] == "site"
    pending = sys.__dict__.pop(EARLY_FALLBACK, None)  # `early` tried, and could not forward
    if pending is not None:
        fall_back(pending[0], pending[1], site)
    if not path:
        fall_back(b"no socket configured", None, site)
    why, stdin = forward(path, posix.environ)
    fall_back(why, stdin, site)


def forward(path: bytes, environ: dict[bytes, bytes]) -> tuple[bytes, bytes | None]:
    """Forward the request to the agent at `path` and, when it serves it, write its answer and
    exit. Returns only when the agent did not take the request: why, and the stdin read so far
    (None: none yet), for the plugin to run in-process."""
    timeout = accept_timeout(environ)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.setblocking(False)  # a full connection queue is EAGAIN, not a wait
    try:
        sock.connect(path)
    except OSError as error:
        sock.close()
        return b"connecting to the agent: " + posix.strerror(error.errno or 0).encode(), None
    stdin = b""
    try:
        stdin = read_stdin(MAX_STDIN)
        env = b"".join(k + b"=" + v + b"\0" for k, v in environ.items() if k[:4] == b"CNI_")
        if len(stdin) > MAX_STDIN or len(env) > MAX_ENV:
            sock.close()
            return b"request larger than the protocol's limits", stdin
        verdict = take(sock, environ, env, stdin, timeout)
    except Exception as error:  # the time-out included: nothing was dispatched
        sock.close()
        return str(error).encode(errors="replace") or b"lost before the go", stdin
    # From here on the agent may have run the request: nothing returns (or raises), so that
    # nothing runs it again.
    try:
        sock.settimeout(REPLY_TIMEOUT)
        head = receive_exactly(sock, 8, verdict)
        code = int.from_bytes(head[:4], "little")
        size = int.from_bytes(head[4:8], "little")
        out = receive_exactly(sock, size, head[8:])[:size]
    except Exception as error:
        code, out = 1, lost(stdin, f"{type(error).__name__}: {error}")
    try:
        write_all(1, out)
    except OSError:  # no stdout to write to: the exit code is all the runtime gets
        code = code or 1
    posix._exit(code)


def take(
    sock: _socket.socket, environ: dict[bytes, bytes], env: bytes, stdin: bytes, timeout: float
) -> bytes:
    """Send the request, and the go once the agent took it: from here the agent runs it, and
    the shim never falls back. Returns what came after the agent's b"A" (a DEL's answer starts
    there). Raises OSError or EOFError when the agent did not take the request (nothing was
    run)."""
    passed = None  # a DEL's CNI_NETNS, opened
    flags = netns_errno = 0
    netns = environ.get(b"CNI_NETNS", b"")
    command = environ.get(b"CNI_COMMAND")
    with_go = bool(netns) and command in SOCKET_COMMANDS
    go_now = command == b"DEL"  # idempotent: no round trip for the go
    if with_go:
        flags = FLAG_SOCKET_WITH_GO
    elif netns and go_now:
        passed, netns_errno = open_netns(netns)
        flags = FLAG_NETNS_FILE if passed is not None else 0
    if go_now:
        flags |= FLAG_GO_NOW
    header = MAGIC + bytes((VERSION, flags)) + (netns_errno & 0xFFFF).to_bytes(2, "little")
    request = header + u32(len(env)) + u32(len(stdin)) + env + stdin
    sock.settimeout(timeout)
    pod = None
    try:
        try:
            sent = sock.sendmsg([request], rights_of(passed))
        finally:
            if passed is not None:
                posix.close(passed)  # the agent has its own copy now, or none (a fallback)
        if sent < len(request):
            sock.sendall(request[sent:])
        if with_go:  # meanwhile the agent reads and checks the request
            pod, netns_errno = pod_socket(netns)
        verdict = sock.recv(1024)
        if verdict[:1] == b"A" and go_now:
            return verdict[1:]  # the answer follows
        if verdict[:1] == b"A" and with_go:
            go = b"G" + (netns_errno & 0xFFFF).to_bytes(2, "little")
            sock.sendmsg([go], rights_of(None if pod is None else pod.fileno()))
        elif verdict[:1] == b"A":
            sock.sendall(b"G")
        elif verdict[:1] == b"R":
            raise ConnectionRefusedError("refused: " + verdict[1:].decode(errors="replace"))
        else:
            raise EOFError("no answer from the agent")
    finally:
        if pod is not None:
            pod.close()  # sent with the go: the agent has its own copy
    return b""


if __name__ == "__main__":
    main()
