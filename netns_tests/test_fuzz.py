"""The hostile-input campaign of issue 11 as a property, run against the installed executable in a
node namespace this test makes (as a runtime runs it): generated commands, environments (text and
raw bytes), config keys, types and values, and byte strings on stdin. For every input:

- exactly one JSON document on stdout: the result, or a CNI error object with an integer code;
- no traceback anywhere (stdout, stderr, the log files) and no internal error (code 999);
- an answer within the time-out (a hang fails the test);
- no change to the node namespace (but the bridge a successful ADD makes, which is node
  infrastructure), to the pod namespace, or to the file system outside the data dir and the
  configured log files; a successful ADD is undone by the DEL a runtime would send, and leaves
  nothing in the store.

The slice in the normal suite runs MINICNI_FUZZ_EXAMPLES examples (default 120) derandomised, so
CI is reproducible; `make fuzz` runs the full campaign (FUZZ_EXAMPLES=3000, FUZZ_SEED=11 by
default; any other seed explores other inputs). A failure prints the shrunk input.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, seed, settings
from hypothesis import strategies as st

from netns_tests.conftest import FakeNode, in_netns, links_in
from netns_tests.hostile_support import (
    check_answer,
    has_traceback,
    namespace_state,
    run_plugin,
    store_debris,
    tree_signature,
)

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("MINICNI_FUZZ_EXAMPLES", "120"))
SEED = os.environ.get("MINICNI_FUZZ_SEED", "")
TIMEOUT = 30.0  # seconds; the plugin answers in well under one

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
COMMANDS = [b"ADD"] * 5 + [b"DEL", b"CHECK", b"GC", b"STATUS", b"VERSION"]
KNOWN_KEYS = [
    "cniVersion", "name", "type", "bridge", "subnet", "ipam", "mtu", "hairpinMode",
    "isDefaultGateway", "dns", "logFile", "prevResult", "cni.dev/valid-attachments",
    "cni.dev/attachments", "runtimeConfig", "args", "capabilities",
]  # fmt: skip
NASTY = [
    "", ".", "..", "/", "%d", "%s%s%n", "%(x)s", "a%b", "a\nb", "x\r\n2030-01-01 forged",
    "\x00", "nul\x00x", "\ud800", "\udcff", "rt%d", "eth0", "a" * 15, "a" * 16, "é" * 8,
    "x" * 5000, "minicni0", "lo", " ", "\t", "\u2028", "../../etc", "${HOME}", "\\",
]  # fmt: skip

# -- values -------------------------------------------------------------------------------------
text = st.text(st.characters(codec=None, exclude_categories=()), max_size=24) | st.sampled_from(
    NASTY
)
surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 67, 68, 1500, 65535, 65536, -1, 2**31, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
    | surrogates
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ipv4 = st.ip_addresses(v=4).map(str)
cidr = st.builds(lambda a, n: f"{a}/{n}", ipv4, st.integers(0, 33)) | st.sampled_from(
    ["10.98.0.0/24", "10.98.0.0/30", "10.98.0.0/31", "10.98.0.0/16", "fd00::/64", "10.98.0.0"]
)
ifname = st.sampled_from(NASTY) | st.text(
    st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=16
)
range_spec = st.fixed_dictionaries(
    {},
    optional={
        "subnet": cidr | values,
        "rangeStart": ipv4 | values,
        "rangeEnd": ipv4 | values,
        "gateway": ipv4 | values,
    },
)
ipam = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["", "minicni", "host-local", "dhcp"]) | values,
            "ranges": st.lists(st.lists(range_spec | values, max_size=2), max_size=2) | values,
        },
    )
    | values
)
prev_result = (
    st.fixed_dictionaries(
        {},
        optional={
            "cniVersion": st.sampled_from(VERSIONS) | values,
            "interfaces": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"name": ifname | values, "mac": text, "sandbox": text | values}
                )
                | values,
                max_size=3,
            )
            | values,
            "ips": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "address": cidr | values,
                        "gateway": ipv4 | values,
                        "interface": st.integers(-1, 3) | values,
                        "version": st.sampled_from(["4", "6"]),
                    },
                )
                | values,
                max_size=3,
            )
            | values,
            "routes": st.lists(
                st.fixed_dictionaries({}, optional={"dst": cidr | values, "gw": ipv4 | values})
                | values,
                max_size=3,
            )
            | values,
        },
    )
    | values
)
attachments = (
    st.lists(
        st.fixed_dictionaries({}, optional={"containerID": text, "ifname": ifname}) | values,
        max_size=3,
    )
    | st.none()
    | values
)
by_key = {
    "cniVersion": st.sampled_from(VERSIONS) | values,
    "bridge": ifname | values,
    "subnet": cidr | values,
    "ipam": ipam,
    "mtu": st.integers(0, 70000) | values,
    "prevResult": prev_result,
    "cni.dev/valid-attachments": attachments,
    "cni.dev/attachments": attachments,
}


@dataclass(frozen=True)
class Case:
    """One invocation. Paths are symbolic ("pod", "fifo", "logs/x") and made real per run, so
    every path the plugin may write stays inside this test's directory."""

    command: bytes
    env: tuple[tuple[str, Any], ...]  # CNI_* and MINICNI_LOG_FILE: a symbol, or raw bytes
    config: dict[str, Any]
    mangle: tuple[Any, ...] = ()  # how stdin's JSON is broken, if it is
    edits: tuple[str, ...] = field(default=())


