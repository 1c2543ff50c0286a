"""The `minicni` executable: read env and stdin, dispatch, write one JSON document, exit."""

from __future__ import annotations

import os
import sys

# A runtime passes its own environment on to the plugin: PYTHONDONTWRITEBYTECODE there would make
# every ADD recompile minicni's modules (15-20 ms idle, ~50 ms on a loaded node). Writing the
# bytecode cache is harmless: Python skips it silently where the install is read-only.
sys.dont_write_bytecode = False

from minicni import fastjson  # noqa: E402 -- imported after the line above, so it is cached
from minicni.cni import skel  # noqa: E402
from minicni.log import log  # noqa: E402

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, TextIO

    from minicni.plugin.context import CommandContext

LOG_FILE_ENV = "MINICNI_LOG_FILE"
FAST_PATH_UNAVAILABLE_ENV = "MINICNI_FAST_PATH_UNAVAILABLE"
"""Set by the shim (minicni.agent.host.shim) when the agent could not take the request: why."""


class Commands:
    """Each command imports only what it needs, on first use: VERSION nothing, STATUS (which
    containerd calls every few seconds) no netlink, the others the kernel-facing plugin.

    `context` makes the `CommandContext` the commands run in (see `minicni.plugin.context`): by
    default the plugin's own process."""

    def __init__(self, context: Callable[[], CommandContext] | None = None) -> None:
        self._make_context = context
        self._context: CommandContext | None = None

    @property
    def context(self) -> CommandContext:
        if self._context is None:
            if self._make_context is None:
                from minicni.plugin.context import in_process

                self._make_context = in_process
            self._context = self._make_context()
        return self._context

    def add(self, request: skel.Request) -> dict[str, Any]:
        result: dict[str, Any] = _plugin().add(request, self.context)
        return result

    def delete(self, request: skel.Request) -> None:
        _plugin().delete(request, self.context)

    def check(self, request: skel.Request) -> None:
        _plugin().check(request, self.context)

    def gc(self, request: skel.Request) -> None:
        _plugin().gc(request, self.context)

    def status(self, request: skel.Request) -> None:
        from minicni.plugin.status import status

        status(request)


def _plugin() -> ModuleType:
    from minicni.plugin import commands

    return commands


def load_plugin() -> skel.Plugin:
    return Commands()


def setup_logging(stdin: bytes) -> LineWriter | None:
    """Log to stderr and to a file (config key `logFile`, env MINICNI_LOG_FILE, or the default).
    Never to stdout, which carries exactly one JSON document. Returns the file's writer.

    Nothing from the environment or the config reaches a format string; a `logFile` that is not
    a valid absolute path is left to the config check (code 7) and the fallback is used."""
    from minicni.cni.errors import CniError
    from minicni.defaults import LOG_FILE
    from minicni.plugin.config import log_file_problem

    try:
        config = skel.decode_config(stdin)
    except CniError:
        config = {}
    configured = config.get("logFile")
    if configured is None or log_file_problem(configured):
        configured = os.environ.get(LOG_FILE_ENV, LOG_FILE)
    prefix = (
        f" minicni[{os.getpid()}] {os.environ.get('CNI_COMMAND', '?')} "
        f"{os.environ.get('CNI_CONTAINERID', '-')[:12]} "
    )
    log.add_sink(LineWriter(sys.stderr, prefix, "<stderr>"))
    problem = log_file_problem(configured)
    if problem:
        log.warning("not logging to a file: log file %r %s", configured, problem)
        return None
    try:
        stream = _open_log(configured)
    except OSError as exc:
        log.warning("cannot open log file %r: %s", configured, exc)
        return None
    writer = LineWriter(stream, prefix, configured)
    log.add_sink(writer)
    return writer


class LineWriter:
    """A log sink writing lines as `logging` formatted them (`2026-12-01 13:52:30,193 minicni[7]
    ADD 3f2a... INFO` and the message). Control characters and lone surrogates are escaped (repr
    style) in everything a line says, so untrusted input can never start a forged line or break
    the log's encoding; records it could not write (a full disk, a closed stderr) are counted,
    not reported one by one."""

    def __init__(self, stream: TextIO, prefix: str, path: str) -> None:
        self.stream = stream
        self.prefix = _one_line(prefix)
        self.path = path
        self.failures = 0

    def __call__(self, level: str, text: str) -> None:
        import time

        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        try:
            line = f"{stamp},{int(now % 1 * 1000):03d}{self.prefix}{level} {_one_line(text)}\n"
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            self.failures += 1


def _unsafe(char: str) -> bool:
    code = ord(char)
    return (
        code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF
    )


def _one_line(text: str) -> str:
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(ascii(char)[1:-1] if _unsafe(char) else char for char in text)


def _open_log(path: str) -> TextIO:
    """Append to a regular file only: a FIFO would block the plugin, /dev/stdout would break the
    one-document contract."""
    import errno
    import stat

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")


def _read_stdin() -> bytes:
    """At most one byte more than a config may have, so a huge stdin costs no memory."""
    return sys.stdin.buffer.read(skel.MAX_CONFIG_BYTES + 1)


def main() -> None:
    log_file: LineWriter | None = None
    try:
        stdin = _read_stdin()
    except OSError as exc:
        from minicni.cni.errors import IO_FAILURE, CniError

        code, out = (
            1,
            fastjson.dumps(
                CniError(IO_FAILURE, "reading stdin failed", str(exc)).to_json("1.1.0")
            ).encode(),
        )
    else:
        if os.environ.get("CNI_COMMAND") != "VERSION":
            log_file = setup_logging(stdin)
            why = os.environ.get(FAST_PATH_UNAVAILABLE_ENV)
            if why is not None:  # how an operator sees fallbacks: the agent cannot count them
                log.warning("fast path unavailable (%s): in-process", why)
        code, out = skel.dispatch(os.environ, stdin, load_plugin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    if log_file is not None and log_file.failures:
        import contextlib  # loaded by the commands anyway; rare here

        with contextlib.suppress(OSError):
            sys.stderr.write(
                f"minicni: could not write {log_file.failures} log records to "
                f"{log_file.path!a} (disk full?)\n"
            )
    sys.exit(code)


if __name__ == "__main__":
    main()
