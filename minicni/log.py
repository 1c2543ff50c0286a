"""The plugin's log: a few lines a command, written by whoever runs the commands.

The standard `logging` package (with threading, traceback, string, weakref...) costs the plugin
~5 ms on every pod start for what this does: format a line and hand it to sinks. In the plugin's
own process the sinks are stderr and its log file (`minicni.plugin.main`); in the agent's CNI
server, the agent's `logging` (`minicni.plugin.served`), so a served request logs to the agent's
stderr.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable

    Sink = Callable[[str, str], None]  # (level, message)


class Log:
    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def info(self, msg: str, *args: object) -> None:
        self._emit("INFO", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._emit("WARNING", msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._emit("ERROR", msg, args)

    def exception(self, msg: str, *args: object) -> None:
        """`error`, followed by the traceback of the exception being handled."""
        import traceback  # only on this path: a bug

        text = (msg % args if args else msg) + "\n" + traceback.format_exc().rstrip()
        self._write("ERROR", text)

    def _emit(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        if self.sinks:
            self._write(level, msg % args if args else msg)

    def _write(self, level: str, text: str) -> None:
        for sink in self.sinks:
            try:
                sink(level, text)
            except OSError:  # a full disk must not turn a command's result into an error
                continue


log = Log()
"""The plugin's one log."""
