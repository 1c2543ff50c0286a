"""The probes' one command line: what the runner passes is read exactly, anything else is refused
with a usage line and exit code 2 before a socket is opened."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.probes.__main__ import EXIT_ERROR, EXIT_OK, UsageError, parse


def test_the_runners_argv_is_read_exactly() -> None:
    argv = ["send", "--proto", "udp", "--dst", "10.0.0.2", "--port", "31001", "--token", "t"]
    assert vars(parse(argv)) == {
        "role": "send",
        "protos": ["udp"],
        "dst": "10.0.0.2",
        "port": 31001,
        "token": "t",
        "timeout": 2.0,
        "engine": "socket",
        "family": "ipv4",
        "bind": "0.0.0.0",
        "expect": {},
    }
    recv = parse(["recv", "--proto", "tcp,icmp", "--timeout", "3"])
    assert (recv.protos, recv.timeout, recv.bind, recv.dst) == (
        ["tcp", "icmp"],
        3.0,
        "0.0.0.0",
        None,
    )
    assert parse(["recv", "--proto=udp", "--port=40000"]).port == 40000


def test_an_ipv6_probe_listens_on_the_ipv6_any_address_and_sends_to_an_ipv6_one() -> None:
    recv = parse(["recv", "--proto", "icmp,tcp,udp", "--family", "ipv6"])
    assert (recv.family, recv.bind) == ("ipv6", "::")
    send = parse(["send", "--proto", "tcp", "--dst", "fd00:10:244:2::2", "--family", "ipv6"])
    assert (send.family, send.dst) == ("ipv6", "fd00:10:244:2::2")


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "--proto", "udp"],  # no destination
        ["recv", "--proto", "sctp"],
        ["recv", "--proto", "tcp,tcp"],
        ["recv", "--proto", "tcp,udp", "--engine", "scapy"],
        ["recv", "--proto", "udp", "--dst", "10.0.0.1"],
        ["recv", "--proto", "udp", "--port", "x"],
        ["recv", "--proto"],
        ["recv", "--proto", "udp", "--engine", "pcap"],
        ["recv", "--proto", "udp", "--family", "ipv5"],
        ["send", "--proto", "udp", "--dst", "fd00::2"],  # an IPv6 address, IPv4 probe
        ["send", "--proto", "udp", "--dst", "10.0.0.2", "--family", "ipv6"],
        ["probe", "--proto", "udp"],
        [],
    ],
)
def test_anything_else_is_refused(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse(argv)


def probes(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.probes", *argv], capture_output=True, text=True, timeout=10
    )


def test_a_refused_command_line_says_why_and_prints_no_result() -> None:
    done = probes("recv", "--proto", "sctp")
    assert done.returncode == EXIT_ERROR
    assert done.stdout == ""
    assert "usage: python -m lab.probes recv" in done.stderr
    assert "error: --proto: a comma separated list of icmp, tcp, udp, got 'sctp'" in done.stderr


def test_help_names_both_roles_and_every_option() -> None:
    done = probes("-h")
    assert done.returncode == EXIT_OK
    assert "python -m lab.probes recv" in done.stdout and "python -m lab.probes send" in done.stdout
    options = ("--proto", "--dst", "--port", "--token", "--timeout", "--engine", "--family")
    for option in (*options, "--bind"):
        assert option in done.stdout
