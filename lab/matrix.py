"""The connectivity matrix: cases -> observations -> verdicts.

A cell is (protocol, source endpoint, destination endpoint). It passes only if the probe arrived,
the receiver saw the sender's own address as source, and the reply came back. Verdicts:

    .  ok            X  unreachable (or the reply never came back)
    N  reachable, but the receiver saw another source address (NAT)
    !  the probe itself failed          -  not applicable (no case for this pair)

A cell that is not `.` is probed again, up to `retries` more times; a cell that passed only on a
retry keeps `.` but is reported as flaky. The runner only needs an `Executor` to build argv lists,
so the same runner serves the netns lab and a kind cluster.
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
from dataclasses import dataclass, field
from typing import Any

from lab.executors import NODE, POD, Endpoint, Executor, Inventory

OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE = ".", "X", "N", "!", "-"
VERDICTS = (OK, UNREACHABLE, NATED, PROBE_ERROR, NOT_APPLICABLE)
PROTOCOLS = ("icmp", "tcp", "udp")

POD_POD_SAME = "pod->pod same node"
POD_POD_OTHER = "pod->pod other node"
POD_OWN_NODE = "pod->own node"
POD_OTHER_NODE = "pod->other node"
NODE_POD_SAME = "node->pod same node"
NODE_POD_OTHER = "node->pod other node"
CASE_KINDS = (
    POD_POD_SAME,
    POD_POD_OTHER,
    POD_OWN_NODE,
    POD_OTHER_NODE,
    NODE_POD_SAME,
    NODE_POD_OTHER,
)


def case_kind(src: Endpoint, dst: Endpoint) -> str | None:
    """Which case a (source, destination) pair is, or None when the matrix has no such case."""
    if src.name == dst.name:
        return None
    same = src.node == dst.node
    if src.kind == POD and dst.kind == POD:
        return POD_POD_SAME if same else POD_POD_OTHER
    if src.kind == POD and dst.kind == NODE:
        return POD_OWN_NODE if same else POD_OTHER_NODE
    if src.kind == NODE and dst.kind == POD:
        return NODE_POD_SAME if same else NODE_POD_OTHER
    return None  # node -> node is the underlay's business, not the CNI's


@dataclass(frozen=True)
class Case:
    kind: str
    proto: str
    src: Endpoint
    dst: Endpoint
    port: int

    @property
    def label(self) -> str:
        return f"{self.proto} {self.src.name} -> {self.dst.name}"


def build_cases(
    inventory: Inventory,
    protocols: Sequence[str] = PROTOCOLS,
    kinds: Sequence[str] = CASE_KINDS,
    port_base: int = 31000,
) -> list[Case]:
    """Every applicable cell, each with its own port so cells can run in parallel."""
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols: {', '.join(sorted(unknown))}")
    cases: list[Case] = []
    for proto in protocols:
        for src in inventory.endpoints:
            for dst in inventory.endpoints:
                kind = case_kind(src, dst)
                if kind is not None and kind in kinds:
                    cases.append(Case(kind, proto, src, dst, port_base + len(cases)))
    return cases


@dataclass(frozen=True)
class Observation:
    """What the two probe processes printed (their JSON lines), or why there is nothing."""

    sender: dict[str, Any] | None = None
    receiver: dict[str, Any] | None = None
    error: str | None = None


def judge(case: Case, observation: Observation) -> tuple[str, str]:
    """(verdict, explanation) for one attempt. Pure: the heart of the gate, unit-tested."""
    if observation.error:
        return PROBE_ERROR, observation.error
    sender, receiver = observation.sender, observation.receiver
    if sender is None or receiver is None:
        return PROBE_ERROR, "a probe printed no result"
    for role, result in (("sender", sender), ("receiver", receiver)):
        if result.get("error"):
            return PROBE_ERROR, f"{role}: {result['error']}"
    if not receiver.get("received"):
        return UNREACHABLE, "the probe never arrived"
    observed = receiver.get("observed_src")
    own = case.src.ip if case.src.kind == POD else sender.get("local")
    if observed != own:
        return NATED, f"the receiver saw source {observed}, the sender is {own}"
    if not sender.get("reply"):
        return UNREACHABLE, "the probe arrived with the right source, but no reply came back"
    return OK, ""


@dataclass
class CellResult:
    case: Case
    verdict: str
    detail: str
    attempts: int
    observation: Observation
    duration_s: float
    reproduce: str = ""

    @property
    def flaky(self) -> bool:
        return self.verdict == OK and self.attempts > 1


@dataclass
class MatrixReport:
    inventory: Inventory
    protocols: tuple[str, ...]
    cells: list[CellResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(cell.verdict == OK for cell in self.cells)

    def wrong(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.verdict != OK]

    def flaky(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.flaky]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for cell in self.cells:
            counts[cell.verdict] += 1
        return counts

    def verdict(self, proto: str, src: Endpoint, dst: Endpoint) -> str:
        for cell in self.cells:
            if cell.case.proto == proto and cell.case.src == src and cell.case.dst == dst:
                return cell.verdict
        return NOT_APPLICABLE


ProgressCallback = Callable[[CellResult, int, int], None]


@dataclass
class MatrixRunner:
    """Runs every case with a bounded pool of workers; each attempt is two fresh processes."""

    executor: Executor
    timeout: float = 1.5  # how long a sender waits for its reply
    retries: int = 1
    workers: int = 12
    launch_timeout: float = 10.0  # how long a receiver may take to start listening
    progress: ProgressCallback | None = None

    def run(self, inventory: Inventory, cases: Sequence[Case]) -> MatrixReport:
        compile_probes()
        protocols = tuple(dict.fromkeys(case.proto for case in cases))
        report = MatrixReport(inventory, protocols)
        started = time.monotonic()
        done = 0
        with ThreadPoolExecutor(max_workers=max(self.workers, 1)) as pool:
            for result in pool.map(self.run_case, cases):
                report.cells.append(result)
                done += 1
                if self.progress:
                    self.progress(result, done, len(cases))
        report.duration_s = time.monotonic() - started
        return report

    def run_case(self, case: Case) -> CellResult:
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            token = f"{case.proto}-{case.port}-{secrets.token_hex(4)}"
            observation = self.observe(case, token)
            verdict, detail = judge(case, observation)
            if verdict == OK or attempts > self.retries:
                break
        return CellResult(
            case,
            verdict,
            detail,
            attempts,
            observation,
            time.monotonic() - started,
            reproduce=self.reproduce(case),
        )

    def argv(self, case: Case, token: str) -> tuple[list[str], list[str]]:
        common = ["--proto", case.proto, "--port", str(case.port), "--token", token]
        recv_timeout = self.timeout + self.launch_timeout
        recv = ["recv", *common, "--timeout", f"{recv_timeout:g}"]
        send = ["send", *common, "--dst", case.dst.ip, "--timeout", f"{self.timeout:g}"]
        return self.executor.command(case.dst, recv), self.executor.command(case.src, send)

    def reproduce(self, case: Case) -> str:
        """A shell line a person can paste to run this cell again, by hand."""
        import shlex

        recv, send = self.argv(case, "repro")
        return f"{shlex.join(recv)} & sleep 1; {shlex.join(send)}; wait"

    def observe(self, case: Case, token: str) -> Observation:
        recv_argv, send_argv = self.argv(case, token)
        receiver = subprocess.Popen(
            recv_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            ready, early_stderr = _await_ready(receiver, self.launch_timeout)
            if not ready:
                return Observation(error=f"receiver did not start: {_tail(early_stderr)}")
            try:
                sent = subprocess.run(
                    send_argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=self.timeout + self.launch_timeout,
                )
            except subprocess.TimeoutExpired:
                return Observation(error="sender hung")
            sender = _last_json(sent.stdout)
            if sender is None:
                return Observation(error=f"sender printed no result: {_tail(sent.stderr)}")
            receiver_result = _collect_receiver(receiver, grace=0.5)
            return Observation(sender=sender, receiver=receiver_result)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()


def compile_probes() -> None:
    """Write the probes' bytecode once: with PYTHONDONTWRITEBYTECODE set (as in many CI images)
    each of the hundreds of probe processes would otherwise compile the module again."""
    import py_compile

    from lab import probes

    with contextlib.suppress(OSError, py_compile.PyCompileError):  # read-only: slower, correct
        py_compile.compile(probes.__file__, doraise=True)


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


def _collect_receiver(process: subprocess.Popen[bytes], grace: float) -> dict[str, Any]:
    """The receiver's result; one that is still waiting after the sender gave up saw nothing."""
    try:
        stdout, _stderr = process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"received": False, "observed_src": None}
    result = _last_json(stdout)
    if result is None:
        return {"error": f"receiver exited {process.returncode} without a result"}
    return result


def _last_json(output: bytes) -> dict[str, Any] | None:
    import json

    for line in reversed(output.decode(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _tail(stderr: bytes, limit: int = 300) -> str:
    text = stderr.decode(errors="replace").strip().replace("\n", " | ")
    return text[-limit:] or "no output"
