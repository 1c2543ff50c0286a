"""kill -9 at every syscall of ADD that changes something (issue 11): the installed plugin runs
under strace, which kills it on entering the N-th call of one syscall (`-e inject=SYSCALL:
signal=KILL:when=N`, the call itself never runs), in a node namespace this test makes. A runtime
then sends DEL, as containerd does after a failed ADD; it must succeed and leave no reservation,
owner link, temporary file or link of that pod (the bridge, node infrastructure, may stay).

The slice in the normal suite kills every such call of one ADD on a node that already has a pod
(MINICNI_KILLPOINTS=slice); `make killpoints` (MINICNI_KILLPOINTS=full) adds the first ADD on an
empty node (bridge, sysctl), the first ADD after a reboot (the stale-reservation sweep), DEL
killed at each of its calls and followed by another DEL, and proves after every point that the
same pod can be added again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minicni.net.links import host_veth_name
from netns_tests.conftest import FakeNode, in_netns, links_in
from netns_tests.hostile_support import Answer, check_answer, namespace_state, run_plugin

pytestmark = pytest.mark.root

CAMPAIGN = os.environ.get("MINICNI_KILLPOINTS", "slice")
TIMEOUT = 60.0
# Every syscall through which ADD changes a file, the kernel's network state or a namespace.
SYSCALLS = (
    "write", "pwrite64", "writev", "symlink", "symlinkat", "link", "linkat", "rename", "renameat",
    "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "sendto", "sendmsg", "setns", "flock",
    "fsync", "fchmod", "ftruncate",
)  # fmt: skip
STRACE = shutil.which("strace")
STORE_BOOKKEEPING = {"lock", "boot_id", "last_reserved_ip.0", "spare"}


@dataclass
class Victim:
    node: FakeNode
    pod: str
    container_id: str
    cwd: Path

    def env(self, command: bytes) -> dict[bytes, bytes]:
        return {
            b"CNI_COMMAND": command,
            b"CNI_CONTAINERID": self.container_id.encode(),
            b"CNI_NETNS": self.pod.encode(),
            b"CNI_IFNAME": b"eth0",
            b"CNI_ARGS": b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=kp",
            b"CNI_PATH": b"/opt/cni/bin",
            b"MINICNI_LOG_FILE": str(self.node.log_file).encode(),
        }

    def run(self, command: bytes, wrapper: tuple[str, ...] = ()) -> Answer:
        stdin = json.dumps(self.node.config()).encode()
        return run_plugin(
            self.node.host, self.env(command), stdin, cwd=self.cwd, timeout=TIMEOUT, wrapper=wrapper
        )


def strace(*options: str) -> tuple[str, ...]:
    # Not --seccomp-bpf: strace 6.1 then lets the injected signal through only sometimes.
    assert STRACE is not None
    return (STRACE, "-f", "-qq", *options)


def count_syscalls(victim: Victim, command: bytes, trace: Path) -> Counter[str]:
    """How often the command calls each syscall of SYSCALLS, from a traced run."""
    answer = victim.run(command, strace("-o", str(trace), "-e", f"trace={','.join(SYSCALLS)}"))
    assert answer.returncode == 0, answer.describe()
    calls: Counter[str] = Counter()
    for line in trace.read_text().splitlines():
        found = re.match(r"(?:\[pid +\d+\] |\d+ +)?(\w+)\(", line)  # -o with -f: "PID name("
        if found and found.group(1) in SYSCALLS:
            calls[found.group(1)] += 1
    return calls


def kill_points(calls: Counter[str]) -> list[tuple[str, int]]:
    return [(name, n) for name in sorted(calls) for n in range(1, calls[name] + 1)]


def killed_at(victim: Victim, command: bytes, syscall: str, n: int) -> bool:
    inject = f"inject={syscall}:signal=KILL:when={n}"
    answer = victim.run(command, strace("-o", "/dev/null", "-e", f"trace={syscall}", "-e", inject))
    return answer.returncode == -9  # strace dies of the signal its tracee died of


def leftovers(victim: Victim, other_pods: set[str]) -> list[str]:
    """What the victim left: store entries, links in the node and in its pod."""
    found = []
    store = victim.node.store_dir
    for name in os.listdir(store) if store.is_dir() else []:
        path = store / name
        if name in STORE_BOOKKEEPING:
            continue
        if name.startswith("."):
            found.append(f"temporary file {name}")
        elif name.startswith("owner-") and not any(cid in name for cid in other_pods):
            found.append(f"owner link {name}")
        elif name[0].isdigit():
            try:
                owner = json.loads(path.read_text()).get("containerID")
            except ValueError:
                owner = None
            if owner not in other_pods:
                found.append(f"reservation {name} of {owner!r}")
    if host_veth_name(victim.container_id, "eth0") in links_in(victim.node.host):
        found.append("host veth")
    pod_links = set(links_in(victim.pod)) - {"lo"}
    if pod_links:
        found.append(f"pod links {sorted(pod_links)}")
    return found


@pytest.fixture
def victim(node: FakeNode, tmp_path: Path) -> Iterator[Victim]:
    if STRACE is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    yield Victim(node, node.pod(), node.container_id(), cwd)


def _reset_fresh(victim: Victim) -> None:
    """An empty node: no bridge, forwarding off, no store."""
    if victim.node.bridge in links_in(victim.node.host):
        in_netns(victim.node.host, "ip", "link", "del", victim.node.bridge)
    in_netns(victim.node.host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    shutil.rmtree(victim.node.data_dir, ignore_errors=True)


def _reset_rebooted(victim: Victim) -> None:
    """A node just rebooted: empty, but for a store last used in an earlier boot, holding a pod
    of that boot (whose netns is gone)."""
    _reset_fresh(victim)
    store = victim.node.store_dir
    store.mkdir(parents=True)
    (store / "boot_id").write_text("an-earlier-boot")
    (store / "10.99.0.9").write_text(
        json.dumps(
            {"containerID": "old", "ifname": "eth0", "netns": "/run/netns/gone", "bootID": "x"}
        )
    )
    os.symlink("10.99.0.9", store / "owner-old@eth0")


SCENARIOS = {
    "slice": ["warm"],
    "full": ["warm", "fresh", "rebooted", "del"],
}


@pytest.mark.parametrize("scenario", SCENARIOS.get(CAMPAIGN, ["warm"]))
def test_del_after_add_killed_at_any_syscall_leaves_nothing(
    victim: Victim, scenario: str, tmp_path: Path
) -> None:
    node = victim.node
    others: set[str] = set()
    if scenario in ("warm", "del"):  # the bridge and another pod are there already
        neighbour, neighbour_id = node.pod(), node.container_id()
        assert node.add(neighbour, neighbour_id).code == 0
        others.add(neighbour_id)
    if scenario == "rebooted":
        others.add("old")  # may stay if the kill came first: not the victim's
    reset = {"fresh": _reset_fresh, "rebooted": _reset_rebooted}.get(scenario, lambda v: None)
    reset(victim)
    baseline_pod = namespace_state(victim.pod)

    command = b"DEL" if scenario == "del" else b"ADD"
    if command == b"DEL":
        assert victim.run(b"ADD").returncode == 0
    calls = count_syscalls(victim, command, tmp_path / "trace")
    if command == b"DEL":  # the counted DEL went through: set the pod up again
        assert victim.run(b"ADD").returncode == 0
    else:
        assert victim.run(b"DEL").returncode == 0
    reset(victim)
    points = kill_points(calls)
    # the trace saw the kernel requests and the store's names (the owner, the address file)
    store_names = (calls["rename"] or calls["renameat2"]) and (calls["link"] or calls["linkat"])
    assert (calls["sendto"] and store_names) or command == b"DEL", calls

    started, kills = time.monotonic(), 0
    for syscall, n in points:
        kills += killed_at(victim, command, syscall, n)
        deleted = victim.run(b"DEL")
        check_answer(deleted, b"DEL")
        assert deleted.returncode == 0, (syscall, n, deleted.describe())
        assert leftovers(victim, others) == [], f"killed at {syscall} #{n}"
        assert namespace_state(victim.pod) == baseline_pod, f"killed at {syscall} #{n}"
        if CAMPAIGN == "full":  # the same pod can be added again, and removed
            again = victim.run(b"ADD")
            assert again.returncode == 0, (syscall, n, again.describe())
            assert victim.run(b"DEL").returncode == 0
            assert leftovers(victim, others) == []
        if command == b"DEL":
            assert victim.run(b"ADD").returncode == 0
        reset(victim)
    seconds = time.monotonic() - started
    print(
        f"\nkillpoints {scenario}: {len(points)} points ({kills} kills) in {seconds:.0f} s: "
        + ", ".join(f"{name} x{count}" for name, count in sorted(calls.items()))
    )
    assert kills >= len(points) - 2, "strace did not kill at the counted calls"
    if command == b"DEL":
        assert victim.run(b"DEL").returncode == 0
    for cid in others - {"old"}:
        assert node.run("DEL", None, cid, None).code == 0