PATH_SYMBOLS = ["data", "data/sub", "logs/minicni.log", "logs/a.log", "logs/deep/b.log", "fifo",
                "dir", "file", "socket", "relative", "dev-stdout", "proc-fd1", "dev-null",
                "empty"]  # fmt: skip
SCRATCH = ("data", "logs", "dir", "cwd")  # directories a plugin may legitimately write into
NETNS_SYMBOLS = ["pod", "fifo", "dir", "file", "socket", "missing", "node",
                 "mnt-ns", "relative", "empty"]  # fmt: skip


def env_value(symbols: list[str]) -> st.SearchStrategy[Any]:
    # Never an absolute path as raw bytes: MINICNI_LOG_FILE would write it on this host.
    raw = st.binary(max_size=24).filter(lambda b: b"\x00" not in b and not b.startswith(b"/"))
    return st.sampled_from(symbols) | raw.map(lambda b: ("bytes", b))


# Each variable: the value a runtime passes first (what shrinking goes back to), then the odd ones.
ENV_CHOICES = {
    "CNI_CONTAINERID": ["valid", "%d", "nl", "long"],
    "CNI_NETNS": NETNS_SYMBOLS,
    "CNI_IFNAME": ["eth0", "net1", "a" * 15, "eth%d", "bad/x"],
    "CNI_ARGS": ["k8s", "", "garbage", "=x;", "absent"],
    "CNI_PATH": ["/opt/cni/bin", "absent", ""],
    "MINICNI_LOG_FILE": ["logs/env.log", "relative"],
}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Mostly what a runtime sends, with a few things wrong: most inputs get past the first
    check, so the deeper paths (the store, the kernel, DEL after ADD) are exercised too."""
    command = draw(st.sampled_from([*COMMANDS, b"?"]))
    if command == b"?":
        command = draw(st.binary(max_size=8).filter(lambda b: b"\0" not in b))
    env = dict.fromkeys(ENV_CHOICES, "")
    for name in env:
        env[name] = ENV_CHOICES[name][0]
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 6]))):
        name = draw(st.sampled_from(sorted(ENV_CHOICES)))
        env[name] = draw(env_value(ENV_CHOICES[name]))
    env_items = tuple(env.items())
    config: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(VERSIONS[::-1])),
        "name": "fz",
        "type": "minicni",
        "bridge": "BRIDGE",
        "subnet": "10.98.0.0/24",
        "dataDir": "data",
        "logFile": "logs/minicni.log",
    }
    if command == b"GC":  # what libcni adds for GC, so that GC gets past the config check
        config["cni.dev/valid-attachments"] = []
    edits = []
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 4]))):
        key = draw(st.sampled_from(KNOWN_KEYS) | text)
        if key in ("dataDir", "logFile"):  # never removed: the defaults are this host's paths
            config[key] = draw(st.sampled_from(PATH_SYMBOLS) | values.filter(_not_a_path))
        elif draw(st.integers(0, 5)) == 0:
            config.pop(key, None)
        else:
            config[key] = draw(by_key.get(key, values))
        edits.append(key)
    mode = draw(st.sampled_from(["json"] * 8 + ["truncated", "garbled", "deep", "digits", "bytes"]))
    if mode in ("truncated", "garbled"):
        mangle: tuple[Any, ...] = (mode, draw(st.integers(0, 400)), draw(st.binary(max_size=8)))
    elif mode == "deep":
        mangle = (mode, draw(st.sampled_from([63, 64, 65, 1000, 100_000])))
    elif mode == "digits":
        mangle = (mode, draw(st.sampled_from([4300, 4301, 5000])))
    elif mode == "bytes":
        mangle = (mode, draw(st.binary(max_size=64)))
    else:
        mangle = ()
    return Case(command, env_items, config, mangle, tuple(edits))


def mangled(body: bytes, mangle: tuple[Any, ...]) -> bytes:
    """The config's JSON, broken the way the case says."""
    if not mangle:
        return body
    mode = mangle[0]
    if mode == "truncated":
        return body[: mangle[1] % (len(body) + 1)]
    if mode == "garbled":
        at = mangle[1] % (len(body) + 1)
        return body[:at] + (mangle[2] or b"\xff") + body[at:]
    if mode == "deep":
        return body[:-1] + b', "x": ' + b"[" * mangle[1] + b"]" * mangle[1] + b"}"
    if mode == "digits":
        return body[:-1] + b', "mtu": ' + b"9" * mangle[1] + b"}"
    return bytes(mangle[1])


