"""Probes through a ClusterIP Service: a server in every endpoint pod, a client anywhere.

    python -m lab.probes serve --proto tcp,udp --port 30080 --name n1/p0 --timeout 300
    python -m lab.probes send --proto tcp --dst 10.96.0.20 --port 80 --token t1 \\
        --expect n1/p0=10.244.1.2,n2/p0=10.244.2.2 --timeout 4

kube-proxy picks an endpoint at random for every new connection (a new UDP source port counts as
one), so the client makes fresh attempts, each with its own token (`t1.1`, `t1.2`, ...), until
every expected endpoint has answered or time is up. A server answers each attempt with its own name
and prints what it saw (token, source address); the client prints, per endpoint, the first answer
and the address it came from -- a UDP client reads it with recvfrom, unconnected, so an answer
from the endpoint's own address (conntrack did not undo the DNAT) is seen, not filtered out; for
TCP the kernel delivers only what comes from the address it connected to.

The client also reports what the judge needs to expect the endpoint's view: its default gateway
(a pod reaching itself is masqueraded by its node to the bridge's address) and, per endpoint, the
address of the interface its routes reach that endpoint through (what a MASQUERADE in this
namespace picks: a node's own traffic to a ClusterIP is masqueraded, its source being outside the
cluster CIDR). Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

from lab.probes.sockets import IP_PKTINFO, _answer_from, announce_ready, source_address_towards
from lab.probes.wire import (
    MAX_LINE,
    parse_service_answer,
    parse_service_request,
    service_answer,
    service_request,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]

ATTEMPT_SECONDS = 0.5  # one attempt's wait; a lost one costs only a new attempt
RESEND_SECONDS = 0.2
MAX_ATTEMPTS = 400
ROUTE_TABLE = "/proc/net/route"
RTF_UP, RTF_GATEWAY = 0x1, 0x2
SIOCGIFADDR = 0x8915


class Stopped(Exception):
    pass


def _stop(_signum: int, _frame: object) -> None:
    raise Stopped


# ---------------------------------------------------------------- the server


def _stdin_pipe() -> int | None:
    """fd 0 when it is a pipe: its end of file says the runner is gone (`kubectl exec -i` passes
    it on), so the server stops even where no signal reaches it."""
    try:
        return 0 if stat.S_ISFIFO(os.fstat(0).st_mode) else None
    except OSError:
        return None


def serve(args: SimpleNamespace, emit: Emit) -> None:
    """Answer Service probes on `args.port` until `args.timeout`, SIGTERM or the end of a piped
    stdin; one line for every probe answered."""
    name, deadline = args.name, time.monotonic() + args.timeout
    sockets: dict[socket.socket, str] = {}
    stdin = _stdin_pipe()
    lock = threading.Lock()

    def seen(proto: str, token: str, peer: str) -> None:
        with lock:
            emit(proto, {"token": token, "observed_src": peer, "name": name})

    try:
        if "tcp" in args.protos:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((args.bind, args.port))
            listener.listen(64)
            sockets[listener] = "tcp"
        if "udp" in args.protos:
            datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            datagrams.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            datagrams.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            datagrams.bind((args.bind, args.port))
            sockets[datagrams] = "udp"
        signal.signal(signal.SIGTERM, _stop)
        announce_ready()
        watched: list[socket.socket | int] = [*sockets, *([stdin] if stdin is not None else [])]
        while (left := deadline - time.monotonic()) > 0:
            for sock in select.select(watched, [], [], left)[0]:
                if isinstance(sock, int):
                    if not os.read(sock, 4096):
                        return
                elif sockets[sock] == "tcp":
                    conn, (peer, _port) = sock.accept()
                    # a thread each: a client that stalls must not hold up the others
                    worker = threading.Thread(
                        target=_answer_tcp, args=(conn, peer, name, seen), daemon=True
                    )
                    worker.start()
                else:
                    _answer_udp(sock, name, seen)
    except Stopped:
        pass
    finally:
        for sock in sockets:
            sock.close()


def _answer_tcp(
    conn: socket.socket, peer: str, name: str, seen: Callable[[str, str, str], None]
) -> None:
    with conn:
        conn.settimeout(1.0)
        try:
            data = b""
            while b"\n" not in data and len(data) <= MAX_LINE:
                chunk = conn.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
            token = parse_service_request(data)
            if token is None:
                return
            seen("tcp", token, str(peer))  # before answering: the client may stop at the answer
            conn.sendall(service_answer(token, name))
        except OSError:
            pass


def _answer_udp(sock: socket.socket, name: str, seen: Callable[[str, str, str], None]) -> None:
    """Answer from the address the probe was sent to (the endpoint's, which conntrack turns back
    into the Service's), whatever address the route would pick."""
    data, ancillary, _flags, (peer, peer_port) = sock.recvmsg(MAX_LINE * 2, 256)
    token = parse_service_request(data)
    if token is None:
        return
    answers = (_answer_from(level, kind, value) for level, kind, value in ancillary)
    pktinfo = [answer for answer in answers if answer is not None]
    seen("udp", token, str(peer))
    sock.sendmsg([service_answer(token, name)], pktinfo, 0, (peer, peer_port))


# ---------------------------------------------------------------- the client


def parse_expected(text: str) -> dict[str, str]:
    """`name=ip,name=ip` -> {name: ip}; ValueError for anything else."""
    expected: dict[str, str] = {}
    for item in text.split(","):
        name, sep, ip = item.partition("=")
        if not sep or not name or name in expected:
            raise ValueError(f"--expect takes name=address,...; got {item!r}")
        socket.inet_aton(ip)  # raises OSError (a ValueError for the caller) on junk
        expected[name] = ip
    return expected


def send_service(args: SimpleNamespace, emit: Emit) -> None:
    (proto,) = args.protos
    expected = args.expect
    deadline = time.monotonic() + args.timeout
    attempt = _tcp_attempt if proto == "tcp" else _udp_attempt
    answers: dict[str, dict[str, str]] = {}
    unanswered: list[str] = []
    attempts = 0
    while set(expected) - set(answers) and attempts < MAX_ATTEMPTS:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        token = f"{args.token}.{attempts}"
        answer = attempt(args.dst, args.port, token, min(ATTEMPT_SECONDS, left))
        if answer is None:
            unanswered.append(token)
        else:
            name, reply_src = answer
            answers.setdefault(name, {"token": token, "reply_src": reply_src})
    emit(
        proto,
        {
            "dst": args.dst,
            "service": True,
            "local": source_address_towards(args.dst),
            "attempts": attempts,
            "complete": not set(expected) - set(answers),
            "answers": answers,
            "unanswered": unanswered,
            "gateway": default_gateway(),
            "egress": {name: egress_address(ip) for name, ip in expected.items()},
        },
    )


def _tcp_attempt(dst: str, port: int, token: str, seconds: float) -> tuple[str, str] | None:
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(seconds)
        try:
            client.connect((dst, port))
            client.sendall(service_request(token))
            data = b""
            while b"\n" not in data and len(data) <= MAX_LINE:
                chunk = client.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
            peer = str(client.getpeername()[0])
        except ConnectionRefusedError:
            # an endpoint without a server: a new attempt may reach another one
            time.sleep(max(min(0.02, seconds - (time.monotonic() - started)), 0))
            return None
        except (TimeoutError, ConnectionResetError, OSError):
            return None
    answer = parse_service_answer(data)
    return (answer[1], peer) if answer and answer[0] == token else None


def _udp_attempt(dst: str, port: int, token: str, seconds: float) -> tuple[str, str] | None:
    """A new socket (a new source port: a new conntrack entry, a new choice of endpoint),
    unconnected, so that an answer from any address is received and its source reported."""
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                client.sendto(service_request(token), (dst, port))
                next_send = now + RESEND_SECONDS
            wait = max(min(next_send, deadline) - now, 0)
            if not select.select([client], [], [], wait)[0]:
                continue
            data, (source, _port) = client.recvfrom(MAX_LINE * 2)
            answer = parse_service_answer(data)
            if answer and answer[0] == token:
                return answer[1], str(source)
    return None


# ---------------------------------------------------------------- what to expect


def _routes(table: str = ROUTE_TABLE) -> list[tuple[str, int, int, int, int]]:
    """(interface, destination, mask, gateway, metric) of the main table's IPv4 routes that are
    up, as integers in host order."""
    found = []
    with open(table, encoding="ascii") as stream:
        next(stream, None)  # the header
        for line in stream:
            fields = line.split()
            if len(fields) < 8 or not int(fields[3], 16) & RTF_UP:
                continue
            flags = int(fields[3], 16)
            destination, mask = _host_order(fields[1]), _host_order(fields[7])
            gateway = _host_order(fields[2]) if flags & RTF_GATEWAY else 0
            found.append((fields[0], destination, mask, gateway, int(fields[6])))
    return found


def _host_order(field: str) -> int:
    """/proc/net/route prints an address as the hex of its bytes read as a native (x86 and arm:
    little-endian) integer."""
    return int.from_bytes(int(field, 16).to_bytes(4, "little"), "big")


def default_gateway(table: str = ROUTE_TABLE) -> str | None:
    """The default route's gateway: for a pod, the bridge's address on its node."""
    defaults = [r for r in _routes(table) if r[2] == 0 and r[3]]
    if not defaults:
        return None
    return socket.inet_ntoa(min(defaults, key=lambda r: r[4])[3].to_bytes(4, "big"))


def egress_address(ip: str, table: str = ROUTE_TABLE) -> str | None:
    """The first IPv4 address of the interface the main table sends `ip` through: what
    MASQUERADE picks for a packet leaving there (it takes the interface's address, not the
    route's preferred source)."""
    target = int.from_bytes(socket.inet_aton(ip), "big")
    matches = [r for r in _routes(table) if target & r[2] == r[1]]
    if not matches:
        return None
    interface = max(matches, key=lambda r: (bin(r[2]).count("1"), -r[4]))[0]
    return interface_address(interface)


def interface_address(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
        except OSError:  # no IPv4 address on it
            return None
    return socket.inet_ntoa(reply[20:24])
