"""Benchmark the plugin the agent installs, served and in-process, beside bridge + host-local.

`python -m lab.bench.plugin`, as root (`sudo make bench`). A real `minicni-agent --cni-socket`
(NET_ADMIN and NET_RAW only, as the DaemonSet runs it) installs the plugin (bundle mode, as the
DaemonSet; `--plugin-install launcher` is quicker to set up) into a node namespace made for the run;
the reference plugins get a node namespace of their own. Every plugin is exec'd exactly as a runtime
does (env + config on stdin, result on stdout) from inside its node namespace, each ADD into a fresh
container namespace. In one run, interleaved so that none gets a quieter machine:

  - served:     the installed plugin, the agent serving (the shim forwards to it);
  - in-process: the same executable with the agent stopped, as its shim sees it: the socket gone
                (renamed away for those calls: the agent keeps running, so the two interleave);
  - reference:  /usr/lib/cni/bridge + host-local.

Measured: ADD p50/p95; DEL p50 as the runtime waits for it (the reply) and until the kernel work is
done (the served DEL answers once recorded and deletes the veth after: complete = its record gone);
the wall time of 20 ADDs started at once (the median of 5 such bursts each, interleaved: one
burst is one sample, ~0.2 s long); then, with 1,000 pods already on each node (a bridge holds
at most 1,023 ports), ADD p50 of the served plugin and of the reference; and the shim's start-up
floor. CPU columns add the agent's CPU to the served calls. The targets of issue 9 are printed
beside the figures. Everything made (namespaces, the agent, files) is removed at the end, even on
failure. `--family dual`: every plugin gives each pod an IPv4 and an IPv6 address (the agent's
node has a pod CIDR of each family).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicni.ipam.store import AddressStore
from minicni.net import netns

REFERENCE_DIR = Path("/usr/lib/cni")
# The reference plugins packaged by Debian 12 (v1.1.1) speak CNI up to 1.0.0: every subject uses it.
CONFIG_VERSION = "1.0.0"
IFNAME = "eth0"
AGENT_CAPS = "-all,+net_admin,+net_raw"
BRIDGE_MAX_PORTS = 1023  # BR_MAX_PORTS: one bridge holds no more
CLK_TCK = os.sysconf("SC_CLK_TCK")
MINI_SUBNETS = ["10.99.0.0/21", "fd00:96:99::/64"]  # /21: a bridge's 1,023 ports and then some
REF_SUBNETS = ["10.98.0.0/21", "fd00:96:98::/64"]
CLUSTER_CIDRS = ["10.96.0.0/12", "fd00:96::/32"]  # each holds the subnets above


@dataclass
class Subject:
    """One plugin under test: the executable, its config, its node namespace."""

    label: str
    executable: Path
    config: dict[str, Any]
    node: str  # node namespace name
    cni_path: str
    around: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    """Entered around each call (the in-process subject hides the agent's socket)."""
    store_dir: Path | None = None
    """minicni's store: a served DEL is complete when its record there is gone."""
    agent_pid: int | None = None
    """Whose CPU counts too (the agent serving the calls)."""
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
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
        }

    def record(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def process_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            fields = stream.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def call(subject: Subject, command: str, container_id: str, pod: str) -> tuple[float, bytes]:
    """Exec the plugin once from inside its node namespace: (ms, stdout); records wall and CPU.
    Fails loudly: a benchmark of failing calls would be meaningless."""
    env = subject.env(command, container_id, pod)
    with subject.around(), netns.enter(netns.path_of(subject.node)):
        cpu_before = children_cpu_seconds() + process_cpu_seconds(subject.agent_pid)
        start = time.perf_counter()
        proc = subprocess.run(
            [str(subject.executable)], input=subject.stdin, env=env, capture_output=True
        )
        elapsed = (time.perf_counter() - start) * 1000
        cpu = children_cpu_seconds() + process_cpu_seconds(subject.agent_pid) - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(
            f"{subject.label} {command} failed ({proc.returncode}): "
            f"{proc.stdout.decode(errors='replace')} {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    subject.record(f"{command} cpu", cpu * 1000)
    return elapsed, proc.stdout


def add(subject: Subject, container_id: str, pod: str) -> None:
    ms, out = call(subject, "ADD", container_id, pod)
    assert json.loads(out)["ips"], f"{subject.label} ADD returned no address"
    subject.record("ADD", ms)


def delete(subject: Subject, container_id: str, pod: str) -> None:
    """DEL: the reply, and complete (a served DEL's kernel work goes on after its reply)."""
    start = time.perf_counter()
    ms, _ = call(subject, "DEL", container_id, pod)
    if subject.store_dir is not None:
        store = AddressStore(str(subject.store_dir))
        deadline = time.monotonic() + 30
        while store.is_deleting(container_id, IFNAME) and time.monotonic() < deadline:
            time.sleep(0.0002)
    subject.record("DEL", ms)
    subject.record("DEL complete", max(ms, (time.perf_counter() - start) * 1000))


def fresh_netns(prefix: str, count: int) -> list[str]:
    names = []
    for _ in range(count):
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        netns.create(name)
        names.append(name)
    return names


def interleaved(subjects: list[Subject], runs: int, tag: str, made: list[str]) -> None:
    """ADD then DEL of a fresh pod, each subject in turn, the order alternating each round."""
    for subject in subjects:  # warm-up, not counted: the bridge, the page cache
        (warm,) = fresh_netns(f"bw{tag}", 1)
        made.append(warm)
        add(subject, f"warm-{subject.slug}", warm)
        delete(subject, f"warm-{subject.slug}", warm)
        subject.samples.clear()
    pods = fresh_netns(f"bp{tag}", runs * len(subjects))
    made.extend(pods)
    for i in range(runs):
        order = subjects if i % 2 == 0 else subjects[::-1]
        for j, subject in enumerate(order):
            pod = pods[i * len(subjects) + j]
            add(subject, f"{subject.slug}-{i}", pod)
            delete(subject, f"{subject.slug}-{i}", pod)


def concurrent_adds(subject: Subject, count: int, tag: str, work: Path, made: list[str]) -> float:
    """Wall time of `count` ADDs started at once (config from a file, so no child waits for us
    to feed its stdin); then their DELs, not timed."""
    names = fresh_netns(f"bc{tag}", count)
    made.extend(names)
    config_file = work / f"{subject.slug}.json"
    config_file.write_bytes(subject.stdin)
    procs = []
    with subject.around(), netns.enter(netns.path_of(subject.node)):
        start = time.perf_counter()
        for i, name in enumerate(names):
            with config_file.open("rb") as stdin:
                procs.append(
                    subprocess.Popen(
                        [str(subject.executable)],
                        stdin=stdin,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        env=subject.env("ADD", f"conc-{subject.slug}-{i}", name),
                    )
                )
        outputs = [(proc.communicate()[0], proc.returncode) for proc in procs]
        wall = (time.perf_counter() - start) * 1000
    addresses = set()
    for out, code in outputs:
        if code != 0:
            raise RuntimeError(f"{subject.label} concurrent ADD failed: {out.decode()}")
        addresses.add(json.loads(out)["ips"][0]["address"])
    if len(addresses) != count:
        raise RuntimeError(f"{subject.label}: {count} concurrent ADDs got {len(addresses)}")
    for i, name in enumerate(names):
        delete(subject, f"conc-{subject.slug}-{i}", name)
    return wall


def concurrent_bursts(
    subjects: list[Subject], count: int, bursts: int, tag: str, work: Path, made: list[str]
) -> dict[str, list[float]]:
    """Each subject's wall times of `bursts` rounds of `count` ADDs started at once, the order
    alternating each round, as `interleaved` does: one burst is one sample of a noisy figure."""
    walls: dict[str, list[float]] = {subject.label: [] for subject in subjects}
    for i in range(bursts):
        for subject in subjects if i % 2 == 0 else subjects[::-1]:
            walls[subject.label].append(concurrent_adds(subject, count, tag, work, made))
    return walls


def populate(subject: Subject, count: int, tag: str, made: list[str]) -> None:
    """`count` pods left on the node (8 at a time), not measured."""
    names = fresh_netns(f"b{tag}", count)
    made.extend(names)

    def one(item: tuple[int, str]) -> None:
        call(subject, "ADD", f"many-{subject.slug}-{item[0]}", item[1])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, enumerate(names)))