def _not_a_path(value: Any) -> bool:
    """A generated dataDir or logFile may be anything but a real absolute path on this host."""
    return not (isinstance(value, str) and value.startswith("/"))


# -- the node the plugin runs on -----------------------------------------------------------------
@dataclass
class Bench:
    node: FakeNode
    pod: str
    root: Path  # everything the plugin may touch lives here
    bridge: str
    serial: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    host_baseline: Any = None
    pod_baseline: Any = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def path(self, symbol: str) -> str:
        special = {
            "relative": "relative/minicni.log",
            "dev-stdout": "/dev/stdout",
            "proc-fd1": "/proc/self/fd/1",
            "dev-null": "/dev/null",
            "empty": "",
            "missing": str(self.root / "no-such-netns"),
            "node": self.node.host,
            "pod": self.pod,
            "mnt-ns": "/proc/self/ns/mnt",
        }
        return special.get(symbol, str(self.root / symbol))

    def materialise(self, case: Case) -> tuple[dict[bytes, bytes], bytes, set[Path]]:
        """The env bytes and stdin of `case`, and the paths it names as data dir or log file
        (the only ones the plugin may change)."""
        self.serial += 1
        env: dict[bytes, bytes] = {b"CNI_COMMAND": case.command}
        writable: set[Path] = set()
        for name, value in case.env:
            if isinstance(value, tuple):
                env[name.encode()] = value[1]
                continue
            if value == "absent":
                continue
            text_value = {
                "valid": f"fz-{self.serial}-{uuid.uuid4().hex[:8]}",
                "nl": "fz\n2030-01-01 forged line",
                "long": "c" * 300,
                "k8s": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=fz",
            }.get(value, value)
            if name in ("CNI_NETNS", "MINICNI_LOG_FILE"):
                text_value = self.path(value)
            env[name.encode()] = text_value.encode("utf-8", "surrogateescape")
            if name == "MINICNI_LOG_FILE":
                writable.add(Path(text_value))
        config = dict(case.config)
        for key in ("dataDir", "logFile"):
            if isinstance(config.get(key), str) and config[key] in PATH_SYMBOLS:
                config[key] = self.path(config[key])
            if isinstance(config.get(key), str) and config[key].startswith(str(self.root)):
                writable.add(Path(config[key]))
        if config.get("bridge") == "BRIDGE":
            config["bridge"] = self.bridge
        return env, mangled(json.dumps(config).encode(), case.mangle), writable

    def reset(self) -> None:
        """Empty the scratch directories and restore the special files between examples."""
        for name in SCRATCH:
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir()
        (self.root / "file").write_text("a regular file\n")


