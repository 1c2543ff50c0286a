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

from lab.probes.wire import ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, echo_request, parse_icmp, reply_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]

RESEND_SECONDS = 0.2
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the module has it from 3.13 on


class Stopped(Exception):
    """SIGTERM: the runner gave up waiting; report what was (not) seen and exit."""


def source_address_towards(dst: str) -> str:
    """The local address the kernel picks to reach `dst` (a route lookup; sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
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


class TcpReceiver:
    proto = "tcp"

    def __init__(self, port: int, token: bytes, bind: str) -> None:
        self.token = token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.listen(16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, deadline: float) -> str | None:
        conn, (peer, _port) = self.sock.accept()
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
    """Answers from the address the probe was sent to (IP_PKTINFO): a socket bound to 0.0.0.0
    would let the route pick the source, e.g. the bridge address for a pod asking its node's
    underlay address, and the sender's connected socket would drop that answer."""

    proto = "udp"

    def __init__(self, port: int, token: bytes, bind: str) -> None:
        self.token = token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind((bind, port))

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, deadline: float) -> str | None:
        data, ancillary, _flags, (peer, peer_port) = self.sock.recvmsg(65535, 256)
        if self.token not in data:
            return None
        pktinfo = [
            (level, kind, _answer_from(value))
            for level, kind, value in ancillary
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO
        ]
        self.sock.sendmsg([reply_for(self.token)], pktinfo, 0, (peer, peer_port))
        return str(peer)


def _answer_from(pktinfo: bytes) -> bytes:
    """struct in_pktinfo {ifindex; spec_dst; addr}: send from `addr` (the probe's destination)."""
    _ifindex, _spec_dst, destination = struct.unpack("=i4s4s", pktinfo[:12])
    return struct.pack("=i4s4s", 0, destination, b"\0\0\0\0")


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
    try:
        for proto in args.protos:
            if proto == "icmp":
                receivers.append(IcmpReceiver(token))
            elif proto == "tcp":
                receivers.append(TcpReceiver(args.port, token, args.bind))
            else:
                receivers.append(UdpReceiver(args.port, token, args.bind))
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


def send_icmp(dst: str, token: bytes, deadline: float) -> bool:
    ident = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        seq, next_send = 0, 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                seq += 1
                raw.sendto(echo_request(ident, seq, token), (dst, 0))
                next_send = now + RESEND_SECONDS
            if not select.select([raw], [], [], max(min(next_send, deadline) - now, 0))[0]:
                continue
            parsed = parse_icmp(raw.recv(65535))
            if parsed and parsed[1:3] == (ICMP_ECHO_REPLY, ident) and token in parsed[3]:
                return True
    return False


def send_tcp(dst: str, port: int, token: bytes, deadline: float) -> tuple[bool, str | None]:
    """Connect (retrying while the port refuses), send the token, await the echo."""
    local = None
    while (left := deadline - time.monotonic()) > 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
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
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
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
    icmp_sender = send_icmp
    if args.engine == "scapy" and proto == "icmp":  # import before the clock starts
        import importlib

        from lab.probes.scapy_engine import scapy_send_icmp

        for module in ("scapy.layers.inet", "scapy.sendrecv"):
            importlib.import_module(module)
        icmp_sender = scapy_send_icmp
    token, deadline = args.token.encode(), time.monotonic() + args.timeout
    start = time.monotonic()
    local: str | None = source_address_towards(args.dst)
    if proto == "icmp":
        reply = icmp_sender(args.dst, token, deadline)
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
