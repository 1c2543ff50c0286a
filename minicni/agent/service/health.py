"""/healthz, /readyz and /metrics over HTTP, served from a daemon thread (stdlib only).

/healthz fails only when a restart could help: the reconcile loop or the node source's thread
stopped making progress. /readyz fails while the node's pod network is not what it should be: no
first complete pass, the conflist not in effect, or a node set that may be stale because the node
source has not heard from the API server. Both answer 503 with one reason a line. /readyz also
lists warnings, one a line, whatever its status: what the node lacks that does not hold it back
(e.g. no `loopback` plugin for the runtime).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minicni.agent.service.metrics import Metrics
from minicni.agent.service.sources import NodeSource

Reasons = Callable[[], list[str]]


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` or `:port` (all addresses)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"health address {text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class AgentHealth:
    """The checks behind the endpoints: the reconcile loop and the node source."""

    def __init__(
        self,
        not_ready: Reasons,
        last_pass: Callable[[], float],
        source: NodeSource,
        stuck_after: float,
        clock: Callable[[], float] = time.monotonic,
        warnings: Reasons = list,
    ) -> None:
        self._not_ready = not_ready
        self.warnings = warnings
        self._last_pass = last_pass
        self._source = source
        self._stuck_after = stuck_after
        self._clock = clock

    def live(self) -> list[str]:
        reasons = []
        idle = self._clock() - self._last_pass()
        if idle > self._stuck_after:
            reasons.append(f"reconcile loop: no pass for {idle:.0f} s")
        source = self._source.health()
        if not source.live:
            reasons.append(source.reason)
        return reasons

    def ready(self) -> list[str]:
        reasons = list(self._not_ready())
        source = self._source.health()
        if not source.ready:
            reasons.append(source.reason)
        return reasons


class HealthServer:
    def __init__(
        self,
        address: tuple[str, int],
        metrics: Metrics,
        live: Reasons,
        ready: Reasons,
        warnings: Reasons = list,
    ) -> None:
        handler = _handler(metrics, live, ready, warnings)
        self._server = ThreadingHTTPServer(address, handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    metrics: Metrics, live: Reasons, ready: Reasons, warnings: Reasons
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._check(live(), "ok", "not live")
            elif path == "/readyz":
                self._check(ready(), "ready", "not ready", warnings())
            elif path == "/metrics":
                self._reply(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._reply(404, "not found\n")

        def _check(
            self, reasons: list[str], good: str, bad: str, warned: Sequence[str] = ()
        ) -> None:
            notes = "".join(f"warning: {warning}\n" for warning in warned)
            if reasons:
                self._reply(503, "".join(f"{bad}: {reason}\n" for reason in reasons) + notes)
            else:
                self._reply(200, f"{good}\n{notes}")

        def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would flood the log."""

    return Handler
