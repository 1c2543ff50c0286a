"""What the fuzz and kill-point campaigns (issue 11) share: the installed plugin run in a node
namespace with the environment as raw bytes (as a runtime may pass it), the checks every answer
must pass, and the store's leftovers."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from minicni.net import netns
from netns_tests.conftest import plugin_executable

# Files of a store that are bookkeeping, not a reservation.
BOOKKEEPING = {"lock", "boot_id", "last_reserved_ip.0", "spare"}
RESULT_KEYS = {"cniVersion", "interfaces", "ips", "routes", "dns"}
ERROR_KEYS = {"cniVersion", "code", "msg", "details"}


@dataclass
class Answer:
    argv: Sequence[str]
    env: Mapping[bytes, bytes]
    stdin: bytes
    returncode: int
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        env = " ".join(f"{k.decode()}={v!r}" for k, v in sorted(self.env.items()))
        return (
            f"exit {self.returncode}\nenv: {env}\nstdin: {self.stdin[:400]!r}\n"
            f"stdout: {self.stdout[:2000]!r}\nstderr: {self.stderr[-3000:]!r}"
        )


def run_plugin(
    node_ns: str,
    env: Mapping[bytes, bytes],
    stdin: bytes,
    *,
    cwd: Path,
    timeout: float,
    wrapper: Sequence[str] = (),
) -> Answer:
    """Execute the installed plugin inside `node_ns` as a runtime does; a time-out is a hang,
    raised as subprocess.TimeoutExpired."""
    argv = ["nsenter", f"--net={node_ns}", *wrapper, plugin_executable()]
    base = {b"PATH": os.environb.get(b"PATH", b"/usr/sbin:/usr/bin:/sbin:/bin")}
    done = subprocess.run(
        argv,
        input=stdin,
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Answer(argv, dict(env), stdin, done.returncode, done.stdout, done.stderr)


def check_answer(answer: Answer, command: bytes) -> dict[str, Any] | None:
    """One JSON document on stdout: the result (exit 0) or a CNI error object with an integer
    code (exit 1); no traceback; every stderr line a log record or minicni's own one-liner.
    Returns the document (None for an empty stdout on success)."""
    why = answer.describe()
    assert answer.returncode in (0, 1), why
    # A traceback starts a line; a value quoted inside a log record never does.
    for line in answer.stdout.splitlines() + answer.stderr.splitlines():
        assert not line.startswith((b"Traceback", b"--- Logging error")), why
    for line in answer.stderr.splitlines():
        assert line.startswith(b"20") or line.startswith(b"minicni: "), why
    if answer.returncode == 1:
        document = json.loads(answer.stdout)
        assert isinstance(document, dict) and set(document) <= ERROR_KEYS, why
        assert type(document.get("code")) is int and document["code"] not in (0, 999), why
        assert isinstance(document.get("msg"), str), why
        return document
    if command == b"VERSION":
        document = json.loads(answer.stdout)
        assert "supportedVersions" in document, why
        return document
    if command == b"ADD":
        document = json.loads(answer.stdout)
        assert isinstance(document, dict) and set(document) <= RESULT_KEYS, why
        assert document["interfaces"] and document["ips"], why
        return document
    assert answer.stdout == b"", why
    return None


def has_traceback(log: bytes) -> bool:
    return any(line.startswith(b"Traceback") for line in log.splitlines())


def namespace_state(path: str) -> tuple[frozenset[Any], frozenset[Any], frozenset[Any]]:
    """Links (name, kind, master, mtu), addresses (link, address) and main-table routes
    (dst, gateway, link) of a namespace, without the bridges that successful ADDs leave (node
    infrastructure) and what sits on them. One netlink socket for all three dumps."""
    with netns.enter(path):
        ipr = IPRoute()
    with ipr:
        raw = list(ipr.get_links())
        names = {m["index"]: m.get("ifname") for m in raw}
        kinds = {m["index"]: m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") for m in raw}
        kept = {index for index, kind in kinds.items() if kind != "bridge"}
        links = frozenset(
            (names[m["index"]], kinds[m["index"]], names.get(m.get("master")), m.get("mtu"))
            for m in raw
            if m["index"] in kept
        )
        addresses = frozenset(
            (names.get(a["index"]), f"{a.get('address')}/{a['prefixlen']}")
            for a in ipr.get_addr(family=2)
            if a["index"] in kept
        )
        routes = frozenset(
            (
                f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}",
                r.get("gateway"),
                names.get(r.get("oif")),
            )
            for r in ipr.get_routes(family=2, table=254)
            if r.get("oif") in kept
        )
    return links, addresses, routes


def store_debris(data_dir: Path) -> set[str]:
    """Reservations, owner links and temporary files left in any network's store."""
    found = set()
    for store in data_dir.iterdir() if data_dir.is_dir() else []:
        if store.is_dir() and not store.is_symlink():
            found |= {f"{store.name}/{name}" for name in os.listdir(store)} - {
                f"{store.name}/{name}" for name in BOOKKEEPING
            }
    return found


def tree_signature(root: Path, skip: Iterable[Path]) -> dict[str, tuple[str, int, int]]:
    """Every entry under `root` but those under `skip`: (type, size, mtime) by path."""
    skipped = {str(path) for path in skip}
    found: dict[str, tuple[str, int, int]] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) not in skipped]
        for name in dirs + files:
            path = os.path.join(directory, name)
            if path in skipped:
                continue
            status = os.lstat(path)
            kind = oct(status.st_mode >> 12)
            found[path] = (kind, status.st_size, status.st_mtime_ns)
    return found