@pytest.fixture
def bench(node: FakeNode, tmp_path: Path) -> Iterator[Bench]:
    root = tmp_path / "fuzz"
    for directory in (*SCRATCH, "relative"):
        (root / directory).mkdir(parents=True)
    os.mkfifo(root / "fifo")
    (root / "file").write_text("a regular file\n")
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(str(root / "socket"))
    pod = node.pod()
    # An underlay with a default route, so the MTU detection has something to read.
    for argv in (
        ("ip", "link", "add", "fzup", "type", "veth", "peer", "name", "fzpeer"),
        ("ip", "addr", "add", "192.0.2.10/24", "dev", "fzup"),
        ("ip", "link", "set", "fzup", "up"),
        ("ip", "route", "add", "default", "via", "192.0.2.1"),
    ):
        assert in_netns(node.host, *argv).returncode == 0
    built = Bench(node, pod, root, node.bridge)
    built.host_baseline = namespace_state(node.host)
    built.pod_baseline = namespace_state(pod)
    try:
        yield built
    finally:
        held.close()


def _remove_bridges(bench: Bench) -> None:
    for name, link in links_in(bench.node.host).items():
        if link.kind == "bridge":
            in_netns(bench.node.host, "ip", "link", "del", name)


def run_case(bench: Bench, case: Case) -> None:
    env, stdin, writable = bench.materialise(case)
    skip = {bench.root / name for name in SCRATCH} | writable
    files_before = tree_signature(bench.root, skip)
    cwd = bench.root / "cwd"
    try:
        answer = run_plugin(bench.node.host, env, stdin, cwd=cwd, timeout=TIMEOUT)
        document = check_answer(answer, case.command)
        code = document.get("code", 0) if isinstance(document, dict) else 0
        outcome = f"{case.command[:8].decode(errors='replace')} -> {code or 'ok'}"
        bench.outcomes[outcome] += 1
        event(outcome)
        if case.command == b"ADD" and answer.returncode == 0:
            assert document is not None
            # The runtime's DEL, with the same environment and config, undoes it all.
            deleted = run_plugin(
                bench.node.host, {**env, b"CNI_COMMAND": b"DEL"}, stdin, cwd=cwd, timeout=TIMEOUT
            )
            check_answer(deleted, b"DEL")
            assert deleted.returncode == 0, deleted.describe()
        described = answer.describe()
        for data_dir in {bench.root / "data", bench.root / "dir"} | writable:
            assert store_debris(data_dir) == set(), described
        assert namespace_state(bench.node.host) == bench.host_baseline, described
        assert namespace_state(bench.pod) == bench.pod_baseline, described
        assert tree_signature(bench.root, skip) == files_before, described
        assert os.listdir(cwd) == [], described  # nothing relative to the runtime's directory
        for log in [*(bench.root / "logs").rglob("*"), *writable]:
            if log.is_file():
                assert not has_traceback(log.read_bytes()), (log, described)
    finally:
        _remove_bridges(bench)
        bench.reset()


def test_every_input_gets_one_cni_answer_and_changes_nothing_else(bench: Bench) -> None:
    profile = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not SEED,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )

    @profile
    @given(case=cases())
    def property_holds(case: Case) -> None:
        run_case(bench, case)

    if SEED:
        property_holds = seed(int(SEED))(property_holds)
    started = time.monotonic()
    try:
        property_holds()
    finally:
        seconds = time.monotonic() - started
        runs = sum(bench.outcomes.values())
        print(f"\nfuzz: {runs} runs in {seconds:.0f} s (seed {SEED or 'derandomized'})")
        for outcome, count in bench.outcomes.most_common():
            print(f"  {count:5d}  {outcome}")
