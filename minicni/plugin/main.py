"""The `minicni` executable: read env and stdin, dispatch, write one JSON document, exit."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

# A runtime passes its own environment on to the plugin: PYTHONDONTWRITEBYTECODE there would make
# every ADD recompile minicni's modules (15-20 ms idle, ~50 ms on a loaded node). Writing the
# bytecode cache is harmless: Python skips it silently where the install is read-only.
sys.dont_write_bytecode = False

from minicni.cni import skel  # noqa: E402 -- imported after the line above, so it is cached

if TYPE_CHECKING:
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


def setup_logging(stdin: bytes) -> None:
    """Log to stderr and to a file (config key `logFile`, env MINICNI_LOG_FILE, or the default).
    Never to stdout, which carries exactly one JSON document."""
    from minicni.defaults import LOG_FILE

    try:
        config = json.loads(stdin)
        configured = config.get("logFile") if isinstance(config, dict) else None
    except ValueError:
        configured = None
    path = configured if isinstance(configured, str) else os.environ.get(LOG_FILE_ENV, LOG_FILE)
    logger = logging.getLogger("minicni")
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter(
        f"%(asctime)s minicni[{os.getpid()}] {os.environ.get('CNI_COMMAND', '?')} "
        f"{os.environ.get('CNI_CONTAINERID', '-')[:12]} %(levelname)s %(message)s"
    )
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    logger.addHandler(stderr)
    if path:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError as exc:
            logger.warning("cannot open log file %s: %s", path, exc)
        else:
            handler.setFormatter(formatter)
            logger.addHandler(handler)


def main() -> None:
    try:
        stdin = sys.stdin.buffer.read()
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
            setup_logging(stdin)
            why = os.environ.get(FAST_PATH_UNAVAILABLE_ENV)
            if why is not None:  # how an operator sees fallbacks: the agent cannot count them
                logging.getLogger("minicni").warning("fast path unavailable (%s): in-process", why)
        code, out = skel.dispatch(os.environ, stdin, load_plugin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