@contextlib.contextmanager
def socket_hidden(socket_path: Path) -> Iterator[None]:
    """The agent stopped, as its shim sees it: no socket at the path (renamed away meanwhile)."""
    hidden = socket_path.with_name(socket_path.name + ".hidden")
    os.rename(socket_path, hidden)
    try:
        yield
    finally:
        os.rename(hidden, socket_path)


# --- the agent --------------------------------------------------------------------------------


class BenchAgent:
    """minicni-agent in the node namespace, with NET_ADMIN and NET_RAW only, serving CNI
    requests; it installs the plugin and writes the conflist into `home`."""

    def __init__(self, node: str, home: Path, install: str) -> None:
        self.node = node
        self.home = home
        self.install = install
        self.socket = home / "run" / "cni.sock"
        self.bin_dir = home / "bin"
        self.data_dir = home / "ipam"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def plugin(self) -> Path:
        return self.bin_dir / "minicni"

    def start(self, pod_cidrs: list[str], timeout: float = 120.0) -> None:
        """Start the agent and wait until it serves and has installed the plugin (building the
        bundle takes seconds); an agent that exits, or is not there within `timeout`, fails the
        benchmark with its log."""
        self.home.mkdir(parents=True, exist_ok=True)
        nodes = self.home / "nodes.json"
        node: dict[str, object] = {"name": "bench", "internalIP": "192.0.2.1"}
        node.update({"podCIDRs": pod_cidrs} if len(pod_cidrs) > 1 else {"podCIDR": pod_cidrs[0]})
        nodes.write_text(json.dumps({"nodes": [node]}))
        agent = shutil.which("minicni-agent", path=os.path.dirname(sys.executable))
        if agent is None:
            raise SystemExit("bench: no minicni-agent next to this Python: pip install -e .")
        flags = {
            "--node-name": "bench",
            "--cluster-cidr": ",".join(CLUSTER_CIDRS[: len(pod_cidrs)]),
            "--nodes-file": str(nodes),
            "--cni-conf-dir": str(self.home / "net.d"),
            "--cni-bin-dir": str(self.bin_dir),
            "--state-dir": str(self.home / "state"),
            "--ipam-data-dir": str(self.data_dir),
            "--plugin-install": self.install,
            "--plugin-dir": str(self.home / "opt"),
            "--plugin-log-file": str(self.home / "minicni.log"),
            "--cni-socket": str(self.socket),
            "--firewall": "none",  # no resync work beside the requests
            "--health-addr": "",
            "--resync-seconds": "3600",
        }
        argv = ["ip", "netns", "exec", self.node, "setpriv", f"--bounding-set={AGENT_CAPS}"]
        argv += ["--inh-caps=-all", "--", agent, *[x for pair in flags.items() for x in pair]]
        with open(self.home / "agent.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (self.socket.exists() and self.plugin.exists()):
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the agent exited ({code}):\n" + self.log_tail())
            if time.monotonic() > deadline:
                why = f"the agent was not serving after {timeout:.0f} s:\n"
                raise RuntimeError(why + self.log_tail())
            time.sleep(0.1)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "agent.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- reporting ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "  n/a"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def report(
    served: Subject,
    fallback: Subject,
    ref: Subject,
    concurrent: dict[str, list[float]],
    count: int,
    crowded: tuple[Subject, Subject] | None,
    pods: int,
) -> None:
    subjects = (served, fallback, ref)
    print(f"\n{'':26}{'p50 ms':>9}{'p95 ms':>9}{'CPU p50':>9}{'vs ref p50':>12}")
    for op, cpu in (("ADD", "ADD cpu"), ("DEL", "DEL cpu"), ("DEL complete", None)):
        for subject in subjects:
            values = subject.samples[op]
            cpu_p50 = f"{statistics.median(subject.samples[cpu]):9.1f}" if cpu else " " * 9
            print(
                f"{op + ' ' + subject.label:26}{percentile(values, 50):9.1f}"
                f"{percentile(values, 95):9.1f}{cpu_p50}"
                f"{ratio(percentile(values, 50), percentile(ref.samples[op], 50)):>12}"
            )
    walls = {label: statistics.median(values) for label, values in concurrent.items()}
    bursts = len(concurrent[ref.label])
    print(f"\n{count} concurrent ADDs, wall time (median of {bursts} bursts; each burst, in ms):")
    for label, ms in walls.items():
        each = " ".join(f"{value:.0f}" for value in concurrent[label])
        print(f"  {label:24}{ms:9.1f} ms  {ratio(ms, walls[ref.label])}   ({each})")
    if crowded is not None:
        mini, reference = crowded
        print(f"\nwith {pods} pods already on each node:")
        for subject in crowded:
            values = subject.samples["ADD"]
            add50, add95 = percentile(values, 50), percentile(values, 95)
            add_cpu50 = statistics.median(subject.samples["ADD cpu"])
            print(f"  ADD {subject.label:20}{add50:9.1f}{add95:9.1f}{add_cpu50:9.1f}")
    print("\ntargets (issue 9):")
    p50 = {s.label: percentile(s.samples["ADD"], 50) for s in subjects}
    del50 = percentile(served.samples["DEL"], 50) / percentile(ref.samples["DEL"], 50)
    rows = [
        ("ADD p50, served", p50[served.label] / p50[ref.label], 1.0),
        ("DEL p50, served (reply)", del50, 0.5),
        (
            "DEL p50, served (complete)",
            percentile(served.samples["DEL complete"], 50)
            / percentile(ref.samples["DEL complete"], 50),
            None,
        ),
        (f"{count} concurrent ADDs, served", walls[served.label] / walls[ref.label], 1.0),
        ("ADD p50, in-process", p50[fallback.label] / p50[ref.label], 3.0),
    ]
    if crowded is not None:
        mini, reference = crowded
        at_pods = percentile(mini.samples["ADD"], 50) / percentile(reference.samples["ADD"], 50)
        rows.append((f"ADD p50 at {pods} pods, served", at_pods, 1.0))
    for name, value, target in rows:
        goal = f"<= {target:.1f}x  {verdict(value, target)}" if target else "(no target)"
        print(f"  {name:34}{value:6.2f}x of the reference   target {goal}")


