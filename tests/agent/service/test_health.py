"""Metrics in Prometheus text format, and the health endpoints over HTTP on 127.0.0.1."""

import urllib.error
import urllib.request

import pytest

from minicni.agent.service.health import AgentHealth, HealthServer, parse_address
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.sources import SourceHealth


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.inc("reconciles_total", result="ok")
    metrics.inc("reconciles_total", result="ok")
    metrics.observe("reconcile_duration_seconds", 0.25)
    metrics.replace_family("routes", {"host-gw": 2, "vxlan": 0}, "backend")
    metrics.replace_family("routes", {"host-gw": 1}, "backend")
    text = metrics.render()
    assert "# TYPE minicni_agent_reconciles_total counter" in text
    assert 'minicni_agent_reconciles_total{result="ok"} 2' in text
    assert "minicni_agent_reconcile_duration_seconds_sum 0.25" in text
    assert "minicni_agent_reconcile_duration_seconds_count 1" in text
    assert 'minicni_agent_routes{backend="host-gw"} 1' in text
    assert 'backend="vxlan"' not in text
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith("minicni_agent_"), line


@pytest.mark.parametrize(
    ("text", "address"),
    [(":9099", ("0.0.0.0", 9099)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9", ("::1", 9))],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


def test_parse_address_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_address("localhost")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_endpoints_answer_with_the_reasons() -> None:
    metrics = Metrics()
    metrics.inc("errors_total", stage="firewall")
    not_ready = ["no complete reconcile yet"]
    not_live: list[str] = []
    server = HealthServer(("127.0.0.1", 0), metrics, lambda: not_live, lambda: not_ready)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "not ready: no complete reconcile yet\n")
        not_ready.clear()
        assert get(f"{base}/readyz") == (200, "ready\n")
        not_live.append("reconcile loop: no pass for 400 s")
        assert get(f"{base}/healthz") == (503, "not live: reconcile loop: no pass for 400 s\n")
        status, body = get(f"{base}/metrics")
        assert status == 200
        assert 'minicni_agent_errors_total{stage="firewall"} 1' in body
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_readyz_lists_warnings_whatever_its_status() -> None:
    warnings = ["no executable 'loopback' in /opt/cni/bin"]
    not_ready: list[str] = []
    server = HealthServer(
        ("127.0.0.1", 0), Metrics(), lambda: [], lambda: not_ready, lambda: warnings
    )
    server.start()
    try:
        readyz = f"http://127.0.0.1:{server.port}/readyz"
        assert get(readyz) == (200, "ready\nwarning: no executable 'loopback' in /opt/cni/bin\n")
        not_ready.append("no complete reconcile yet")
        assert get(readyz) == (
            503,
            "not ready: no complete reconcile yet\n"
            "warning: no executable 'loopback' in /opt/cni/bin\n",
        )
        warnings.clear()
        not_ready.clear()
        assert get(readyz) == (200, "ready\n")
    finally:
        server.stop()


class Source:
    def __init__(self) -> None:
        self.state = SourceHealth()

    def health(self) -> SourceHealth:
        return self.state


def test_agent_health_joins_the_loop_and_the_node_source() -> None:
    now = [1000.0]
    source = Source()
    reconciler_reasons: list[str] = []
    health = AgentHealth(
        lambda: reconciler_reasons, lambda: 990.0, source, stuck_after=60, clock=lambda: now[0]
    )
    assert health.live() == [] and health.ready() == []
    source.state = SourceHealth(True, False, "node source: no answer from the API server for 200 s")
    assert health.ready() == ["node source: no answer from the API server for 200 s"]
    assert health.live() == []  # restarting would not bring the API server back
    reconciler_reasons.append("the conflist is not in effect")
    assert len(health.ready()) == 2
    now[0] = 1100.0
    assert health.live() == ["reconcile loop: no pass for 110 s"]
    source.state = SourceHealth(False, False, "node source: no progress for 400 s")
    assert "node source: no progress for 400 s" in health.live()
