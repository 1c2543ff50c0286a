"""The runner drives real probe processes over 127.0.0.1 through an executor that runs them
locally: no root, no namespace, traffic only on loopback."""

from __future__ import annotations

import contextlib
import random
import socket
import sys
from collections.abc import Sequence

from lab.matrix.cases import NATED, NOT_APPLICABLE, OK, PROBE_ERROR, UNREACHABLE, build_cases
from lab.matrix.executors import POD, Endpoint, Inventory, Service
from lab.matrix.runner import MatrixRunner


class LoopbackExecutor:
    """Runs probes right here, receivers listening on 127.0.0.1 only. `break_port` makes every
    receiver listen elsewhere (the probe never arrives); `recv_error` makes receivers fail."""

    def __init__(self, break_port: bool = False, recv_error: bool = False) -> None:
        self.break_port = break_port
        self.recv_error = recv_error

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if argv[0] == "recv":
            argv += ["--bind", "127.0.0.1"]
            if self.break_port:
                argv[argv.index("--port") + 1] = str(int(argv[argv.index("--port") + 1]) + 1)
            if self.recv_error:
                argv += ["--bind", "192.0.2.1"]  # not an address of this host: bind fails
        return [sys.executable, "-m", "lab.probes", *argv]


def loopback_inventory(src_ip: str) -> Inventory:
    return Inventory.build(
        [
            Endpoint("a/p0", POD, "a", src_ip, "-"),
            Endpoint("b/p0", POD, "b", "127.0.0.1", "-"),
        ]
    )


def run_loopback(executor: LoopbackExecutor, src_ip: str = "127.0.0.1", retries: int = 0):  # type: ignore[no-untyped-def]
    inventory = loopback_inventory(src_ip)
    cases = [
        c
        for c in build_cases(inventory, ["tcp", "udp"], port_base=random.randint(40000, 60000))
        if c.dst.name == "b/p0"
    ]
    runner = MatrixRunner(executor, timeout=0.5, retries=retries, workers=4)
    return runner.run(inventory, cases)


def test_a_dual_stack_pair_is_probed_once_per_family_over_loopback() -> None:
    inventory = Inventory.build(
        [
            Endpoint("a/p0", POD, "a", "127.0.0.1", "-", ips=("127.0.0.1", "::1")),
            Endpoint("b/p0", POD, "b", "127.0.0.1", "-", ips=("127.0.0.1", "::1")),
        ]
    )

    class DualLoopback(LoopbackExecutor):
        def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
            if argv[0] == "recv" and "ipv6" in argv:
                return [sys.executable, "-m", "lab.probes", *argv, "--bind", "::1"]
            return super().command(endpoint, argv)

    port = random.randint(40000, 60000)
    cases = [
        c for c in build_cases(inventory, ["tcp", "udp"], port_base=port) if c.dst.name == "b/p0"
    ]
    report = MatrixRunner(DualLoopback(), timeout=0.5, retries=0, workers=4).run(inventory, cases)
    assert [(c.case.grid, c.verdict) for c in report.cells] == [
        ("tcp", OK), ("udp", OK), ("tcp6", OK), ("udp6", OK)
    ]  # fmt: skip
    observed = [c.observation.receiver["observed_src"] for c in report.cells]  # type: ignore[index]
    assert observed == ["127.0.0.1", "127.0.0.1", "::1", "::1"]


def test_runner_ok_over_loopback() -> None:
    report = run_loopback(LoopbackExecutor())
    assert [c.verdict for c in report.cells] == [OK, OK]
    assert report.ok
    assert all(c.observation.receiver["observed_src"] == "127.0.0.1" for c in report.cells)  # type: ignore[index]


def test_runner_sees_a_wrong_source_as_nat() -> None:
    # the pod claims 127.0.0.2 but the probe leaves from 127.0.0.1: exactly what NAT looks like
    report = run_loopback(LoopbackExecutor(), src_ip="127.0.0.2")
    assert [c.verdict for c in report.cells] == [NATED, NATED]
    assert not report.ok


def test_runner_sees_a_lost_probe_as_unreachable_and_retries_it() -> None:
    report = run_loopback(LoopbackExecutor(break_port=True), retries=1)
    assert [c.verdict for c in report.cells] == [UNREACHABLE, UNREACHABLE]
    assert [c.attempts for c in report.cells] == [2, 2]
    assert all("reproduce" not in c.detail and c.reproduce for c in report.cells)


