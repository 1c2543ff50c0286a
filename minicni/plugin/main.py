"""The `minicni` executable: read env and stdin, dispatch, write one JSON document, exit."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import sys
from types import ModuleType
from typing import Any

# A runtime passes its own environment on to the plugin: PYTHONDONTWRITEBYTECODE there would make
# every ADD recompile minicni's modules (15-20 ms idle, ~50 ms on a loaded node). Writing the
# bytecode cache is harmless: Python skips it silently where the install is read-only.
sys.dont_write_bytecode = False

from minicni.cni import skel  # noqa: E402 -- imported after the line above, so it is cached

LOG_FILE_ENV = "MINICNI_LOG_FILE"


class Commands:
    """Each command imports only what it needs, on first use: VERSION nothing, STATUS (which
    containerd calls every few seconds) no netlink, the others the kernel-facing plugin."""

    def add(self, request: skel.Request) -> dict[str, Any]:
        result: dict[str, Any] = _plugin().add(request)
        return result

    def delete(self, request: skel.Request) -> None:
        _plugin().delete(request)

    def check(self, request: skel.Request) -> None:
        _plugin().check(request)

    def gc(self, request: skel.Request) -> None:
        _plugin().gc(request)

    def status(self, request: skel.Request) -> None:
        from minicni.plugin.status import status

        status(request)


def _plugin() -> ModuleType:
    _skip_pyroute2_package_init()
    from minicni.plugin import commands

    return commands


def load_plugin() -> skel.Plugin:
    return Commands()


def _skip_pyroute2_package_init() -> None:
    """`import pyroute2` runs a package __init__ that loads every protocol it has (~150 ms);
    the plugin needs only the rtnetlink message classes (~35 ms). Registering the bare package first
    lets the submodules load without it. Never done in long-running processes (the agent)."""
    if "pyroute2" in sys.modules:
        return
    import importlib.util
    import types

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("pyroute2")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["pyroute2"] = package


class _LossyHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that counts the records it could not write (a full disk, a closed stderr)
    instead of printing `--- Logging error ---` and a traceback for each."""

    failures = 0
    path = "<stderr>"

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures += 1


class _OneLineFormatter(logging.Formatter):
    """Escapes control characters and lone surrogates (repr style) in everything a record says,
    so that untrusted input can never start a forged line or break the log's encoding."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], super().formatMessage(record))


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def setup_logging(stdin: bytes) -> _LossyHandler | None:
    """Log to stderr and to a file (config key `logFile`, env MINICNI_LOG_FILE, or the default).
    Never to stdout, which carries exactly one JSON document. Returns the file's handler.

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
    logger = logging.getLogger("minicni")
    logger.setLevel(logging.INFO)
    formatter = _OneLineFormatter(
        "%(asctime)s minicni[%(process)d] %(cni_command)s %(cni_container)s "
        "%(levelname)s %(message)s",
        defaults={
            "cni_command": os.environ.get("CNI_COMMAND", "?"),
            "cni_container": os.environ.get("CNI_CONTAINERID", "-")[:12],
        },
    )
    stderr = _LossyHandler(sys.stderr)
    stderr.setFormatter(formatter)
    logger.addHandler(stderr)
    problem = log_file_problem(configured)
    if problem:
        logger.warning("not logging to a file: log file %r %s", configured, problem)
        return None
    try:
        stream = _open_log(configured)
    except OSError as exc:
        logger.warning("cannot open log file %r: %s", configured, exc)
        return None
    handler = _LossyHandler(stream)
    handler.path = configured
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return handler


def _open_log(path: str) -> Any:
    """Append to a regular file only: a FIFO would block the plugin, /dev/stdout would break the
    one-document contract."""
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
    log_file: _LossyHandler | None = None
    try:
        stdin = _read_stdin()
    except OSError as exc:
        from minicni.cni.errors import IO_FAILURE, CniError

        code, out = (
            1,
            json.dumps(
                CniError(IO_FAILURE, "reading stdin failed", str(exc)).to_json("1.1.0")
            ).encode(),
        )
    else:
        if os.environ.get("CNI_COMMAND") != "VERSION":
            log_file = setup_logging(stdin)
        code, out = skel.dispatch(os.environ, stdin, load_plugin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    if log_file is not None and log_file.failures:
        with contextlib.suppress(OSError):
            sys.stderr.write(
                f"minicni: could not write {log_file.failures} log records to "
                f"{log_file.path!a} (disk full?)\n"
            )
    sys.exit(code)


if __name__ == "__main__":
    main()
