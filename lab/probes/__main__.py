"""Connectivity probes, each run as a fresh process inside a namespace (or a pod).

    python -m lab.probes recv --proto tcp --port 31000 --token t1   # in the destination
    python -m lab.probes send --proto tcp --dst 10.244.2.2 --port 31000 --token t1   # in the source
    python -m lab.probes recv --family ipv6 --proto icmp,tcp,udp ...   # ICMPv6, TCP, UDP over IPv6

The receiver writes `ready` to stderr once it listens; both print one JSON line per protocol on
stdout. The receiver reports the source address it observed on the probe; the sender reports the
address it sent from and whether the reply came back. `--proto icmp,tcp,udp` probes all three in
one process (TCP and UDP share the port number), which is how the matrix runs: a third of the
processes. A probe carries a token, so probes running in parallel into the same namespace never
mistake each other's packets.

Services (`lab.probes.service`): `serve` runs in each endpoint pod of a ClusterIP Service and
answers every probe with its name; `send --expect name=ip,...` to the Service's address tries
fresh connections until every endpoint named has answered (kube-proxy chooses one at random for
each). One JSON line per probe served, one for the client.

The default engine uses plain sockets (`lab.probes.sockets`): a process costs ~30 ms.
`--engine scapy` (`lab.probes.scapy_engine`) records what arrived with a scapy AF_PACKET sniffer
and crafts ICMP with scapy, as an independent cross-check, at ~0.3 s per import. The command line
is read by one small parser of its own: argparse alone would cost ~8 ms of every process.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any

from lab.probes.wire import PROTOCOLS

EXIT_OK, EXIT_NO_CONNECTIVITY, EXIT_ERROR = 0, 1, 2
PROG = "python -m lab.probes"
ENGINES = ("socket", "scapy")
FAMILIES = ("ipv4", "ipv6")
ROLES = ("recv", "send", "serve")
# option -> (default, help); None: required
OPTIONS: dict[str, tuple[str | None, str]] = {
    "proto": (None, "icmp, tcp, udp or a list: icmp,tcp,udp"),
    "dst": (None, "destination address, of the family (send only)"),
    "port": ("31000", "TCP and UDP port"),
    "token": ("minicni-probe", "marks this probe's packets"),
    "timeout": ("2.0", "seconds"),
    "engine": ("socket", f"one of {', '.join(ENGINES)}"),
    "family": ("ipv4", f"one of {', '.join(FAMILIES)}; ICMP is ICMPv6 over IPv6"),
    "bind": ("", "TCP/UDP listening address (recv, serve; default: any of the family)"),
    "expect": ("", "send through a Service until these endpoints answered: name=ip,name=ip"),
    "name": (None, "the endpoint's name in its answers (serve only)"),
}
ROLE_OPTIONS = {
    "recv": ("proto", "port", "token", "timeout", "engine", "family", "bind"),
    "send": ("proto", "dst", "port", "token", "timeout", "engine", "family", "expect"),
    "serve": ("proto", "port", "name", "timeout", "bind"),
}
USAGE = "".join(
    f"{'usage:' if role == ROLES[0] else '      '} {PROG} {role} "
    + " ".join(
        f"--{name} {name.upper()}" if OPTIONS[name][0] is None else f"[--{name} {name.upper()}]"
        for name in ROLE_OPTIONS[role]
    )
    + "\n"
    for role in ROLES
)


class UsageError(ValueError):
    """The command line is not one the probes take; the message says what is wrong."""


def help_text() -> str:
    lines = [USAGE, (__doc__ or "").split("\n")[0], "", "options:"]
    for name, (default, text) in OPTIONS.items():
        shown = "required" if default is None else f"default {default}"
        lines.append(f"  --{name:<8} {text} ({shown})")
    return "\n".join(lines) + "\n"


def split_protocols(value: str) -> list[str] | None:
    protos = [p for p in value.split(",") if p]
    if not protos or len(set(protos)) != len(protos) or not set(protos) <= set(PROTOCOLS):
        return None
    return protos


def parse(argv: list[str]) -> SimpleNamespace:
    """`recv|send --name value ...` (or `--name=value`) into the probe's arguments."""
    if not argv or argv[0] not in ROLES:
        raise UsageError(f"the first word must be one of {', '.join(ROLES)}")
    role, words = argv[0], []
    for word in argv[1:]:
        words += word.split("=", 1) if word.startswith("--") and "=" in word else [word]
    if len(words) % 2:
        raise UsageError(f"{words[-1]} needs a value")
    given: dict[str, str] = {}
    for key, value in zip(words[::2], words[1::2], strict=True):
        name = key[2:] if key.startswith("--") else ""
        if name not in ROLE_OPTIONS[role]:
            raise UsageError(f"{role} takes no {key!r}")
        given[name] = value
    values = {name: given.get(name, OPTIONS[name][0]) for name in ROLE_OPTIONS[role]}
    missing = [f"--{name}" for name, value in values.items() if value is None]
    if missing:
        raise UsageError(f"{role} needs {', '.join(missing)}")
    return _typed(role, values)