def startup_floor(agent: BenchAgent, served: Subject, ref: Subject, runs: int = 20) -> None:
    """What every served call pays at least: the interpreter the shim runs on, and the shim's
    own round trip (VERSION, served by the agent), beside the reference's start-up. In the bundle
    the shim forwards the request from the interpreter's first import and exits there: its
    floor is below a whole start-up (`-c pass`, which also finalizes the interpreter)."""
    launcher = agent.plugin.read_text()
    python = _launcher_python(launcher)
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"}
    version_in = json.dumps({"cniVersion": CONFIG_VERSION}).encode()

    def median_ms(argv: list[str]) -> float:
        samples = []
        with netns.enter(netns.path_of(served.node)):
            for _ in range(runs):
                start = time.perf_counter()
                subprocess.run(argv, input=version_in, env=env, capture_output=True, check=True)
                samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    bare = median_ms([*python, "-I", "-S", "-B", "-c", "pass"])
    shim = median_ms([str(agent.plugin)])
    reference = median_ms([str(ref.executable)])
    print(f"\nstart-up (median of {runs}):")
    print(
        f"  the shim's interpreter, -I -S -B -c pass{bare:9.1f} ms   (its whole start-up and exit)"
    )
    print(
        f"  the shim, VERSION served (its floor)   {shim:9.1f} ms   (forwarded at the first import)"
    )
    print(f"  the reference bridge, VERSION          {reference:9.1f} ms")


