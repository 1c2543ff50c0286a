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


def setup_logging(stdin: bytes) -> None:
    """Log to stderr and to a file (config key `logFile`, env MINICNI_LOG_FILE, or the default).
    Never to stdout, which carries exactly one JSON document."""
    from minicni.defaults import LOG_FILE

    try:
        config = fastjson.loads(stdin)
        configured = config.get("logFile") if isinstance(config, dict) else None
    except (ValueError, RecursionError):
        configured = None
    path = configured if isinstance(configured, str) else os.environ.get(LOG_FILE_ENV, LOG_FILE)
    prefix = (
        f" minicni[{os.getpid()}] {os.environ.get('CNI_COMMAND', '?')} "
        f"{os.environ.get('CNI_CONTAINERID', '-')[:12]} "
    )
    log.add_sink(_line_writer(sys.stderr, prefix))
    if path:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            stream = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        except OSError as exc:
            log.warning("cannot open log file %s: %s", path, exc)
        else:
            log.add_sink(_line_writer(stream, prefix))


def _line_writer(stream: TextIO, prefix: str) -> Callable[[str, str], None]:
    """Lines as `logging` formatted them: `2026-12-01 13:52:30,193 minicni[7] ADD 3f2a... INFO`
    and the message."""
    import time

    def write(level: str, text: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        stream.write(f"{stamp},{int(now % 1 * 1000):03d}{prefix}{level} {text}\n")
        stream.flush()

    return write


def main() -> None:
    try:
        stdin = sys.stdin.buffer.read()
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
            setup_logging(stdin)
            why = os.environ.get(FAST_PATH_UNAVAILABLE_ENV)
            if why is not None:  # how an operator sees fallbacks: the agent cannot count them
                log.warning("fast path unavailable (%s): in-process", why)
        code, out = skel.dispatch(os.environ, stdin, load_plugin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
