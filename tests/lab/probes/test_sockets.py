"""The socket engine end to end over 127.0.0.1 (receivers bound to loopback only): TCP and UDP
probes as the matrix runs them, what a stopped receiver and a lonely sender report, and errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest

from lab.probes.__main__ import EXIT_ERROR, EXIT_NO_CONNECTIVITY


def probe_pair_over_loopback(
    protos: str, token: str, loopback: str = "127.0.0.1"
) -> tuple[list[Any], list[Any]]:
    """A receiver and a sender on `loopback` (127.0.0.1 or ::1), as the matrix runs them in two
    namespaces: the sender's JSON lines, the receiver's JSON lines (both must exit 0)."""
    port = str(random.randint(40000, 60000))
    common = ["--proto", protos, "--port", port, "--token", token]
    if ":" in loopback:
        common += ["--family", "ipv6"]
    receiver = subprocess.Popen(
        [sys.executable, "-m", "lab.probes", "recv", *common, "--bind", loopback],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert receiver.stderr is not None and receiver.stderr.readline() == "ready\n"
    sender = subprocess.run(
        [sys.executable, "-m", "lab.probes", "send", *common, "--dst", loopback],
        capture_output=True,
        text=True,
        timeout=10,
    )
    out, _ = receiver.communicate(timeout=10)
    assert (sender.returncode, receiver.returncode) == (0, 0)
    return (
        [json.loads(line) for line in sender.stdout.splitlines()],
        [json.loads(line) for line in out.splitlines()],
    )


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_probe_pair_over_loopback(proto: str) -> None:
    [sent], [received] = probe_pair_over_loopback(proto, "tok-1")
    assert sent["reply"] is True and sent["local"] == "127.0.0.1"
    assert received == {
        "role": "recv",
        "proto": proto,
        "token": "tok-1",
        "received": True,
        "observed_src": "127.0.0.1",
    }


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_probe_pair_over_ipv6_loopback(proto: str) -> None:
    [sent], [received] = probe_pair_over_loopback(proto, "tok-6", "::1")
    assert (sent["reply"], sent["local"], sent["dst"]) == (True, "::1", "::1")
    assert (received["received"], received["observed_src"]) == (True, "::1")


def test_an_ipv6_receiver_does_not_hear_ipv4_on_its_port() -> None:
    """The families' cells are told apart: an IPv6 receiver never answers an IPv4 probe."""
    port = str(random.randint(40000, 60000))
    common = ["--proto", "udp", "--port", port, "--token", "tok-x"]
    receiver = subprocess.Popen(
        [sys.executable, "-m", "lab.probes", "recv", *common, "--family", "ipv6", "--timeout", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert receiver.stderr is not None and receiver.stderr.readline() == "ready\n"
    sender = subprocess.run(
        [sys.executable, "-m", "lab.probes", "send", *common, "--dst", "127.0.0.1",
         "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=10,
    )  # fmt: skip
    receiver.terminate()
    out, _ = receiver.communicate(timeout=10)
    assert json.loads(sender.stdout)["reply"] is False
    assert json.loads(out)["received"] is False


def test_one_receiver_and_one_sender_probe_tcp_and_udp_together() -> None:
    sent_lines, seen_lines = probe_pair_over_loopback("tcp,udp", "tok-2")
    sent = {r["proto"]: r for r in sent_lines}
    seen = {r["proto"]: r for r in seen_lines}
    assert sorted(sent) == sorted(seen) == ["tcp", "udp"]
    assert all(r["reply"] for r in sent.values())
    assert all(r["observed_src"] == "127.0.0.1" for r in seen.values())


def test_a_stopped_receiver_reports_what_it_did_not_see() -> None:
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.probes",
            "recv",
            "--proto",
            "tcp,udp",
            "--bind",
            "127.0.0.1",
            "--port",
            str(random.randint(40000, 60000)),
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert receiver.stderr is not None and receiver.stderr.readline() == "ready\n"
    receiver.terminate()
    out, _ = receiver.communicate(timeout=10)
    assert receiver.returncode == EXIT_NO_CONNECTIVITY
    assert [json.loads(line)["received"] for line in out.splitlines()] == [False, False]


def test_sender_without_receiver_reports_no_reply_within_its_timeout() -> None:
    started = time.monotonic()
    sender = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.probes",
            "send",
            "--proto",
            "udp",
            "--dst",
            "127.0.0.1",
            "--port",
            str(random.randint(40000, 60000)),
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert sender.returncode == EXIT_NO_CONNECTIVITY
    assert json.loads(sender.stdout)["reply"] is False
    assert time.monotonic() - started < 5


def test_errors_still_print_one_json_line() -> None:
    receiver = subprocess.run(
        [sys.executable, "-m", "lab.probes", "recv", "--proto", "udp", "--bind", "192.0.2.1"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert receiver.returncode == EXIT_ERROR
    assert "OSError" in json.loads(receiver.stdout)["error"]
