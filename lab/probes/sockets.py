"""The default probe engine: plain sockets (a raw socket for ICMP, which sees the IP header of the
echo request as it arrived). A receiver listens for every protocol of its cell at once and reports
the source address it observed; a sender reports the address it sent from and whether the reply
came back. Standard library only, imported at module level: a process costs ~30 ms.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

from lab.probes.wire import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    echo_request,
    echo_request6,
    parse_icmp,
    parse_icmp6,
    reply_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]
    IcmpSender = Callable[[str, bytes, float, str | None], bool]
    """(destination, token, deadline, source address) -> whether our echo reply came back"""

RESEND_SECONDS = 0.2
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the module has it from 3.13 on


def address_family(family: str) -> socket.AddressFamily:
    return socket.AF_INET6 if family == "ipv6" else socket.AF_INET


def _family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _listening_socket(family: str, kind: socket.SocketKind) -> socket.socket:
    """A TCP or UDP socket of one family; an IPv6 one hears IPv6 only (never IPv4-mapped)."""
    sock = socket.socket(address_family(family), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == "ipv6":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


class Stopped(Exception):
    """SIGTERM: the runner gave up waiting; report what was (not) seen and exit."""


def source_address_towards(dst: str) -> str:
    """The local address the kernel picks to reach `dst` (a route lookup; sends nothing)."""
    with socket.socket(_family_of(dst), socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return str(probe.getsockname()[0])


# ---------------------------------------------------------------- receivers
# Each listens on one socket; `handle` is called when it is readable and returns the observed
# source once the probe with our token has arrived (and has been answered).


class IcmpReceiver:
    proto = "icmp"

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, deadline: float) -> str | None:
        parsed = parse_icmp(self.sock.recv(65535))
        if parsed and parsed[1] == ICMP_ECHO_REQUEST and self.token in parsed[3]:
            return parsed[0]  # the kernel answers the echo itself
        return None


class Icmp6Receiver(IcmpReceiver):
    """A raw ICMPv6 socket reads messages without the IPv6 header: the source comes with
    recvfrom. It also sees neighbour discovery, which carries no token."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)

    def handle(self, deadline: float) -> str | None:
        message, source = self.sock.recvfrom(65535)
        parsed = parse_icmp6(message)
        if parsed and parsed[0] == ICMPV6_ECHO_REQUEST and self.token in parsed[2]:
            return str(source[0])  # the kernel answers the echo itself
        return None


class TcpReceiver:
    proto = "tcp"

    def __init__(self, port: int, token: bytes, bind: str, family: str = "ipv4") -> None:
        self.token = token
        self.sock = _listening_socket(family, socket.SOCK_STREAM)
        self.sock.bind((bind, port))
        self.sock.listen(16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, deadline: float) -> str | None:
        conn, (peer, *_port) = self.sock.accept()
        with conn:
            conn.settimeout(max(min(deadline - time.monotonic(), 1.0), 0.05))
            try:
                if self.token in _read_until(conn, self.token):
                    conn.sendall(reply_for(self.token))
                    return str(peer)
            except OSError:
                pass
        return None


class UdpReceiver:
    """Answers from the address the probe was sent to (IP_PKTINFO, IPV6_PKTINFO): a socket bound
    to the any address would let the route pick the source, e.g. the bridge address for a pod
    asking its node's underlay address, and the sender's connected socket would drop that
    answer."""

    proto = "udp"

    def __init__(self, port: int, token: bytes, bind: str, family: str = "ipv4") -> None:
        self.token = token
        self.sock = _listening_socket(family, socket.SOCK_DGRAM)
        if family == "ipv6":
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind((bind, port))

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, deadline: float) -> str | None:
        data, ancillary, _flags, (peer, *peer_rest) = self.sock.recvmsg(65535, 256)
        if self.token not in data:
            return None
        pktinfo = [_answer_from(level, kind, value) for level, kind, value in ancillary]
        answer = [info for info in pktinfo if info is not None]
        self.sock.sendmsg([reply_for(self.token)], answer, 0, (peer, *peer_rest))
        return str(peer)


