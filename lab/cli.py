"""minicni-lab: build a virtual cluster in network namespaces and run the connectivity matrix.

minicni-lab run                      # up, matrix, down: the whole gate, timings printed
minicni-lab up --nodes 3 --pods-per-node 2 --backend vxlan --underlay routed
minicni-lab matrix --json results/matrix.json --junit results/matrix.xml
minicni-lab down [--id ID | --all]   # also removes a lab left by a killed run
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lab.cluster.state import STATE_ROOT, LabState, known_labs
from lab.matrix.cases import PROTOCOLS, CellResult, MatrixReport, build_cases
from lab.matrix.executors import Executor, Inventory, NetnsExecutor
from lab.matrix.runner import MatrixRunner
from lab.topology import (
    AGENTS,
    BACKENDS,
    FAMILIES,
    LIBCNI_GENERATIONS,
    PLUGINS,
    RUNTIMES,
    UNDERLAYS,
    Topology,
    TopologyError,
    load_topology,
)

if TYPE_CHECKING:
    from lab.cluster.build import NetnsLab

EXIT_OK, EXIT_MATRIX_FAILED, EXIT_ERROR = 0, 1, 2
TOPOLOGY_FLAGS = (
    "nodes",
    "pods_per_node",
    "family",
    "underlay_family",
    "backend",
    "underlay",
    "plugin",
    "agent",
    "image",
    "libcni",
    "runtime",
    "forward_drop",
    "rp_filter",
    "mtu",
    "fast_path",
    "services",
)


class Progress:
    """Timestamped steps on stderr; a single updating line for the matrix on a terminal."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.live = stream.isatty()
        self.timings: dict[str, float] = {}

    def step(self, message: str) -> None:
        self.stream.write(f"[{time.monotonic() - self.started:6.1f}s] {message}\n")
        self.stream.flush()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        self.step(f"{name}...")
        try:
            yield
        finally:
            self.timings[name] = time.monotonic() - started
            self.step(f"{name} took {self.timings[name]:.1f} s")

    def cell(self, cell: CellResult, done: int, total: int) -> None:
        if cell.verdict != "." and not self.live:
            self.step(f"  {cell.verdict} {cell.case.label}: {cell.detail}")
        if self.live:
            end = "\n" if done == total else ""
            self.stream.write(
                f"\r  probed {done}/{total} cells, last: {cell.verdict} {cell.case.label:<40}{end}"
            )
            self.stream.flush()
        elif done == total or done % 50 == 0:
            self.step(f"  probed {done}/{total} cells")

    def summary(self) -> str:
        parts = [f"{name} {seconds:.1f} s" for name, seconds in self.timings.items()]
        return f"timings: {', '.join(parts)}, total {time.monotonic() - self.started:.1f} s"


# ------------------------------------------------------------ arguments


def add_topology_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("topology (flags override the --topology file)")
    group.add_argument("--topology", metavar="FILE", help="YAML topology file")
    group.add_argument("--nodes", type=int)
    group.add_argument("--pods-per-node", type=int)
    group.add_argument(
        "--family",
        choices=FAMILIES,
        help="the pods' IP families: ipv4 (the default), ipv6 or dual (an address of each); the "
        "nodes' underlay gets addresses of the same families (IPv6: ULA)",
    )
    group.add_argument(
        "--underlay-family",
        choices=FAMILIES,
        help="the underlay's families when they differ from the pods' (e.g. dual-stack pods over "
        "an IPv4 underlay: IPv6 pod traffic through VXLAN over IPv4)",
    )
    group.add_argument("--backend", choices=BACKENDS)
    group.add_argument("--underlay", choices=UNDERLAYS)
    group.add_argument(
        "--plugin",
        choices=PLUGINS,
        help="minicni (agent + plugin) or reference (bridge + host-local)",
    )
    group.add_argument(
        "--agent",
        choices=AGENTS,
        help="process: minicni-agent from this checkout; image: the DaemonSet's pod spec "
        "(deployments/manifests/minicni.yaml) run with podman from the built image",
    )
    group.add_argument(
        "--image",
        metavar="NAME",
        help="with --agent image: an image of the host's podman (default: the one "
        "`make image-offline` saved)",
    )
    group.add_argument(
        "--libcni",
        choices=LIBCNI_GENERATIONS,
        help="the lab runtime's libcni generation: 1.1 as containerd 1.6/1.7 and podman 4 "
        "(cniVersion only), 1.2 as containerd 2.x (highest of cniVersions; the default)",
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="libcni: the lab's own runtime runs the plugin (the default); cri: a containerd 1.6 "
        "per node, pods created through its CRI as kubelet creates them",
    )
    group.add_argument(
        "--forward-drop",
        action="store_true",
        default=None,
        help="set the FORWARD policy to DROP on every node, as Docker does",
    )
    group.add_argument(
        "--rp-filter", type=int, choices=(0, 1, 2), help="nodes' rp_filter (default 1, as kind)"
    )
    group.add_argument("--mtu", type=int)
    group.add_argument(
        "--services",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ClusterIP Services (TCP, UDP) in front of every node's first pod, with "
        "kube-proxy's iptables rules on every node, and their cells in the matrix (default: on)",
    )
    group.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        default=None,
        help="the agents serve no CNI requests (no --cni-socket): the plugin runs in-process",
    )
    group.add_argument("--id", dest="lab_id", help="lab id (default: random, e.g. ml3f2a)")


