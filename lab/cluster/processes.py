"""What runs in a lab's namespaces: find it by namespace, signal it, and hold Ctrl-C back while a
step must not be interrupted. The tear-down's reaper, used on labs left by a killed run too."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the body, then deliver them as they would have been."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only ever reach the main thread
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda n, _f: received.append(n)) for signum in signums
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            os.kill(os.getpid(), signum)


def processes_in(netns_paths: list[str]) -> list[int]:
    """Pids of processes whose network namespace is one of those at `netns_paths`."""
    targets = set()
    for path in netns_paths:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(path)
            targets.add((info.st_dev, info.st_ino))
    if not targets:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                info = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in targets:
                pids.append(int(entry))
    return pids


def processes_naming(directory: str) -> list[int]:
    """Pids of processes with `directory` (or a path below it) in their command line: conmon and
    the `podman container cleanup` it runs when a container exits, which write into the store
    after `podman rm` has returned."""
    needle = directory.rstrip("/").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as stream:
                    argv = stream.read(65536).split(b"\0")
            except OSError:
                continue
            if any(arg == needle or arg.startswith(needle + b"/") for arg in argv):
                pids.append(int(entry))
    return pids


def kill_processes_in(netns_paths: list[str]) -> None:
    """SIGKILL whatever still runs in the namespaces: probes of an interrupted matrix, an agent
    that ignored SIGTERM."""
    for pid in processes_in(netns_paths):
        kill(pid)


def alive(pid: int) -> bool:
    """Running, not a zombie. Reaps the pid if it is our own child (an agent this process
    started, seen through a state file rather than its Popen object)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def kill(pid: int) -> None:
    send_signal(pid, signal.SIGKILL)


def send_signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