def _answer_from(level: int, kind: int, pktinfo: bytes) -> tuple[int, int, bytes] | None:
    """Ancillary data that sends the answer from the probe's destination address: struct
    in_pktinfo {ifindex; spec_dst; addr} sends from `addr`; struct in6_pktinfo {addr; ifindex}
    from `addr` (ifindex 0: the route decides)."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
        _ifindex, _spec_dst, destination = struct.unpack("=i4s4s", pktinfo[:12])
        return level, kind, struct.pack("=i4s4s", 0, destination, b"\0\0\0\0")
    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
        destination6, _ifindex = struct.unpack("=16si", pktinfo[:20])
        return level, kind, struct.pack("=16si", destination6, 0)
    return None


def _read_until(conn: socket.socket, token: bytes) -> bytes:
    data = b""
    while token not in data and len(data) < 4096:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def receive(args: SimpleNamespace, emit: Emit) -> None:
    """Listen for every protocol at once; report each as it arrives, the rest at the end."""
    token, deadline = args.token.encode(), time.monotonic() + args.timeout
    receivers: list[IcmpReceiver | TcpReceiver | UdpReceiver] = []
    pending = list(args.protos)
    family = getattr(args, "family", "ipv4")
    try:
        for proto in args.protos:
            if proto == "icmp":
                icmp = Icmp6Receiver if family == "ipv6" else IcmpReceiver
                receivers.append(icmp(token))
            elif proto == "tcp":
                receivers.append(TcpReceiver(args.port, token, args.bind, family))
            else:
                receivers.append(UdpReceiver(args.port, token, args.bind, family))
        signal.signal(signal.SIGTERM, _stop)
        announce_ready()
        waiting = list(receivers)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for receiver in select.select(waiting, [], [], left)[0]:
                observed = receiver.handle(deadline)
                if observed is not None:
                    emit(receiver.proto, {"received": True, "observed_src": observed})
                    pending.remove(receiver.proto)
                    waiting.remove(receiver)
    except Stopped:
        pass
    finally:
        for receiver in receivers:
            receiver.sock.close()
    for proto in pending:
        emit(proto, {"received": False, "observed_src": None})


def _stop(_signum: int, _frame: object) -> None:
    raise Stopped


def announce_ready() -> None:
    sys.stderr.write("ready\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- senders


def send_icmp(dst: str, token: bytes, deadline: float, _src: str | None = None) -> bool:
    """Echo requests every 200 ms until a reply with our identifier and token comes back;
    ICMPv6 to an IPv6 destination."""
    ident = int.from_bytes(os.urandom(2), "big")
    ipv6 = ":" in dst
    family, proto = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6) if ipv6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    )
    with socket.socket(family, socket.SOCK_RAW, proto) as raw:
        seq, next_send = 0, 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                seq += 1
                request = echo_request6 if ipv6 else echo_request
                raw.sendto(request(ident, seq, token), (dst, 0))
                next_send = now + RESEND_SECONDS
            if not select.select([raw], [], [], max(min(next_send, deadline) - now, 0))[0]:
                continue
            if _is_our_reply(raw.recv(65535), ipv6, ident, token):
                return True
    return False


def _is_our_reply(packet: bytes, ipv6: bool, ident: int, token: bytes) -> bool:
    if ipv6:
        echo6 = parse_icmp6(packet)
        return echo6 is not None and echo6[:2] == (ICMPV6_ECHO_REPLY, ident) and token in echo6[2]
    echo = parse_icmp(packet)
    return echo is not None and echo[1:3] == (ICMP_ECHO_REPLY, ident) and token in echo[3]


def send_tcp(dst: str, port: int, token: bytes, deadline: float) -> tuple[bool, str | None]:
    """Connect (retrying while the port refuses), send the token, await the echo."""
    local = None
    while (left := deadline - time.monotonic()) > 0:
        with socket.socket(_family_of(dst), socket.SOCK_STREAM) as client:
            client.settimeout(left)
            try:
                client.connect((dst, port))
                local = str(client.getsockname()[0])
                client.sendall(token)
                return _read_until(client, reply_for(token)).startswith(reply_for(token)), local
            except ConnectionRefusedError:
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
            except (TimeoutError, ConnectionResetError):
                return False, local
            except OSError as err:
                if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                    return False, local
                raise
    return False, local


def send_udp(dst: str, port: int, token: bytes, deadline: float) -> tuple[bool, str]:
    """Send every 200 ms until the echo comes back (ICMP errors just mean: not yet)."""
    transient = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
    with socket.socket(_family_of(dst), socket.SOCK_DGRAM) as client:
        client.connect((dst, port))
        local = str(client.getsockname()[0])
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                try:
                    client.send(token)
                except OSError as err:
                    if err.errno not in transient:
                        raise
                next_send = now + RESEND_SECONDS
            if not select.select([client], [], [], max(min(next_send, deadline) - now, 0))[0]:
                continue
            try:
                if client.recv(65535) == reply_for(token):
                    return True, local
            except OSError as err:
                if err.errno not in transient:
                    raise
    return False, local


def send_one(proto: str, args: SimpleNamespace) -> dict[str, Any]:
    icmp_sender: IcmpSender = send_icmp
    if args.engine == "scapy" and proto == "icmp":  # import before the clock starts
        import importlib

        from lab.probes.scapy_engine import scapy_send_icmp

        for module in ("scapy.layers.inet", "scapy.layers.inet6", "scapy.sendrecv"):
            importlib.import_module(module)
        icmp_sender = scapy_send_icmp
    token, deadline = args.token.encode(), time.monotonic() + args.timeout
    start = time.monotonic()
    local: str | None = source_address_towards(args.dst)
    if proto == "icmp":
        reply = icmp_sender(args.dst, token, deadline, local)
    elif proto == "tcp":
        reply, connected_from = send_tcp(args.dst, args.port, token, deadline)
        local = connected_from or local
    else:
        reply, local = send_udp(args.dst, args.port, token, deadline)
    elapsed = round((time.monotonic() - start) * 1000, 2) if reply else None
    return {"dst": args.dst, "local": local, "reply": reply, "elapsed_ms": elapsed}


def send(args: SimpleNamespace, emit: Emit) -> None:
    """Every protocol in its own thread, so one that times out does not delay the others."""

    def run(proto: str) -> None:
        try:
            emit(proto, send_one(proto, args))
        except Exception as err:
            emit(proto, {"dst": args.dst, "error": f"{type(err).__name__}: {err}"})

    if len(args.protos) == 1:
        run(args.protos[0])
        return
    import threading

    threads = [threading.Thread(target=run, args=(proto,)) for proto in args.protos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
