"""The Service probes over 127.0.0.1: a server answering with its name, a client that keeps
trying until every expected endpoint answered, the source a UDP answer came from, and what the
client reads from a route table to expect."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lab.probes.__main__ import EXIT_OK, UsageError, parse
from lab.probes.service import default_gateway, egress_address, parse_expected
from lab.probes.wire import parse_service_request, service_answer

PROBES = [sys.executable, "-m", "lab.probes"]
LOOPBACK = ["--bind", "127.0.0.1", "--timeout", "30"]


def start_server(port: int, name: str = "b/p0", protos: str = "tcp,udp") -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [*PROBES, "serve", "--proto", protos, "--port", str(port), "--name", name, *LOOPBACK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None and server.stderr.readline() == "ready\n"
    return server


def client(proto: str, port: int, expect: str, timeout: float = 3.0) -> dict[str, Any]:
    more = ["--token", "t1", "--expect", expect, "--timeout", str(timeout)]
    done = subprocess.run(
        [*PROBES, "send", "--proto", proto, "--dst", "127.0.0.1", "--port", str(port), *more],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    (line,) = done.stdout.splitlines()
    result: dict[str, Any] = json.loads(line)
    result["exit"] = done.returncode
    return result


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_client_reaches_the_server_and_both_say_what_they_saw(proto: str) -> None:
    port = random.randint(40000, 60000)
    server = start_server(port)
    try:
        sent = client(proto, port, "b/p0=127.0.0.1")
    finally:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.close()  # the runner going away: the server stops by itself
        assert server.wait(timeout=5) == EXIT_OK
        out = server.stdout.read()
    assert (sent["exit"], sent["complete"], sent["attempts"]) == (EXIT_OK, True, 1)
    assert sent["answers"] == {"b/p0": {"token": "t1.1", "reply_src": "127.0.0.1"}}
    assert sent["unanswered"] == []
    assert set(sent["egress"]) == {"b/p0"}  # its value depends on this host's routes
    (seen,) = [json.loads(line) for line in out.splitlines()]
    assert seen == {
        "role": "serve",
        "proto": proto,
        "token": "t1.1",
        "observed_src": "127.0.0.1",
        "name": "b/p0",
    }


def test_a_client_keeps_trying_for_an_endpoint_that_never_answers() -> None:
    port = random.randint(40000, 60000)
    server = start_server(port, protos="tcp")
    try:
        sent = client("tcp", port, "b/p0=127.0.0.1,c/p0=127.0.0.2", timeout=1.0)
    finally:
        server.terminate()  # SIGTERM stops it too
        server.communicate(timeout=5)
    assert sent["complete"] is False and sent["exit"] != EXIT_OK
    assert list(sent["answers"]) == ["b/p0"]
    assert sent["attempts"] > 2  # every attempt reached b/p0; it went on looking for c/p0


def test_a_udp_answer_from_another_address_is_reported_with_that_address() -> None:
    # what a pod sees when conntrack does not undo the DNAT: the endpoint's own address answers
    port = random.randint(40000, 60000)
    listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listening.bind(("127.0.0.1", port))
    answering = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answering.bind(("127.0.0.2", 0))

    def answer() -> None:
        data, peer = listening.recvfrom(1024)
        token = parse_service_request(data)
        assert token is not None
        answering.sendto(service_answer(token, "b/p0"), peer)

    helper = threading.Thread(target=answer, daemon=True)
    helper.start()
    try:
        sent = client("udp", port, "b/p0=127.0.0.1", timeout=2.0)
    finally:
        helper.join(5)
        listening.close()
        answering.close()
    assert sent["answers"]["b/p0"]["reply_src"] == "127.0.0.2"


ROUTES = """Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
lo	00000000	0100A8C0	0003	0	0	0	00000000	0	0	0
lo	0000F40A	00000000	0001	0	0	0	00FFFFFF	0	0	0
nope	0001F40A	00000000	0001	0	0	0	00FFFFFF	0	0	0
lo	0002F40A	0C001EAC	0003	0	0	0	00FFFFFF	0	0	0
"""


def test_the_gateway_and_the_egress_address_come_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTES)
    assert default_gateway(str(table)) == "192.168.0.1"
    # the longest prefix wins: 10.244.2.0/24 via 172.30.0.12 dev lo; lo's address is 127.0.0.1
    assert egress_address("10.244.2.7", str(table)) == "127.0.0.1"
    assert egress_address("10.244.1.7", str(table)) is None  # an interface that does not exist
    assert egress_address("8.8.8.8", str(table)) == "127.0.0.1"  # the default route


def test_the_service_options_are_read_and_checked() -> None:
    sent = parse(
        ["send", "--proto", "udp", "--dst", "10.96.0.21", "--expect", "a=10.0.0.1,b=10.0.0.2"]
    )
    assert sent.expect == {"a": "10.0.0.1", "b": "10.0.0.2"}
    served = parse(["serve", "--proto", "tcp,udp", "--name", "n1/p0", "--port", "30080"])
    assert (served.name, served.protos, served.port) == ("n1/p0", ["tcp", "udp"], 30080)
    for argv in (
        ["serve", "--proto", "tcp"],  # no name
        ["serve", "--proto", "icmp", "--name", "a"],
        ["serve", "--proto", "tcp", "--name", "a@b"],
        ["send", "--proto", "tcp,udp", "--dst", "10.96.0.1", "--expect", "a=10.0.0.1"],
        ["send", "--proto", "icmp", "--dst", "10.96.0.1", "--expect", "a=10.0.0.1"],
        ["send", "--proto", "tcp", "--dst", "10.96.0.1", "--expect", "a=not-an-ip"],
        ["send", "--proto", "tcp", "--dst", "10.96.0.1", "--expect", "a=10.0.0.1,a=10.0.0.2"],
        ["recv", "--proto", "tcp", "--expect", "a=10.0.0.1"],
    ):
        with pytest.raises(UsageError):
            parse(argv)
    with pytest.raises(ValueError):
        parse_expected("10.0.0.1")
