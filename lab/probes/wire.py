"""The probes' wire format: the ICMP echo a probe sends and parses, and the answer TCP and UDP
receivers send back. Standard library only: every probe process imports it."""

from __future__ import annotations

import socket
import struct

PROTOCOLS = ("icmp", "tcp", "udp")
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


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


def echo_request6(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMPv6 echo request for a raw ICMPv6 socket, checksum 0: the kernel computes it (it
    covers the IPv6 pseudo-header, whose source address only the kernel knows)."""
    return struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + payload


def parse_icmp6(message: bytes) -> tuple[int, int, bytes] | None:
    """(type, identifier, payload) of an ICMPv6 message as a raw ICMPv6 socket reads it (without
    the IPv6 header: the source comes with recvfrom), None if too short."""
    if len(message) < 8:
        return None
    icmp_type, _code, _sum, ident, _seq = struct.unpack("!BBHHH", message[:8])
    return icmp_type, ident, message[8:]


# A Service probe names its attempt; the endpoint's server answers with its own name, so the
# client learns which endpoint kube-proxy chose although the answer comes from the Service address.
SERVICE_REQUEST, SERVICE_ANSWER = b"svc:", b"ok:"
MAX_LINE = 512


def service_request(token: str) -> bytes:
    return SERVICE_REQUEST + token.encode() + b"\n"


def service_answer(token: str, name: str) -> bytes:
    return SERVICE_ANSWER + token.encode() + b"@" + name.encode() + b"\n"


def parse_service_request(data: bytes) -> str | None:
    """The token of a Service probe, None if `data` is not one."""
    line = data.split(b"\n", 1)[0]
    if not line.startswith(SERVICE_REQUEST) or len(line) > MAX_LINE:
        return None
    token = line[len(SERVICE_REQUEST) :].decode(errors="replace")
    return token or None


def parse_service_answer(data: bytes) -> tuple[str, str] | None:
    """(token, endpoint name) of a server's answer, None if `data` is not one."""
    line = data.split(b"\n", 1)[0]
    if not line.startswith(SERVICE_ANSWER) or b"@" not in line:
        return None
    token, _, name = line[len(SERVICE_ANSWER) :].decode(errors="replace").rpartition("@")
    return (token, name) if token and name else None