def test_runner_reports_a_probe_that_cannot_run_as_an_error() -> None:
    report = run_loopback(LoopbackExecutor(recv_error=True))
    assert [c.verdict for c in report.cells] == [PROBE_ERROR, PROBE_ERROR]
    assert "receiver" in report.cells[0].detail


class FlakyExecutor(LoopbackExecutor):
    """Breaks the first attempt of every cell only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        port = argv[list(argv).index("--port") + 1]
        self.break_port = argv[0] == "recv" and port not in self.seen
        if argv[0] == "recv":
            self.seen.add(port)
        return super().command(endpoint, argv)


def test_a_cell_that_passes_on_retry_is_ok_and_flaky() -> None:
    inventory = loopback_inventory("127.0.0.1")
    cases = [c for c in build_cases(inventory, ["udp"], port_base=random.randint(40000, 60000))]
    report = MatrixRunner(FlakyExecutor(), timeout=0.5, retries=2, workers=1).run(
        inventory, cases[:1]
    )
    (cell,) = report.cells
    assert (cell.verdict, cell.attempts, cell.flaky) == (OK, 2, True)
    assert report.flaky() == [cell]


def test_report_lookup_of_missing_cells_is_not_applicable() -> None:
    report = run_loopback(LoopbackExecutor())
    a, b = report.inventory.endpoints
    assert report.verdict("tcp", a, b) == OK
    assert report.verdict("icmp", a, b) == NOT_APPLICABLE


class ServingExecutor(LoopbackExecutor):
    """Probe servers on 127.0.0.1 too; `serve_elsewhere` moves them off the Service's port."""

    def __init__(self, serve_elsewhere: bool = False) -> None:
        super().__init__()
        self.serve_elsewhere = serve_elsewhere
        self.served: list[list[str]] = []

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if argv[0] == "serve":
            argv += ["--bind", "127.0.0.1"]
            if self.serve_elsewhere:
                argv[argv.index("--port") + 1] = str(int(argv[argv.index("--port") + 1]) + 1)
            self.served.append(argv)
        return super().command(endpoint, argv)


def free_ports(count: int) -> int:
    """A first port of `count` consecutive ones free on 127.0.0.1 for TCP and UDP now."""
    while True:
        first = random.randint(40000, 60000)
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        sock = held.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def service_run(executor: ServingExecutor, retries: int = 0):  # type: ignore[no-untyped-def]
    """A "Service" on 127.0.0.1 whose one endpoint is b/p0 (no kube-proxy: the probe goes
    straight to the server), probed by a/p0 over TCP and UDP."""
    port = free_ports(2)  # the Service's port, and the one `serve_elsewhere` moves the server to
    services = [
        Service(f"svc-{proto}", proto, "127.0.0.1", port, port, ("b/p0",))
        for proto in ("tcp", "udp")
    ]
    inventory = Inventory.build(loopback_inventory("127.0.0.1").endpoints, services=services)
    cases = [
        c for c in build_cases(inventory, ["tcp", "udp"]) if c.service and c.src.name == "a/p0"
    ]
    runner = MatrixRunner(executor, timeout=0.5, retries=retries, workers=4, service_timeout=1.0)
    return runner.run(inventory, cases)


def test_service_cells_over_loopback() -> None:
    executor = ServingExecutor()
    report = service_run(executor)
    assert [(c.case.label, c.verdict) for c in report.cells] == [
        ("tcp a/p0 -> svc-tcp (b/p0)", OK),
        ("udp a/p0 -> svc-udp (b/p0)", OK),
    ]
    # one server in the endpoint for both Services (same target port), for the whole phase; the
    # others are only written into the reproduce lines
    assert executor.served[0][:3] == ["serve", "--proto", "tcp,udp"]
    assert sum("tcp,udp" in argv for argv in executor.served) == 1
    cell = report.cells[0]
    assert cell.observation.sender and cell.observation.sender["reply_src"] == "127.0.0.1"
    assert (
        "serve --proto tcp --port" in cell.reproduce and "--expect b/p0=127.0.0.1" in cell.reproduce
    )


def test_a_service_whose_endpoint_does_not_answer_is_unreachable() -> None:
    report = service_run(ServingExecutor(serve_elsewhere=True), retries=1)
    verdicts = [(c.verdict, c.detail) for c in report.cells]
    assert [c.verdict for c in report.cells] == [UNREACHABLE, UNREACHABLE], verdicts
    assert all(c.attempts == 2 for c in report.cells)
    assert report.cells[0].detail.startswith("no probe through svc-tcp reached b/p0 (")
