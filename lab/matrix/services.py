"""Running Service cells: probe servers in the Services' endpoints, one client per (client,
Service), and the observations each Service cell is judged on.

A server runs in every endpoint pod for the whole Service phase (`ServiceServers`), answering
every client and printing what it saw, which a reader thread collects (`ServerLog`). A client
(`python -m lab.probes send --expect ...`) tries fresh connections to the ClusterIP until every
endpoint has answered, so one process serves all the cells of one (client, Service). Servers stop
when the phase ends: they exit when their stdin, a pipe from here, closes (through `kubectl exec -i`
too), or at the latest when their lifetime runs out.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from lab.matrix.cases import Case, Observation
from lab.matrix.executors import Endpoint, Executor, Inventory

GRACE_SECONDS = 0.5  # a server's line about a probe may trail the client's answer a little


class ServerLog:
    """What the servers printed, one record per probe token (as it streams in)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()

    def feed(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if isinstance(record, dict) and isinstance(record.get("token"), str):
            with self._changed:
                self._seen.setdefault(record["token"], record)
                self._changed.notify_all()

    def wait_for(self, tokens: Iterable[str], timeout: float) -> None:
        wanted = set(tokens)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not wanted <= self._seen.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def records(self, token_prefix: str, endpoint: str, proto: str) -> list[dict[str, Any]]:
        """What `endpoint`'s server saw of the attempts `<token_prefix>.<n>` over `proto`."""
        with self._changed:
            return [
                record
                for token, record in self._seen.items()
                if token.startswith(f"{token_prefix}.")
                and record.get("name") == endpoint
                and record.get("proto") == proto
            ]

    def get(self, token: str) -> dict[str, Any] | None:
        with self._changed:
            return self._seen.get(token)


def server_groups(cases: Sequence[Case]) -> dict[tuple[str, int], list[str]]:
    """(endpoint name, target port) -> protocols to serve there, for the Services probed."""
    groups: dict[tuple[str, int], list[str]] = {}
    for case in cases:
        if case.service is None:
            continue
        protos = groups.setdefault((case.dst.name, case.service.target_port), [])
        if case.proto not in protos:
            protos.append(case.proto)
    return groups


def serve_argv(endpoint: Endpoint, port: int, protos: Sequence[str], lifetime: float) -> list[str]:
    return [
        "serve",
        "--proto",
        ",".join(protos),
        "--port",
        str(port),
        "--name",
        endpoint.name,
        "--timeout",
        f"{lifetime:g}",
    ]


def client_argv(cases: Sequence[Case], token: str, timeout: float) -> list[str]:
    """The client of one (client endpoint, Service): every endpoint of `cases` expected."""
    service = cases[0].service
    assert service is not None
    expect = ",".join(f"{case.dst.name}={case.dst.ip}" for case in cases)
    return [
        "send",
        "--proto",
        service.proto,
        "--dst",
        service.cluster_ip,
        "--port",
        str(service.port),
        "--token",
        token,
        "--expect",
        expect,
        "--timeout",
        f"{timeout:g}",
    ]


class ServiceServers:
    """The probe servers of a Service phase, one per (endpoint, target port), with their log."""

    def __init__(
        self,
        executor: Executor,
        inventory: Inventory,
        cases: Sequence[Case],
        lifetime: float,
        launch_timeout: float,
    ) -> None:
        self.executor = executor
        self.inventory = inventory
        self.groups = server_groups(cases)
        self.lifetime = lifetime
        self.launch_timeout = launch_timeout
        self.log = ServerLog()
        self.errors: dict[str, str] = {}  # endpoint name -> why its server is not there
        self._processes: list[subprocess.Popen[bytes]] = []
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> ServiceServers:
        try:
            starting = []
            for (name, port), protos in self.groups.items():
                endpoint = self.inventory.endpoint(name)
                argv = serve_argv(endpoint, port, protos, self.lifetime)
                process = subprocess.Popen(
                    self.executor.command(endpoint, argv),
                    stdin=subprocess.PIPE,  # closed at the end: the server's signal to stop
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                self._processes.append(process)
                starting.append((name, process))
            deadline = time.monotonic() + self.launch_timeout
            for name, process in starting:
                error = _await_ready(process, deadline)
                if error:
                    self.errors[name] = f"the probe server in {name} did not start: {error}"
                reader = threading.Thread(target=self._read, args=(process,), daemon=True)
                reader.start()
                self._readers.append(reader)
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log.feed(line)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self._processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self._processes:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)
        for process in self._processes:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def observations(
    cases: Sequence[Case], token: str, client: dict[str, Any] | None, servers: ServiceServers
) -> dict[Case, Observation]:
    """Each Service cell's view of one client run: the client's answer for that endpoint, and what
    the endpoint's server saw of the client's attempts."""
    result: dict[Case, Observation] = {}
    if client is None or client.get("error"):
        why = f"client: {client['error']}" if client else "the client printed no result"
        return {case: Observation(error=why) for case in cases}
    answers = client.get("answers") or {}
    servers.log.wait_for(
        (a["token"] for a in answers.values() if isinstance(a, dict)), GRACE_SECONDS
    )
    for case in cases:
        if case.dst.name in servers.errors:
            result[case] = Observation(error=servers.errors[case.dst.name])
            continue
        answer = answers.get(case.dst.name)
        sender = {key: value for key, value in client.items() if key != "answers"}
        sender["reply"] = answer is not None
        sender["reply_src"] = answer.get("reply_src") if answer else None
        seen = servers.log.get(answer["token"]) if answer else None
        if seen is None:  # no good answer: did any attempt reach this endpoint at all?
            reached = servers.log.records(token, case.dst.name, case.proto)
            seen = reached[0] if reached else None
        receiver = (
            {"received": True, "observed_src": seen.get("observed_src")}
            if seen
            else {"received": False, "observed_src": None}
        )
        result[case] = Observation(sender=sender, receiver=receiver)
    return result


def _await_ready(process: subprocess.Popen[bytes], deadline: float) -> str:
    """'' once the server wrote `ready` on stderr, else what it wrote (or that it wrote nothing)."""
    assert process.stderr is not None
    fd, seen = process.stderr.fileno(), b""
    while b"ready\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return seen.decode(errors="replace").strip()[-300:] or "no output in time"
        chunk = os.read(fd, 4096)
        if not chunk:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            return (seen.decode(errors="replace") + out).strip()[-300:] or "it exited"
        seen += chunk
    return ""