def add_matrix_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("matrix")
    group.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma separated")
    group.add_argument("--retries", type=int, default=1, help="extra attempts for a wrong cell")
    group.add_argument("--workers", type=int, default=12, help="cells probed in parallel")
    group.add_argument("--timeout", type=float, default=1.5, help="seconds a probe waits")
    group.add_argument(
        "--engine",
        choices=("socket", "scapy"),
        default="socket",
        help="scapy: sniff each probe off the wire (slow, ~0.5 s per process; a cross-check)",
    )
    group.add_argument("--json", metavar="FILE", help="write the report as JSON")
    group.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML")


def topology_from(args: argparse.Namespace) -> Topology:
    topology = load_topology(args.topology) if args.topology else Topology()
    overrides = {
        key: getattr(args, key) for key in TOPOLOGY_FLAGS if getattr(args, key) is not None
    }
    return replace(topology, **overrides)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="minicni-lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--state-dir", default=STATE_ROOT, help=argparse.SUPPRESS)
    commands = top.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a lab and leave it running")
    add_topology_arguments(up)
    matrix = commands.add_parser("matrix", help="run the connectivity matrix on a running lab")
    matrix.add_argument("--id", dest="lab_id")
    add_matrix_arguments(matrix)
    down = commands.add_parser("down", help="remove a lab (also one left by a killed run)")
    down.add_argument("--id", dest="lab_id")
    down.add_argument("--all", action="store_true", help="remove every lab")
    run = commands.add_parser("run", help="up, matrix, down")
    add_topology_arguments(run)
    add_matrix_arguments(run)
    commands.add_parser("list", help="list the labs that exist")
    return top


# ------------------------------------------------------------ commands


def command_up(args: argparse.Namespace, progress: Progress) -> tuple[NetnsLab, Inventory]:
    from lab.cluster.build import NetnsLab, counted
    from lab.topology import plan

    topology = topology_from(args)
    lab_id = args.lab_id or unused_lab_id(args.state_dir)
    lab = NetnsLab(plan(topology, lab_id), args.state_dir, log=progress.step)
    with progress.phase("up"):
        progress.step(
            f"lab {lab_id}: {counted(topology.nodes, 'node')} x "
            f"{counted(topology.pods_per_node, 'pod')}, "
            f"plugin {topology.plugin}, agent {topology.agent}, runtime {topology.runtime}, "
            f"backend {topology.backend}, underlay {topology.underlay}"
            + (f", family {topology.family}" if topology.family != "ipv4" else "")
        )
        inventory = lab.up()
    return lab, inventory


def command_matrix(
    args: argparse.Namespace,
    progress: Progress,
    lab_id: str,
    inventory: Inventory,
    executor: Executor | None = None,
    topology: dict[str, Any] | None = None,
) -> MatrixReport:
    """Probe every cell, print the grids, write JSON/JUnit. A kind cluster passes its own
    executor (kubectl exec) and topology description; the netns lab's come from its state."""
    from lab.matrix import report as reports

    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    cases = build_cases(inventory, protocols)
    runner = MatrixRunner(
        executor or NetnsExecutor(),
        timeout=args.timeout,
        retries=args.retries,
        workers=args.workers,
        progress=progress.cell,
        engine=args.engine,
    )
    with progress.phase("matrix"):
        progress.step(f"{len(cases)} cells, {args.workers} in parallel, {args.engine} probes")
        result = runner.run(inventory, cases)
    state_topology = topology if topology is not None else _topology_of(args.state_dir, lab_id)
    extra = {"lab": lab_id, "topology": state_topology}
    if args.json:
        reports.write_json(result, args.json, extra)
    if args.junit:
        reports.write_junit(result, args.junit)
    print(f"lab {lab_id}: {_describe(state_topology)}")
    print(reports.render(result), flush=True)
    return result


def command_down(args: argparse.Namespace, progress: Progress, lab_ids: Sequence[str]) -> int:
    from lab.cluster.build import NetnsLab, teardown

    problems: list[str] = []
    with progress.phase("down"):
        if not lab_ids:
            progress.step("no lab is up: nothing to remove")
        for lab_id in lab_ids:
            try:
                state = LabState.load(lab_id, args.state_dir)
            except FileNotFoundError:
                state = LabState(lab_id, {}, os.path.join(args.state_dir, lab_id))
                if not _left_behind(state):
                    progress.step(f"lab {lab_id}: nothing to remove")
                    continue
            if state.topology:
                problems += NetnsLab.from_state(state, args.state_dir, progress.step).down()
            else:  # no state file: remove whatever carries the lab's name
                problems += teardown(state, args.state_dir)
            progress.step(f"lab {lab_id} removed")
    for problem in problems:
        progress.step(f"warning: {problem}")
    return EXIT_OK