def interpreter_label() -> str:
    """What the plugin runs on: the agent bundles (or, as launcher, runs) this interpreter, whose
    start-up every served call pays. The image ships the distribution's python3 (Debian's links
    libpython statically); another build, pyenv's with a shared libpython, starts ~2.5 ms slower."""
    executable = Path(sys.executable).resolve()
    version = ".".join(str(part) for part in sys.version_info[:3])
    return f"{executable} (Python {version})"


def _launcher_python(launcher: str) -> list[str]:
    """The interpreter argv the launcher execs (the bundled loader and python, or a venv's), or
    the interpreter the kernel starts on a Python launcher (`#!python -ISB`)."""
    first = launcher.split("\n", 1)[0]
    if first.startswith("#!") and not first.startswith("#!/bin/sh"):
        return [first[2:].split()[0]]
    for line in launcher.splitlines():
        if line.startswith("home="):
            home = line.split("=", 1)[1].strip("'")
            loader = next(p for p in (Path(home) / "lib").iterdir() if p.name.startswith("ld-"))
            return [str(loader), "--library-path", f"{home}/lib", f"{home}/bin/python3"]
        if line.startswith("exec "):
            return [line.split()[1]]
    raise RuntimeError("cannot read the launcher")


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="ADD+DEL pairs per plugin")
    parser.add_argument("--concurrent", type=int, default=20, help="simultaneous ADDs")
    parser.add_argument(
        "--bursts", type=int, default=5, help="rounds of --concurrent ADDs (the median counts)"
    )
    parser.add_argument(
        "--pods",
        type=int,
        default=1000,
        help="pods already on each node for the crowded run (0: skip)",
    )
    parser.add_argument("--crowded-runs", type=int, default=20, help="ADD+DEL pairs at --pods")
    parser.add_argument(
        "--family",
        choices=("ipv4", "dual"),
        default="ipv4",
        help="dual: every plugin gives each pod an IPv4 and an IPv6 address",
    )
    parser.add_argument(
        "--plugin-install", choices=("bundle", "launcher"), default="bundle",
        help="how the agent installs the plugin (bundle, as the DaemonSet; launcher is quicker)",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces); run `sudo make bench`", file=sys.stderr)
        return 2
    if not (REFERENCE_DIR / "bridge").exists() or not (REFERENCE_DIR / "host-local").exists():
        print(f"bench: reference plugins missing in {REFERENCE_DIR}: apt-get install "
              "containernetworking-plugins", file=sys.stderr)  # fmt: skip
        return 2
    if args.bursts < 1:
        print("bench: --bursts must be at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.pods <= BRIDGE_MAX_PORTS - args.concurrent - 2:
        print(f"bench: --pods: a bridge holds at most {BRIDGE_MAX_PORTS} ports", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:4]
    work = Path(tempfile.mkdtemp(prefix="minicni-pluginbench-"))
    nodes = {"mini": f"bnm{tag}", "ref": f"bnr{tag}"}
    made: list[str] = []
    agent = BenchAgent(nodes["mini"], work / "node", args.plugin_install)
    try:
        for name in nodes.values():
            netns.create(name)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"starting minicni-agent --cni-socket ({args.plugin_install}, NET_ADMIN+NET_RAW)...")
        started = time.monotonic()
        families = 2 if args.family == "dual" else 1
        agent.start(pod_cidrs=MINI_SUBNETS[:families])
        print(f"  agent serving after {time.monotonic() - started:.1f} s: {agent.plugin}")
        print(f"  the shim's interpreter: {interpreter_label()}")
        served, fallback, ref = subjects(agent, nodes, work, families)
        print(f"{args.runs} ADD+DEL each, interleaved, fresh netns per pod, reference: "
              f"{REFERENCE_DIR}/bridge + host-local, cniVersion {CONFIG_VERSION}")  # fmt: skip
        print(f"pods get {'an IPv4 and an IPv6 address' if families == 2 else 'an IPv4 address'}")
        interleaved([served, fallback, ref], args.runs, tag, made)
        concurrent = concurrent_bursts(
            [served, fallback, ref], args.concurrent, args.bursts, tag, work, made
        )
        crowded = None
        if args.pods:
            print(f"putting {args.pods} pods on each node (served, and the reference)...")
            started = time.monotonic()
            at_pods = [replace_samples(served), replace_samples(ref)]
            for subject in at_pods:
                populate(subject, args.pods, tag, made)
            print(f"  done in {time.monotonic() - started:.0f} s")
            interleaved(at_pods, args.crowded_runs, tag, made)
            crowded = (at_pods[0], at_pods[1])
        report(served, fallback, ref, concurrent, args.concurrent, crowded, args.pods)
        startup_floor(agent, served, ref)
        print(f"\nload average at end: {os.getloadavg()[0]:.1f} (figures on a loaded machine "
              "are noisy: compare ratios of one run)")  # fmt: skip
    finally:
        agent.stop()
        for name in made:
            netns.remove(name)
        for name in nodes.values():
            netns.remove(name)  # its bridge and every host veth go with it
        shutil.rmtree(work, ignore_errors=True)
    return 0


