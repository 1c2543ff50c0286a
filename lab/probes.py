"""Connectivity probes, each run as a fresh process inside a namespace (or a pod).

    python -m lab.probes recv --proto tcp --port 31000 --token t1   # in the destination
    python -m lab.probes send --proto tcp --dst 10.244.2.2 --port 31000 --token t1   # in the source

The receiver writes `ready` to stderr once it listens; both print one JSON line per protocol on
stdout. The receiver reports the source address it observed on the probe; the sender reports the
address it sent from and whether the reply came back. `--proto icmp,tcp,udp` probes all three in
one process (TCP and UDP share the port number), which is how the matrix runs: a third of the
processes. A probe carries a token, so probes running in parallel into the same namespace never
mistake each other's packets.

The default engine uses plain sockets (a raw socket for ICMP, which sees the IP header of the echo
request as it arrived): a process costs ~30 ms. `--engine scapy` records what arrived with a scapy
AF_PACKET sniffer and crafts ICMP with scapy, as an independent cross-check, at ~0.3 s per import.
Only the standard library is imported at module level: this runs hundreds of times per matrix.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    Emit = Callable[[str, dict[str, Any]], None]

PROTOCOLS = ("icmp", "tcp", "udp")
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
RESEND_SECONDS = 0.2
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the module has it from 3.13 on
EXIT_OK, EXIT_NO_CONNECTIVITY, EXIT_ERROR = 0, 1, 2


class Stopped(Exception):
    """SIGTERM: the runner gave up waiting; report what was (not) seen and exit."""


def reply_for(token: bytes) -> bytes:
    return b"ok:" + token


def source_address_towards(dst: str) -> str:
    """The local address the kernel picks to reach `dst` (a route lookup; sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return str(probe.getsockname()[0])


# ---------------------------------------------------------------- ICMP wire format


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
    if args.engine == "scapy" and proto == "icmp":  # import before the clock starts
        import importlib

        for module in ("scapy.layers.inet", "scapy.sendrecv"):
            importlib.import_module(module)
    token, deadline = args.token.encode(), time.monotonic() + args.timeout
    start = time.monotonic()
    local: str | None = source_address_towards(args.dst)
    if proto == "icmp":
        reply = (scapy_send_icmp if args.engine == "scapy" else send_icmp)(
            args.dst, token, deadline
        )
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


# ---------------------------------------------------------------- scapy engine


def scapy_receive(args: SimpleNamespace, emit: Emit) -> None:
    """Record the source address off the wire with an AF_PACKET sniffer; sockets still answer."""
    import threading

    from scapy.interfaces import get_if_list
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.packet import Raw
    from scapy.sendrecv import AsyncSniffer

    (proto,) = args.protos
    token, deadline = args.token.encode(), time.monotonic() + args.timeout

    def is_probe(packet: Any) -> bool:
        if IP not in packet or Raw not in packet or token not in bytes(packet[Raw].load):
            return False
        if proto == "icmp":
            return ICMP in packet and int(packet[ICMP].type) == ICMP_ECHO_REQUEST
        layer = TCP if proto == "tcp" else UDP
        return layer in packet and int(packet[layer].dport) == args.port

    started = threading.Event()
    sniffer = AsyncSniffer(  # every interface: a pod reaches its node's address over the bridge
        iface=get_if_list(), lfilter=is_probe, count=1, store=True, started_callback=started.set
    )
    sniffer.start()
    started.wait(max(deadline - time.monotonic(), 0))
    if proto == "icmp":
        announce_ready()
        sniffer.join(max(deadline - time.monotonic(), 0))
    else:
        receive(args, lambda _proto, _fields: None)  # the sockets answer; the sniffer judges
    sniffer.join(max(min(deadline - time.monotonic(), 0.2), 0))  # the answer may beat it
    if sniffer.running:
        sniffer.stop()
    packets: list[Any] = list(sniffer.results or [])
    observed = str(packets[0][IP].src) if packets else None
    emit(proto, {"received": observed is not None, "observed_src": observed})


def scapy_send_icmp(dst: str, token: bytes, deadline: float) -> bool:
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP
    from scapy.sendrecv import sr1
    from scapy.supersocket import L3RawSocket

    # A raw IP socket: the kernel routes the probe as it routes any traffic of the namespace.
    # scapy's default L3 socket picks next hops from its own copy of the main table and resolves
    # them with its own ARP, which nobody answers for a VXLAN onlink gateway (a static neighbour).
    conf.L3socket = L3RawSocket
    ident = int.from_bytes(os.urandom(2), "big")
    while (left := deadline - time.monotonic()) > 0:
        answer = sr1(IP(dst=dst) / ICMP(id=ident) / token, timeout=min(left, 0.5), verbose=False)
        if answer is not None and ICMP in answer and int(answer[ICMP].type) == ICMP_ECHO_REPLY:
            return True
    return False


# ---------------------------------------------------------------- command line

DEFAULTS = {
    "port": "31000",
    "token": "minicni-probe",
    "timeout": "2.0",
    "engine": "socket",
    "bind": "0.0.0.0",
}


def split_protocols(value: str) -> list[str] | None:
    protos = [p for p in value.split(",") if p]
    if not protos or len(set(protos)) != len(protos) or not set(protos) <= set(PROTOCOLS):
        return None
    return protos


def parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """Parse the runner's own `--key value` argv without importing argparse (~8 ms of a ~35 ms
    process); None for anything else (help, an error), which `parser()` then handles."""
    if len(argv) % 2 != 1 or argv[0] not in ("recv", "send"):
        return None
    values = dict(DEFAULTS)
    for key, value in zip(argv[1::2], argv[2::2], strict=True):
        name = key[2:]
        if not key.startswith("--") or name not in (*DEFAULTS, "proto", "dst"):
            return None
        if (name == "dst" and argv[0] == "recv") or (name == "bind" and argv[0] == "send"):
            return None
        values[name] = value
    required = ("proto", "dst") if argv[0] == "send" else ("proto",)
    if any(name not in values for name in required) or values["engine"] not in ENGINES:
        return None
    protos = split_protocols(values["proto"])
    try:
        port, timeout = int(values["port"]), float(values["timeout"])
    except ValueError:
        return None
    if protos is None or (values["engine"] == "scapy" and len(protos) > 1):
        return None
    return SimpleNamespace(
        role=argv[0],
        protos=protos,
        dst=values.get("dst"),
        port=port,
        token=values["token"],
        timeout=timeout,
        engine=values["engine"],
        bind=values["bind"],
    )


ENGINES = ("socket", "scapy")


def _parse_slow(argv: list[str]) -> SimpleNamespace:
    top = parser()
    args = SimpleNamespace(**vars(top.parse_args(argv)))
    protos = split_protocols(args.proto)
    if protos is None:
        top.error(f"--proto: a comma separated list of {', '.join(PROTOCOLS)}, got {args.proto!r}")
    if args.engine == "scapy" and len(protos or []) > 1:
        top.error("--engine scapy probes one protocol at a time")
    args.protos = protos
    del args.proto
    return args


def parser() -> argparse.ArgumentParser:
    import argparse

    top = argparse.ArgumentParser(prog="python -m lab.probes", description=__doc__.split("\n")[0])
    roles = top.add_subparsers(dest="role", required=True)
    for role in ("recv", "send"):
        sub = roles.add_parser(role)
        sub.add_argument("--proto", required=True, help="icmp, tcp, udp or a list: icmp,tcp,udp")
        sub.add_argument("--port", type=int, default=31000, help="TCP and UDP port")
        sub.add_argument("--token", default="minicni-probe", help="marks this probe's packets")
        sub.add_argument("--timeout", type=float, default=2.0, help="seconds")
        sub.add_argument("--engine", choices=ENGINES, default="socket")
        if role == "send":
            sub.add_argument("--dst", required=True, help="destination IPv4 address")
            sub.set_defaults(bind="0.0.0.0")  # unused by a sender; same shape as the fast path
        else:
            sub.add_argument("--bind", default="0.0.0.0", help="TCP/UDP listening address")
            sub.set_defaults(dst=None)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_fast(argv) or _parse_slow(argv)
    outcomes: dict[str, str] = {}

    def emit(proto: str, fields: dict[str, Any]) -> None:
        line = json.dumps({"role": args.role, "proto": proto, "token": args.token, **fields})
        sys.stdout.write(line + "\n")  # one write per line: whole lines even from threads
        sys.stdout.flush()
        ok = fields.get("received") or fields.get("reply")
        outcomes[proto] = "error" if "error" in fields else "ok" if ok else "no"

    try:
        if args.role == "send":
            send(args, emit)
        elif args.engine == "scapy":
            scapy_receive(args, emit)
        else:
            receive(args, emit)
    except Exception as err:  # one JSON line per protocol whatever happens: the runner shows `!`
        for proto in args.protos:
            if proto not in outcomes:
                emit(proto, {"error": f"{type(err).__name__}: {err}"})
    if "error" in outcomes.values():
        return EXIT_ERROR
    return EXIT_OK if all(o == "ok" for o in outcomes.values()) else EXIT_NO_CONNECTIVITY


if __name__ == "__main__":
    sys.exit(main())
