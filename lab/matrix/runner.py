"""Runs the matrix's cells: two fresh probe processes per attempt, through an executor.

A cell that is not `.` is probed again, up to `retries` more times; a cell that passed only on a
retry keeps `.` but is reported as flaky. The runner only needs an `Executor` to build argv lists,
so the same runner serves the netns lab and a kind cluster.

Pair cells run first; then the Service cells (`lab.matrix.services`): a probe server in each
endpoint for the whole phase, and per (client, Service) one client process per attempt, which
covers every endpoint of the Service. Service cells always use the socket probes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lab.matrix import services
from lab.matrix.cases import OK, Case, CellResult, MatrixReport, Observation, judge
from lab.matrix.executors import IPV6, Executor, Inventory

ProgressCallback = Callable[[CellResult, int, int], None]
Observe = Callable[[Sequence[Case], str], dict[Case, Observation]]


def group_cases(cases: Sequence[Case]) -> list[tuple[Case, ...]]:
    """Cells of one (source, destination, family), probed together by one receiver and one
    sender (one process each for every protocol: a third of the processes of one pair per
    protocol)."""
    groups: dict[tuple[str, str, str], list[Case]] = {}
    for case in cases:
        if case.service is not None:  # the cells of one (client, Service) share a client
            key = (case.src.name, f"service {case.service.name}", case.family)
        else:
            key = (case.src.name, case.dst.name, case.family)
        groups.setdefault(key, []).append(case)
    return [tuple(group) for group in groups.values()]


@dataclass
class MatrixRunner:
    """Runs every case with a bounded pool of workers; each attempt is two fresh processes."""

    executor: Executor
    timeout: float = 1.5  # how long a sender waits for its reply
    retries: int = 1
    workers: int = 12
    launch_timeout: float = 10.0  # how long a receiver may take to start listening
    progress: ProgressCallback | None = None
    engine: str = "socket"  # or "scapy": one protocol per process, sniffed off the wire
    service_timeout: float = 3.0  # how long a Service client tries to reach every endpoint

    def run(self, inventory: Inventory, cases: Sequence[Case]) -> MatrixReport:
        compile_probes()
        protocols = tuple(dict.fromkeys(case.proto for case in cases))
        report = MatrixReport(inventory, protocols)
        started = time.monotonic()
        pairs = [case for case in cases if case.service is None]
        through_services = [case for case in cases if case.service is not None]
        results: dict[Case, CellResult] = {}

        def record(result: CellResult) -> None:
            results[result.case] = result
            if self.progress:
                self.progress(result, len(results), len(cases))

        groups = group_cases(pairs) if self.engine == "socket" else [(c,) for c in pairs]
        self._run_groups(groups, self.observe, record)
        if through_services:
            service_groups = group_cases(through_services)
            with services.ServiceServers(
                self.executor,
                inventory,
                through_services,
                self._server_lifetime(len(service_groups)),
                self.launch_timeout,
            ) as servers:

                def observe(group: Sequence[Case], token: str) -> dict[Case, Observation]:
                    return self.observe_service(group, token, servers)

                self._run_groups(service_groups, observe, record)
        report.cells = [results[case] for case in cases]
        report.duration_s = time.monotonic() - started
        return report

    def _run_groups(
        self,
        groups: Sequence[tuple[Case, ...]],
        observe: Observe,
        record: Callable[[CellResult], None],
    ) -> None:
        pool = ThreadPoolExecutor(max_workers=max(self.workers, 1))
        try:
            for group_results in pool.map(lambda group: self.run_group(group, observe), groups):
                for result in group_results:
                    record(result)
        finally:  # Ctrl-C: finish the probes in flight, start no more
            pool.shutdown(wait=True, cancel_futures=True)

    def _server_lifetime(self, groups: int) -> float:
        """Long enough for every Service client with its retries; servers normally stop sooner,
        when the phase ends (see `lab.matrix.services`)."""
        rounds = -(-groups // max(self.workers, 1)) * (self.retries + 1)
        return 60.0 + self.launch_timeout + rounds * (self.service_timeout + self.launch_timeout)

    def run_group(self, group: Sequence[Case], observe: Observe | None = None) -> list[CellResult]:
        """Probe the group until every cell is `.` or out of retries; only wrong cells retry."""
        started = time.monotonic()
        attempts = dict.fromkeys(group, 0)
        done: list[CellResult] = []
        pending = list(group)
        observe = observe or self.observe
        while pending:
            prefix = "s" if group[0].service is not None else ""
            token = f"{prefix}{group[0].port}-{secrets.token_hex(4)}"
            observations = observe(pending, token)
            still = []
            for case in pending:
                attempts[case] += 1
                verdict, detail = judge(case, observations[case])
                if verdict == OK or attempts[case] > self.retries:
                    elapsed = time.monotonic() - started
                    done.append(
                        CellResult(
                            case,
                            verdict,
                            detail,
                            attempts[case],
                            observations[case],
                            elapsed,
                            reproduce=self.reproduce(case),
                        )
                    )
                else:
                    still.append(case)
            pending = still
        return done

    def argv(self, cases: Sequence[Case], token: str) -> tuple[list[str], list[str]]:
        first, port = cases[0], min(c.port for c in cases)
        protos = ",".join(case.proto for case in cases)
        common = ["--proto", protos, "--port", str(port), "--token", token]
        if first.family == IPV6:
            common += ["--family", IPV6]
        if self.engine != "socket":
            common += ["--engine", self.engine]
        recv_timeout = self.timeout + self.launch_timeout
        recv = ["recv", *common, "--timeout", f"{recv_timeout:g}"]
        send = ["send", *common, "--dst", first.dst_ip, "--timeout", f"{self.timeout:g}"]
        return self.executor.command(first.dst, recv), self.executor.command(first.src, send)

    def reproduce(self, case: Case) -> str:
        """A shell line a person can paste to run this cell again, by hand."""
        import shlex

        if case.service is not None:
            serve = services.serve_argv(case.dst, case.service.target_port, [case.proto], 30)
            client = services.client_argv([case], "repro", self.service_timeout)
            server = self.executor.command(case.dst, serve)
            sender = self.executor.command(case.src, client)
            return f"{shlex.join(server)} & sleep 1; {shlex.join(sender)}; kill $!"
        recv, send = self.argv([case], "repro")
        return f"{shlex.join(recv)} & sleep 1; {shlex.join(send)}; wait"

    def observe_service(
        self, cases: Sequence[Case], token: str, servers: services.ServiceServers
    ) -> dict[Case, Observation]:
        """One client through the Service of `cases` (one client endpoint) to its endpoints."""
        argv = services.client_argv(cases, token, self.service_timeout)
        try:
            sent = subprocess.run(
                self.executor.command(cases[0].src, argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.service_timeout + self.launch_timeout,
            )
        except subprocess.TimeoutExpired:
            return {case: Observation(error="client hung") for case in cases}
        client = _by_proto(sent.stdout).get(cases[0].proto)
        if client is None:
            client = {"error": f"printed no result: {_tail(sent.stderr)}"}
        return services.observations(cases, token, client, servers)

    def observe(self, cases: Sequence[Case], token: str) -> dict[Case, Observation]:
        """One receiver and one sender for the cases (one pair): an observation per cell."""
        by_proto = self._observe_pair(cases, token)
        return {case: by_proto[case.proto] for case in cases}

    def _observe_pair(self, cases: Sequence[Case], token: str) -> dict[str, Observation]:
        """Run one receiver and one sender for the cases (one pair); an observation per proto."""
        protos = [case.proto for case in cases]
        recv_argv, send_argv = self.argv(cases, token)
        receiver = subprocess.Popen(
            recv_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            ready, early_stderr = _await_ready(receiver, self.launch_timeout)
            if not ready:
                receiver_out = _finish(receiver, grace=0.5)[0]
                reasons = _by_proto(receiver_out)
                return {
                    p: Observation(
                        error=_first_error(reasons.get(p))
                        or f"receiver did not start: {_tail(early_stderr)}"
                    )
                    for p in protos
                }
            try:
                sent = subprocess.run(
                    send_argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=self.timeout + self.launch_timeout,
                )
            except subprocess.TimeoutExpired:
                return {p: Observation(error="sender hung") for p in protos}
            senders = _by_proto(sent.stdout)
            receiver_out, stopped = _finish(receiver, grace=0.5)
            receivers = _by_proto(receiver_out)
            observations = {}
            for proto in protos:
                sender = senders.get(proto)
                if sender is None:
                    why = f"sender printed no result: {_tail(sent.stderr)}"
                    observations[proto] = Observation(error=why)
                    continue
                seen = receivers.get(proto)
                if seen is None and stopped:  # killed before it could say: it saw nothing
                    seen = {"received": False, "observed_src": None}
                observations[proto] = Observation(sender=sender, receiver=seen)
            return observations
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()


def compile_probes() -> None:
    """Write the probes' bytecode once: with PYTHONDONTWRITEBYTECODE set (as in many CI images)
    each of the hundreds of probe processes would otherwise compile its modules again."""
    import py_compile
    from pathlib import Path

    from lab import probes

    for module in sorted(Path(probes.__file__).parent.glob("*.py")):
        with contextlib.suppress(OSError, py_compile.PyCompileError):  # read-only: slower, right
            py_compile.compile(str(module), doraise=True)


def _await_ready(process: subprocess.Popen[bytes], timeout: float) -> tuple[bool, bytes]:
    """Wait for the receiver's `ready` line on stderr, reading the raw fd (not the buffer)."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while b"ready\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False, seen
        chunk = os.read(fd, 4096)
        if not chunk:
            return False, seen
        seen += chunk
    return True, seen


def _finish(process: subprocess.Popen[bytes], grace: float) -> tuple[bytes, bool]:
    """The receiver's stdout, and whether it had to be stopped. A receiver still waiting after
    the sender is done has seen nothing more: SIGTERM makes it report that, SIGKILL follows."""
    try:
        return process.communicate(timeout=grace)[0], False
    except subprocess.TimeoutExpired:
        pass
    process.terminate()
    try:
        return process.communicate(timeout=1.0)[0], True
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0], True


def _by_proto(output: bytes) -> dict[str, dict[str, Any]]:
    """The probe's JSON lines, keyed by protocol (lines that are not JSON are ignored)."""
    import json

    results: dict[str, dict[str, Any]] = {}
    for line in output.decode(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("proto"), str):
            results[value["proto"]] = value
    return results


def _first_error(result: dict[str, Any] | None) -> str | None:
    return f"receiver: {result['error']}" if result and result.get("error") else None


def _tail(stderr: bytes, limit: int = 300) -> str:
    text = stderr.decode(errors="replace").strip().replace("\n", " | ")
    return text[-limit:] or "no output"
