"""Which iptables backend the node uses -- legacy (x_tables) or nft -- detected as
kubernetes-sigs/iptables-wrappers does, so our rules live beside kube-proxy's and kubelet's.

The two backends are separate kernel subsystems: an ACCEPT written with iptables-nft does not
override a FORWARD DROP written with iptables-legacy (a packet must pass both). kind picks the
backend per node at boot, and kube-proxy, flannel and kindnet follow what the node uses.

The order (iptables-wrappers `pkg/xtables/detect.go`, then its v2 shell script for nodes without
kubelet): kubelet >= 1.17 creates `KUBE-IPTABLES-HINT` (or `KUBE-KUBELET-CANARY`) in `mangle`; in
the nft backend -> nft, in the legacy one -> legacy. Without those, the backend with more rules
wins; a built-in chain whose policy is not ACCEPT (Docker's FORWARD DROP) counts as a rule, and our
own chains do not count (or the first choice would feed itself). A tie (an empty node) is nft,
the default of today's distributions.

Legacy tables are read only when they exist (`/proc/net/ip_tables_names`): reading a legacy table
creates it, and a stray empty legacy table confuses other tools' detection.
"""

from __future__ import annotations

import enum
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

KUBELET_HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
OWN_CHAIN_PREFIX = "MINICNI-"
LEGACY_TABLES = Path("/proc/net/ip_tables_names")
TIMEOUT_SECONDS = 30


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
    ) -> None:
        self._run = runner
        self._legacy_tables = legacy_tables
        self.available = [b for b in Backend if which(b.binary("iptables-restore"))]

    def legacy_tables(self) -> set[str]:
        try:
            return set(self._legacy_tables.read_text().split())
        except OSError:  # no x_tables in this kernel: nothing legacy exists
            return set()

    def has_chain(self, backend: Backend, table: str, chain: str) -> bool:
        if backend is Backend.LEGACY and table not in self.legacy_tables():
            return False
        done = self._run([backend.binary("iptables"), "-w", "5", "-t", table, "-S", chain])
        return done.returncode == 0

    def _rules(self, backend: Backend) -> int:
        if backend is Backend.LEGACY and not self.legacy_tables():
            return 0
        done = self._run([backend.binary("iptables-save")])
        return count_rules(done.stdout) if done.returncode == 0 else 0

    def detect(self) -> Detection:
        if len(self.available) == 1:
            return Detection(self.available[0], "the only iptables backend installed")
        if not self.available:
            raise RuntimeError("neither iptables-nft-restore nor iptables-legacy-restore found")
        for backend in (Backend.NFT, Backend.LEGACY):
            for chain in KUBELET_HINT_CHAINS:
                if self.has_chain(backend, "mangle", chain):
                    return Detection(backend, f"kubelet's {chain} chain is there")
        legacy, nft = self._rules(Backend.LEGACY), self._rules(Backend.NFT)
        if legacy > nft:
            return Detection(Backend.LEGACY, f"{legacy} legacy rules, {nft} nft rules")
        return Detection(Backend.NFT, f"{legacy} legacy rules, {nft} nft rules")
