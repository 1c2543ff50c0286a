"""The probes' wire format: the ICMP echo a probe sends and parses, and the answer TCP and UDP
receivers send back. Standard library only: every probe process imports it."""

from __future__ import annotations

import socket
import struct

PROTOCOLS = ("icmp", "tcp", "udp")
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8


def reply_for(token: bytes) -> bytes:
    return b"ok:" + token


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + (
        payload
    )


def parse_icmp(packet: bytes) -> tuple[str, int, int, bytes] | None:
    """(source, type, identifier, payload) of an IPv4 packet carrying ICMP, None if malformed."""
    if len(packet) < 20:
        return None
    header_len = (packet[0] & 0x0F) * 4
    if len(packet) < header_len + 8:
        return None
    source = socket.inet_ntoa(packet[12:16])
    icmp_type, _code, _sum, ident, _seq = struct.unpack(
        "!BBHHH", packet[header_len : header_len + 8]
    )
    return source, icmp_type, ident, packet[header_len + 8 :]
