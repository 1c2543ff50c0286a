"""Which iptables backend the node uses -- legacy (x_tables) or nft -- detected as
kubernetes-sigs/iptables-wrappers does, so our rules live beside kube-proxy's and kubelet's.

The two backends are separate kernel subsystems: an ACCEPT written with iptables-nft does not
override a FORWARD DROP written with iptables-legacy (a packet must pass both). kind picks the
backend per node at boot, and kube-proxy, flannel and kindnet follow what the node uses.

The order (iptables-wrappers `pkg/xtables/detect.go`, then its v2 shell script for nodes without
kubelet): kubelet >= 1.17 creates `KUBE-IPTABLES-HINT` (or `KUBE-KUBELET-CANARY`) in `mangle`; in
the nft backend -> nft, in the legacy one -> legacy (`iptables-save -t mangle`: one small table,
so this runs on every resync). Without those, the backend with more rules wins; a built-in chain
whose policy is not ACCEPT (Docker's FORWARD DROP) counts as a rule, and our own chains do not
count (or the first choice would feed itself). A tie (an empty node) is nft, the default of
today's distributions. Counting dumps both backends whole, so it is redone once a minute.

Legacy tables are read only when they exist (`/proc/net/ip_tables_names`): reading a legacy table
creates it, and a stray empty legacy table confuses other tools' detection.
"""

from __future__ import annotations

import enum
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

KUBELET_HINT = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\s", re.MULTILINE)
COUNT_EVERY_SECONDS = 60.0
OWN_CHAIN_PREFIX = "MINICNI-"
LEGACY_TABLES = Path("/proc/net/ip_tables_names")
LEGACY_TABLES6 = Path("/proc/net/ip6_tables_names")
TIMEOUT_SECONDS = 30


def tool(name: str, version: int) -> str:
    """`iptables`, `iptables-save`, `iptables-restore` for IPv4; the ip6tables ones for IPv6."""
    return name.replace("iptables", "ip6tables", 1) if version == 6 else name


class Backend(enum.Enum):
    LEGACY = "legacy"
    NFT = "nft"

    def binary(self, tool: str) -> str:
        """`iptables`, `iptables-save` or `iptables-restore` of this backend."""
        name, _, suffix = tool.partition("-")
        return f"{name}-{self.value}" + (f"-{suffix}" if suffix else "")


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """An iptables tool, with an argument list and a time-out (it may wait for the xtables lock)."""
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


@dataclass(frozen=True)
class Detection:
    backend: Backend
    reason: str


def count_rules(save_output: str) -> int:
    """Rules in `iptables-save` output, as iptables-wrappers counts them (lines starting with
    `-`), plus built-in chains whose policy is not ACCEPT; our own chains and jumps excluded."""
    count = 0
    for line in save_output.splitlines():
        if line.startswith("-"):
            if OWN_CHAIN_PREFIX not in line:
                count += 1
        elif line.startswith(":") and not line.startswith(f":{OWN_CHAIN_PREFIX}"):
            parts = line[1:].split()
            if len(parts) >= 2 and parts[1] not in ("ACCEPT", "-"):
                count += 1
    return count


class Detector:
    """Finds the node's backend; `available` lists the backends whose binaries exist."""

    def __init__(
        self,
        runner: Runner = run,
        legacy_tables: Path = LEGACY_TABLES,
        which: Callable[[str], str | None] = shutil.which,
        legacy_tables6: Path = LEGACY_TABLES6,
        *,
        count_every: float = COUNT_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = runner
        self._legacy_tables = legacy_tables
        self._legacy_tables6 = legacy_tables6
        self._count_every = count_every
        self._clock = clock
        self._counted: tuple[float, Detection] | None = None
        self.available = [b for b in Backend if which(b.binary("iptables-restore"))]

    def legacy_tables(self, version: int = 4) -> set[str]:
        """The legacy tables that exist, of iptables (4) or ip6tables (6)."""
        path = self._legacy_tables6 if version == 6 else self._legacy_tables
        try:
            return set(path.read_text().split())
        except OSError:  # no x_tables in this kernel: nothing legacy exists
            return set()

    def _hinted(self, backend: Backend) -> str | None:
        """The kubelet chain in this backend's mangle table, if there is one (one call)."""
        if backend is Backend.LEGACY and "mangle" not in self.legacy_tables():
            return None
        done = self._run([backend.binary("iptables-save"), "-t", "mangle"])
        found = KUBELET_HINT.search(done.stdout) if done.returncode == 0 else None
        return found.group(1) if found else None

    def _rules(self, backend: Backend) -> int:
        if backend is Backend.LEGACY and not self.legacy_tables():
            return 0
        done = self._run([backend.binary("iptables-save")])
        return count_rules(done.stdout) if done.returncode == 0 else 0

    def _count(self) -> Detection:
        """The fallback: whole dumps of both backends, so at most once in `count_every`."""
        now = self._clock()
        if self._counted is None or now - self._counted[0] >= self._count_every:
            legacy, nft = self._rules(Backend.LEGACY), self._rules(Backend.NFT)
            backend = Backend.LEGACY if legacy > nft else Backend.NFT
            self._counted = (now, Detection(backend, f"{legacy} legacy rules, {nft} nft rules"))
        return self._counted[1]

    def detect(self) -> Detection:
        if len(self.available) == 1:
            return Detection(self.available[0], "the only iptables backend installed")
        if not self.available:
            raise RuntimeError("neither iptables-nft-restore nor iptables-legacy-restore found")
        for backend in (Backend.NFT, Backend.LEGACY):
            chain = self._hinted(backend)
            if chain:
                return Detection(backend, f"kubelet's {chain} chain is there")
        return self._count()