def _left_behind(state: LabState) -> bool:
    """Anything of a lab without a state file: namespaces carrying its name, its work dir."""
    from lab.cluster.build import lab_namespaces

    return bool(lab_namespaces(state.lab_id)) or os.path.exists(state.work_dir)


def unused_lab_id(state_dir: str) -> str:
    """A fresh random id that names no lab here yet (state file or namespaces)."""
    from lab.cluster.build import lab_namespaces
    from lab.topology import new_lab_id

    while True:
        lab_id = new_lab_id()
        if lab_id not in known_labs(state_dir) and not lab_namespaces(lab_id):
            return lab_id


def resolve_lab_id(args: argparse.Namespace) -> str:
    if args.lab_id:
        return str(args.lab_id)
    labs = known_labs(args.state_dir)
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise SystemExit("minicni-lab: no lab is up (run `minicni-lab up` first)")
    raise SystemExit(f"minicni-lab: several labs are up, choose one with --id: {', '.join(labs)}")


def _topology_of(state_dir: str, lab_id: str) -> dict[str, Any]:
    try:
        return LabState.load(lab_id, state_dir).topology
    except FileNotFoundError:
        return {}


def _describe(topology: dict[str, Any]) -> str:
    keys = (
        "nodes",
        "pods_per_node",
        "family",
        "plugin",
        "agent",
        "runtime",
        "backend",
        "underlay",
        "forward_drop",
        "rp_filter",
        "fast_path",
        "services",
    )
    return ", ".join(f"{key}={topology[key]}" for key in keys if key in topology)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0 and args.command != "list":
        print("minicni-lab: needs root (it creates network namespaces)", file=sys.stderr)
        return EXIT_ERROR
    signal.signal(signal.SIGTERM, _raise_interrupt)  # tear down on SIGTERM as on Ctrl-C
    progress = Progress()
    try:
        return dispatch(args, progress)
    except TopologyError as err:
        print(f"minicni-lab: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("minicni-lab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the tool's last word: one readable line, no traceback wall
        print(f"minicni-lab: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR


def dispatch(args: argparse.Namespace, progress: Progress) -> int:
    if args.command == "list":
        labs = known_labs(args.state_dir)
        if not labs:  # said on stderr, as kind does: stdout lists labs, one a line
            print("minicni-lab: no lab is up (`minicni-lab up` starts one)", file=sys.stderr)
        for lab_id in labs:
            state = LabState.load(lab_id, args.state_dir)
            print(f"{lab_id}  {state.phase:<12} {_describe(state.topology)}")
        return EXIT_OK
    if args.command == "up":
        lab, inventory = command_up(args, progress)
        lab_id = lab.lab.lab_id
        for endpoint in inventory.endpoints:
            addresses = " ".join(endpoint.addresses)
            print(f"{endpoint.name:<8} {endpoint.kind:<5} {addresses:<15} netns {endpoint.handle}")
        for service in inventory.services:
            address = f"{service.cluster_ip}:{service.port}/{service.proto}"
            endpoints = ", ".join(service.endpoints)
            target = f"(port {service.target_port})"
            print(f"{service.name:<14} {address:<22} Service -> {endpoints} {target}")
        print(
            f"lab {lab_id} is up: `minicni-lab matrix --id {lab_id}`, "
            f"`minicni-lab down --id {lab_id}`"
        )
        progress.step(progress.summary())
        return EXIT_OK
    if args.command == "matrix":
        lab_id = resolve_lab_id(args)
        state = LabState.load(lab_id, args.state_dir)
        if state.inventory is None:
            raise SystemExit(f"minicni-lab: lab {lab_id} is not up (phase {state.phase})")
        result = command_matrix(args, progress, lab_id, Inventory.from_mapping(state.inventory))
        progress.step(progress.summary())
        return EXIT_OK if result.ok else EXIT_MATRIX_FAILED
    if args.command == "down":  # a lab that is not there is removed already: not an error
        if args.all:
            lab_ids = known_labs(args.state_dir)
        else:
            lab_ids = [resolve_lab_id(args)] if args.lab_id or known_labs(args.state_dir) else []
        command_down(args, progress, lab_ids)
        progress.step(progress.summary())
        return EXIT_OK
    return command_run(args, progress)


def command_run(args: argparse.Namespace, progress: Progress) -> int:
    from lab.cluster.processes import signals_deferred

    lab, inventory = command_up(args, progress)
    try:
        result = command_matrix(args, progress, lab.lab.lab_id, inventory)
    finally:
        with signals_deferred(), progress.phase("down"):  # Ctrl-C now: after the tear-down
            for problem in lab.down():
                progress.step(f"warning: {problem}")
        progress.step(progress.summary())
    return EXIT_OK if result.ok else EXIT_MATRIX_FAILED


if __name__ == "__main__":
    sys.exit(main())
