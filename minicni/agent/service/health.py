"""/healthz, /readyz and /metrics over HTTP, served from a daemon thread (stdlib only)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minicni.agent.service.metrics import Metrics


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` or `:port` (all addresses)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"health address {text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class HealthServer:
    def __init__(
        self, address: tuple[str, int], metrics: Metrics, is_ready: Callable[[], bool]
    ) -> None:
        handler = _handler(metrics, is_ready)
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


def _handler(metrics: Metrics, is_ready: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._reply(200, "ok\n")
            elif path == "/readyz":
                ready = is_ready()
                self._reply(200 if ready else 503, "ready\n" if ready else "not ready\n")
            elif path == "/metrics":
                self._reply(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._reply(404, "not found\n")

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
