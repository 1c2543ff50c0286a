"""Benchmark the installed `minicni` executable beside the reference bridge + host-local plugins.

`python -m lab.bench.plugin`, as root (`make bench`). Both plugins are exec'd exactly as a
runtime does (env + config on stdin, result on stdout), each in a private node namespace made for
the run, each ADD into a freshly made container namespace. Measured side by side in the same run,
interleaved so that neither plugin gets a quieter machine:
  - ADD and DEL latency, p50 and p95 over --runs pods (pods accumulate: DEL runs with all of them
    attached, as on a busy node);
  - the wall time of --concurrent ADDs started at once;
  - the start-up of `minicni` (VERSION) against a bare interpreter and the reference plugin;
  - `python -X importtime` of one ADD: what the ADD path imports and what it costs.
Everything made (namespaces, bridges, stores, logs) is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicni.net import netns

REFERENCE_DIR = Path("/usr/lib/cni")
# The reference plugins packaged by Debian 12 (v1.1.1) speak CNI up to 1.0.0: both use it.
CONFIG_VERSION = "1.0.0"
IFNAME = "eth0"


@dataclass
class Subject:
    """One plugin under test: the executable, its config, its node namespace."""

    label: str
    executable: Path
    config: dict[str, Any]
    node: str  # node namespace name
    cni_path: str
    extra_env: Mapping[str, str] = field(default_factory=dict)
    add_ms: list[float] = field(default_factory=list)
    del_ms: list[float] = field(default_factory=list)
    concurrent_ms: float = 0.0
    pods: list[tuple[str, str]] = field(default_factory=list)  # (container ID, netns name)

    @property
    def slug(self) -> str:
        """The label as container IDs and file names allow it."""
        return "".join(c if c.isalnum() else "-" for c in self.label)

    @property
    def stdin(self) -> bytes:
        return json.dumps(self.config).encode()

    def env(self, command: str, container_id: str = "", netns_name: str = "") -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns.path_of(netns_name) if netns_name else "",
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": self.cni_path,
            **self.extra_env,
        }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def timed_exec(subject: Subject, env: Mapping[str, str]) -> tuple[float, bytes]:
    """Exec the plugin once from inside its node namespace; return (ms, stdout). Fails loudly:
    a benchmark of failing calls would be meaningless."""
    with netns.enter(netns.path_of(subject.node)):  # the child inherits this thread's netns
        start = time.perf_counter()
        proc = subprocess.run(
            [str(subject.executable)],
            input=subject.stdin,
            env=dict(env),
            capture_output=True,
            check=False,
        )
        elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise RuntimeError(
            f"{subject.label} {env['CNI_COMMAND']} failed ({proc.returncode}): "
            f"{proc.stdout.decode(errors='replace')} {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return elapsed, proc.stdout


def fresh_netns(prefix: str, count: int) -> list[str]:
    names = []
    for _ in range(count):
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        netns.create(name)
        names.append(name)
    return names


def measure_add_del(subjects: list[Subject], runs: int, tag: str) -> None:
    for subject in subjects:  # warm-up, not counted: creates the bridge, fills the page cache
        warm = fresh_netns(f"bw{tag}", 1)[0]
        subject.pods.append((f"warm-{tag}-{subject.slug}", warm))
        timed_exec(subject, subject.env("ADD", f"warm-{tag}-{subject.slug}", warm))
        timed_exec(subject, subject.env("DEL", f"warm-{tag}-{subject.slug}", warm))
    for subject in subjects:
        for i, name in enumerate(fresh_netns(f"bp{tag}", runs)):
            subject.pods.append((f"pod-{subject.slug}-{i}", name))
    for i in range(runs):
        order = subjects if i % 2 == 0 else subjects[::-1]
        for subject in order:
            container_id, name = subject.pods[1 + i]
            ms, out = timed_exec(subject, subject.env("ADD", container_id, name))
            assert json.loads(out)["ips"], f"{subject.label} ADD returned no address"
            subject.add_ms.append(ms)
    for i in range(runs):
        order = subjects if i % 2 == 0 else subjects[::-1]
        for subject in order:
            container_id, name = subject.pods[1 + i]
            ms, _ = timed_exec(subject, subject.env("DEL", container_id, name))
            subject.del_ms.append(ms)


def measure_concurrent(subject: Subject, count: int, tag: str, work: Path) -> None:
    """Start `count` ADDs at once (config from a file, so no child waits for us to feed its
    stdin); wall time from the first spawn to the last exit."""
    names = fresh_netns(f"bc{tag}", count)
    pods = [(f"conc-{subject.slug}-{i}", name) for i, name in enumerate(names)]
    subject.pods.extend(pods)
    config_file = work / f"{subject.slug}.json"
    config_file.write_bytes(subject.stdin)
    procs = []
    with netns.enter(netns.path_of(subject.node)):
        start = time.perf_counter()
        for container_id, name in pods:
            with config_file.open("rb") as stdin:
                procs.append(
                    subprocess.Popen(
                        [str(subject.executable)],
                        stdin=stdin,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        env=subject.env("ADD", container_id, name),
                    )
                )
        outputs = [(proc.communicate()[0], proc.returncode) for proc in procs]
        subject.concurrent_ms = (time.perf_counter() - start) * 1000
    addresses = set()
    for out, code in outputs:
        if code != 0:
            raise RuntimeError(f"{subject.label} concurrent ADD failed: {out.decode()}")
        addresses.add(json.loads(out)["ips"][0]["address"])
    if len(addresses) != count:
        raise RuntimeError(
            f"{subject.label}: {count} concurrent ADDs got {len(addresses)} addresses"
        )


def startup_ms(argv: list[str], env: Mapping[str, str], stdin: bytes, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, input=stdin, env=dict(env), capture_output=True, check=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def import_profile(subject: Subject, tag: str) -> tuple[float, list[tuple[float, str]]]:
    """One ADD with PYTHONPROFILEIMPORTTIME: (total import ms, top-level imports by cost)."""
    name = fresh_netns(f"bi{tag}", 1)[0]
    container_id = f"imports-{tag}"
    subject.pods.append((container_id, name))
    env = dict(subject.env("ADD", container_id, name), PYTHONPROFILEIMPORTTIME="1")
    with netns.enter(netns.path_of(subject.node)):
        proc = subprocess.run(
            [str(subject.executable)], input=subject.stdin, env=env, capture_output=True
        )
    if proc.returncode != 0:
        raise RuntimeError(f"ADD with import profiling failed: {proc.stdout.decode()}")
    top: list[tuple[float, str]] = []
    for line in proc.stderr.decode().splitlines():
        # "import time: <self us> | <cumulative us> | <2 spaces per nesting level><module>"
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        module = parts[2][1:]
        if not module.startswith(" "):  # top level: its cumulative time includes its children
            top.append((int(parts[1]) / 1000, module))
    return sum(ms for ms, _ in top), sorted(top, reverse=True)


def cleanup(subjects: list[Subject]) -> None:
    for subject in subjects:
        for _, name in subject.pods:
            netns.remove(name)
        netns.remove(subject.node)  # its bridge and every host veth go with it


def default_minicni() -> Path:
    beside = Path(sys.executable).parent / "minicni"
    found = beside if beside.exists() else shutil.which("minicni")
    if not found:
        raise SystemExit("bench: no minicni executable; pip install -e . into this venv first")
    return Path(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="ADDs and DELs per plugin")
    parser.add_argument("--concurrent", type=int, default=20, help="simultaneous ADDs")
    parser.add_argument("--minicni", type=Path, default=None, help="the installed executable")
    parser.add_argument(
        "--plugin-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both plugins, as a runtime passing its own on (repeatable)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces); run `make bench` as root", file=sys.stderr)
        return 2
    if not (REFERENCE_DIR / "bridge").exists() or not (REFERENCE_DIR / "host-local").exists():
        print(
            f"bench: reference plugins missing in {REFERENCE_DIR}: "
            "apt-get install containernetworking-plugins",
            file=sys.stderr,
        )
        return 2
    executable = args.minicni or default_minicni()
    extra_env = dict(item.split("=", 1) for item in args.plugin_env)
    tag = uuid.uuid4().hex[:4]
    work = Path(tempfile.mkdtemp(prefix="minicni-pluginbench-"))
    subjects = [
        Subject(
            label="minicni",
            executable=executable,
            config={
                "cniVersion": CONFIG_VERSION,
                "name": "benchmini",
                "type": "minicni",
                "bridge": f"bmini{tag}",
                "subnet": "10.99.1.0/24",
                "mtu": 1500,
                "dataDir": str(work / "minicni"),
                "logFile": str(work / "minicni.log"),
            },
            node=f"bnm{tag}",
            cni_path=str(executable.parent),
            extra_env=extra_env,
        ),
        Subject(
            label="bridge+host-local",
            executable=REFERENCE_DIR / "bridge",
            config={
                "cniVersion": CONFIG_VERSION,
                "name": "benchref",
                "type": "bridge",
                "bridge": f"bref{tag}",
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.99.2.0/24",
                    "dataDir": str(work / "host-local"),
                },
            },
            node=f"bnr{tag}",
            cni_path=str(REFERENCE_DIR),
            extra_env=extra_env,
        ),
    ]
    try:
        for subject in subjects:
            netns.create(subject.node)
        print(f"minicni executable: {executable}")
        print(f"reference: {REFERENCE_DIR}/bridge + host-local, cniVersion {CONFIG_VERSION}")
        if extra_env:
            print(f"plugin environment adds: {extra_env}")
        print(f"{args.runs} ADDs then {args.runs} DELs each, interleaved, fresh netns per pod")
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
        measure_add_del(subjects, args.runs, tag)
        for subject in subjects:
            measure_concurrent(subject, args.concurrent, tag, work)
        report_latency(subjects, args.concurrent)
        report_startup(subjects[0], subjects[1], tag)
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    finally:
        cleanup(subjects)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report_latency(subjects: list[Subject], concurrent: int) -> None:
    mini, ref = subjects
    header = f"{'':24}{'p50 ms':>10}{'p95 ms':>10}"
    print(header)
    for op in ("ADD", "DEL"):
        for subject in subjects:
            values = subject.add_ms if op == "ADD" else subject.del_ms
            print(
                f"{op + ' ' + subject.label:24}"
                f"{percentile(values, 50):10.1f}{percentile(values, 95):10.1f}"
            )
        mini_values = mini.add_ms if op == "ADD" else mini.del_ms
        ref_values = ref.add_ms if op == "ADD" else ref.del_ms
        print(
            f"{op + ' ratio minicni/ref':24}"
            f"{percentile(mini_values, 50) / percentile(ref_values, 50):9.2f}x"
            f"{percentile(mini_values, 95) / percentile(ref_values, 95):9.2f}x"
        )
    print(f"\n{concurrent} concurrent ADDs, wall time:")
    for subject in subjects:
        print(f"  {subject.label:22}{subject.concurrent_ms:10.1f} ms")
    print(f"  {'ratio minicni/ref':22}{mini.concurrent_ms / ref.concurrent_ms:9.2f}x")


def report_startup(mini: Subject, ref: Subject, tag: str) -> None:
    version_env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"}
    version_in = json.dumps({"cniVersion": CONFIG_VERSION}).encode()
    bare = startup_ms([sys.executable, "-I", "-S", "-c", "pass"], version_env, b"", 20)
    site = startup_ms([sys.executable, "-I", "-c", "pass"], version_env, b"", 20)
    mini_version = startup_ms([str(mini.executable)], version_env, version_in, 20)
    ref_version = startup_ms([str(ref.executable)], version_env, version_in, 20)
    print("\nstart-up (median of 20):")
    print(f"  python -I -S -c pass        {bare:8.1f} ms")
    print(f"  python -I -c pass           {site:8.1f} ms")
    print(f"  minicni VERSION             {mini_version:8.1f} ms")
    print(f"  reference bridge VERSION    {ref_version:8.1f} ms")
    total, top = import_profile(mini, tag)
    print(f"\nADD imports (python -X importtime): {total:.1f} ms in top-level imports; costliest:")
    for ms, module in top[:10]:
        print(f"  {ms:8.1f} ms  {module}")


if __name__ == "__main__":
    sys.exit(main())
