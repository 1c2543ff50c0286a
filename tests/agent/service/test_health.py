"""Metrics in Prometheus text format, and the health endpoints over HTTP on 127.0.0.1."""

import urllib.error
import urllib.request

import pytest

from minicni.agent.service.health import HealthServer, parse_address
from minicni.agent.service.metrics import Metrics


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


def test_endpoints() -> None:
    metrics = Metrics()
    metrics.inc("errors_total", stage="firewall")
    ready = [False]
    server = HealthServer(("127.0.0.1", 0), metrics, lambda: ready[0])
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz")[0] == 503
        ready[0] = True
        assert get(f"{base}/readyz") == (200, "ready\n")
        status, body = get(f"{base}/metrics")
        assert status == 200
        assert 'minicni_agent_errors_total{stage="firewall"} 1' in body
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()