def _typed(role: str, values: dict[str, str | None]) -> SimpleNamespace:
    protos = split_protocols(str(values["proto"]))
    if protos is None:
        raise UsageError(
            f"--proto: a comma separated list of {', '.join(PROTOCOLS)}, got {values['proto']!r}"
        )
    engine = values.get("engine", "socket")
    if engine not in ENGINES:
        raise UsageError(f"--engine: one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "scapy" and len(protos) > 1:
        raise UsageError("--engine scapy probes one protocol at a time")
    try:
        port, timeout = int(str(values["port"])), float(str(values["timeout"]))
    except ValueError as err:
        raise UsageError(f"--port is a number, --timeout seconds: {err}") from None
    family = values.get("family") or "ipv4"
    if family not in FAMILIES:
        raise UsageError(f"--family: one of {', '.join(FAMILIES)}, got {family!r}")
    dst = values.get("dst")
    if dst is not None and (":" in dst) != (family == "ipv6"):
        raise UsageError(f"--dst {dst} is not an {family} address (--family {family})")
    expect = _expected(values.get("expect") or "", protos, engine)
    name = values.get("name")
    if role == "serve":
        if "icmp" in protos:
            raise UsageError("serve answers tcp and udp")
        if not name or any(c in str(name) for c in "@\n"):
            raise UsageError("--name: a name without '@' or line breaks")
    typed = SimpleNamespace(
        role=role,
        protos=protos,
        dst=dst,
        port=port,
        token=values.get("token", OPTIONS["token"][0]),
        timeout=timeout,
        engine=engine,
        family=family,
        bind=values.get("bind") or ("::" if family == "ipv6" else "0.0.0.0"),
    )
    if role == "send":
        typed.expect = expect
    if role == "serve":
        typed.name = name
    return typed


def _expected(text: str, protos: list[str], engine: str) -> dict[str, str]:
    if not text:
        return {}
    if len(protos) != 1 or protos[0] == "icmp" or engine != "socket":
        raise UsageError("--expect probes one Service: one protocol, tcp or udp, socket engine")
    from lab.probes.service import parse_expected

    try:
        return parse_expected(text)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(help_text())
        return EXIT_OK
    try:
        args = parse(argv)
    except UsageError as err:
        sys.stderr.write(f"{USAGE}{PROG}: error: {err}\n")
        return EXIT_ERROR
    outcomes: dict[str, str] = {}

    def emit(proto: str, fields: dict[str, Any]) -> None:
        line = json.dumps({"role": args.role, "proto": proto, "token": args.token, **fields})
        sys.stdout.write(line + "\n")  # one write per line: whole lines even from threads
        sys.stdout.flush()
        ok = fields.get("received") or fields.get("reply") or fields.get("complete")
        outcomes[proto] = "error" if "error" in fields else "ok" if ok else "no"

    try:
        if args.role == "serve":
            from lab.probes.service import serve

            serve(args, emit)
            return EXIT_OK
        if args.role == "send" and args.expect:
            from lab.probes.service import send_service

            send_service(args, emit)
        elif args.role == "send":
            from lab.probes.sockets import send

            send(args, emit)
        elif args.engine == "scapy":
            from lab.probes.scapy_engine import scapy_receive

            scapy_receive(args, emit)
        else:
            from lab.probes.sockets import receive

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