def replace_samples(subject: Subject) -> Subject:
    """The same plugin, with samples of its own (the crowded run)."""
    return Subject(
        subject.label,
        subject.executable,
        subject.config,
        subject.node,
        subject.cni_path,
        subject.around,
        subject.store_dir,
        subject.agent_pid,
    )


def subjects(
    agent: BenchAgent, nodes: Mapping[str, str], work: Path, families: int
) -> tuple[Subject, ...]:
    mini = {
        "cniVersion": CONFIG_VERSION,
        "name": "benchmini",
        "type": "minicni",
        "bridge": "bmini0",
        "subnet": MINI_SUBNETS[0] if families == 1 else MINI_SUBNETS[:families],
        "mtu": 1500,
        "dataDir": str(agent.data_dir),
        "logFile": str(work / "minicni.log"),
    }
    assert agent.process is not None
    served = Subject(
        "served", agent.plugin, mini, nodes["mini"], str(agent.bin_dir),
        store_dir=agent.data_dir / "benchmini", agent_pid=agent.process.pid,
    )  # fmt: skip
    fallback = Subject(
        "in-process", agent.plugin, mini, nodes["mini"], str(agent.bin_dir),
        around=lambda: socket_hidden(agent.socket),
    )  # fmt: skip
    reference = {
        "cniVersion": CONFIG_VERSION,
        "name": "benchref",
        "type": "bridge",
        "bridge": "bref0",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}] for subnet in REF_SUBNETS[:families]],
            "dataDir": str(work / "hl"),
        },
    }
    ref = Subject("bridge+host-local", REFERENCE_DIR / "bridge", reference, nodes["ref"],
                  str(REFERENCE_DIR))  # fmt: skip
    return served, fallback, ref


if __name__ == "__main__":
    sys.exit(main())
