"""The ICMP wire format the probes build and parse."""

from __future__ import annotations

from lab.probes import wire


def test_echo_request_checksum_verifies() -> None:
    packet = wire.echo_request(0x1234, 7, b"token")
    assert wire.checksum(packet) == 0
    ip_header = bytes([0x45]) + bytes(11) + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2])
    assert wire.parse_icmp(ip_header + packet) == ("10.0.0.1", 8, 0x1234, b"token")


def test_parse_icmp_ignores_truncated_packets() -> None:
    assert wire.parse_icmp(b"\x45" + bytes(10)) is None
    assert wire.parse_icmp(b"\x45" + bytes(19) + b"\x08\x00") is None
