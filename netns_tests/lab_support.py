"""Helpers for the root tests that run on a lab.cluster cluster: a lab in a temporary state
directory, the matrix and the expected verdict of every cell (so a test can show exactly which cells
differ), `AgentCluster`, the cluster the agent's tests run their own agents on, and `runtime_node`,
one node on which a real runtime (containerd's CRI, podman, ctr) runs what the agent installed."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from lab.cluster.agents import AGENT_HEALTH_ADDR, NodeFiles, node_entry
from lab.cluster.build import NetnsLab, lab_namespaces
from lab.cluster.fabric import ipr_in
from lab.matrix.cases import (
    CASE_KINDS,
    PROBE_ERROR,
    UNREACHABLE,
    Case,
    MatrixReport,
    build_cases,
)
from lab.matrix.executors import POD, Endpoint, Inventory, NetnsExecutor
from lab.matrix.report import render
from lab.matrix.runner import MatrixRunner
from lab.topology import LabPlan, NodePlan, Topology, new_lab_id, plan
from minicni.defaults import ROUTE_PROTOCOL
from minicni.net import netns

Expectation = Callable[[str, Endpoint, Endpoint], str]
"""(grid, source, destination) -> the verdict a cell must have; the grid names the protocol and
the family: `tcp` is TCP over IPv4, `tcp6` over IPv6."""


def is_ipv6(grid: str) -> bool:
    return grid.endswith("6")


@contextmanager
def running_lab(topology: Topology, state_root: str) -> Iterator[tuple[NetnsLab, Inventory]]:
    lab = NetnsLab(plan(topology, new_lab_id()), state_root)
    inventory = lab.up()
    try:
        yield lab, inventory
    finally:
        lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []


@dataclass
class LabReport(MatrixReport):
    """A matrix report that can probe some of its cells again, with the runner that made it."""

    runner: MatrixRunner | None = None


def run_matrix(
    inventory: Inventory,
    protocols: tuple[str, ...] = ("icmp", "tcp", "udp"),
    retries: int = 1,
    timeout: float = 1.5,
    engine: str = "socket",
    workers: int = 12,
    kinds: Sequence[str] = CASE_KINDS,
) -> LabReport:
    """The matrix, Service cells included when the lab has Services."""
    runner = MatrixRunner(
        NetnsExecutor(),
        timeout=timeout,
        retries=retries,
        workers=workers,
        engine=engine,
        launch_timeout=30.0,  # generous: these tests share the machine with others
    )
    report = runner.run(inventory, build_cases(inventory, protocols, kinds))
    return LabReport(**{f.name: getattr(report, f.name) for f in fields(report)}, runner=runner)


# What a loaded machine can do to a cell: a probe too slow for its timeout reads as X, one that
# could not start as !. It never delivers a blocked packet or undoes a NAT.
LOAD_CAN_CAUSE = (UNREACHABLE, PROBE_ERROR)


def mismatches(report: MatrixReport, expected: Callable[[Case], str]) -> list[str]:
    """Cells whose verdict is not the expected one, as readable lines ('' when all match).

    The fault tests probe with no retries and short timeouts (every expected X costs a
    timeout), so a cell that came out X or ! where it should not gets a second look, slowly:
    it counts only if it fails again."""
    wrong = [cell for cell in report.cells if cell.verdict != expected(cell.case)]
    second = [cell.case for cell in wrong if cell.verdict in LOAD_CAN_CAUSE]
    runner = getattr(report, "runner", None)
    if second and runner is not None:
        patient = replace(runner, retries=1, timeout=max(runner.timeout, 3.0), workers=4)
        again = {cell.case: cell for cell in patient.run(report.inventory, second).cells}
        wrong = [again.get(cell.case, cell) for cell in wrong]
        wrong = [cell for cell in wrong if cell.verdict != expected(cell.case)]
    return [
        f"{cell.case.label}: got {cell.verdict} want {expected(cell.case)} ({cell.detail})"
        for cell in wrong
    ]


def assert_cells(report: MatrixReport, expected: Callable[[Case], str]) -> None:
    """Every cell, Service cells included, has the verdict `expected` gives its case."""
    wrong = mismatches(report, expected)
    assert not wrong, "\n".join(wrong) + "\n\n" + render(report)


def assert_matrix(report: MatrixReport, expected: Expectation) -> None:
    """Every cell has the verdict `expected(grid, source, destination)` gives it (the grid is the
    protocol, `tcp6` for TCP over IPv6); a Service cell's destination is the endpoint the probe
    must reach through the Service."""
    assert_cells(report, lambda case: expected(case.grid, case.src, case.dst))


def in_node(lab: LabPlan, node: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.node(node).netns, *argv], check=True)


def masquerade_pods_of(lab: LabPlan, node: str, family: str = "ipv4") -> Expectation:
    """Insert the classic fault (MASQUERADE of the node's pod traffic leaving its pod CIDR) ahead
    of anything else in POSTROUTING, with iptables, or ip6tables for `family` ipv6; return what
    the matrix must then show (cells of the other family are untouched)."""
    ipv6 = family == "ipv6"
    cidr = lab.node(node).pod_cidr6 if ipv6 else lab.node(node).pod_cidr
    tool = "ip6tables" if ipv6 else "iptables"
    in_node(lab, node, tool, "-t", "nat", "-I", "POSTROUTING", "1",
            "-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE")  # fmt: skip

    def expected(grid: str, src: Endpoint, dst: Endpoint) -> str:
        # Leaving `node` from its pods the source becomes the node's address; traffic to the node
        # itself is delivered locally and never reaches POSTROUTING.
        leaving = src.kind == POD and src.node == node and dst.node != node
        return "N" if leaving and is_ipv6(grid) == ipv6 else "."

    return expected


# -- the agent's clusters -----------------------------------------------------------------------

# l2: one segment, 192.168.50.0/24; routed: node <i> on 192.168.6<i>.0/24 (segment 60 + i)
AGENT_UNDERLAY_CIDR = "192.168.0.0/16"
FIRST_SEGMENT = {"l2": 50, "routed": 60}


def agent_topology(
    underlay: str, nodes: int = 3, family: str = "ipv4", underlay_family: str = ""
) -> Topology:
    """Nodes on one L2 segment or on routed subnets, rp_filter=1 (strict) as kind's nodes run; no
    pods (the tests add their own once agents ran); a 1 s resync for agents run in the
    background. `family`: the pods' IP families (with IPv6 the underlay is fd00:172:30:50::/64
    on l2, fd00:172:30:6<i>::/64 routed); `underlay_family` when the underlay's differ."""
    return Topology(
        nodes=nodes,
        pods_per_node=0,
        backend="auto",  # the agent's default
        underlay=underlay,
        family=family,
        underlay_family=underlay_family,
        underlay_cidr=AGENT_UNDERLAY_CIDR,
        underlay_segment=FIRST_SEGMENT[underlay],
        rp_filter=1,
        agent_resync_seconds=1,
    )


@dataclass(frozen=True)
class ClusterNode:
    plan: NodePlan
    files: NodeFiles

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def ns(self) -> str:
        return self.plan.netns

    @property
    def ip(self) -> str:
        return self.plan.ip

    @property
    def ip6(self) -> str:
        return self.plan.ip6

    @property
    def home(self) -> Path:
        return self.files.home

    @property
    def conflist(self) -> Path:
        return self.files.conflist

    @property
    def bin_dir(self) -> Path:
        return self.files.bin_dir

    @property
    def data_dir(self) -> Path:
        return self.files.ipam_dir

    def entry(self) -> dict[str, str]:
        return node_entry(self.plan)


@dataclass(frozen=True)
class ClusterPod:
    node: ClusterNode
    ns: str
    container_id: str
    ip: str
    ips: tuple[str, ...] = ()  # every address, IPv4 first

    @property
    def ip6(self) -> str:
        return next((ip for ip in self.ips if ":" in ip), "")


class AgentCluster:
    """A cluster built by lab.cluster without agents running: the test runs them (`once`,
    `start_agent`), adds pods through the plugin they installed, and reads the kernel."""

    def __init__(self, lab: NetnsLab) -> None:
        self.lab = lab
        self.nodes = [ClusterNode(node, lab.files(node)) for node in lab.lab.nodes]

    def once(self, node: ClusterNode, *extra: str) -> tuple[int, dict[str, Any], str]:
        """Run `minicni-agent --once`: exit code, JSON report, log."""
        done = self.lab.run_agent_once(node.plan, *extra)
        return done.returncode, json.loads(done.stdout), done.stderr

    def run_once(self, node: ClusterNode, *extra: str) -> dict[str, Any]:
        code, report, log = self.once(node, *extra)
        assert code == 0, f"agent on {node.name} failed: {report['errors']}\n{log}"
        return report

    def run_once_everywhere(self, *extra: str) -> list[dict[str, Any]]:
        return [self.run_once(node, *extra) for node in self.nodes]

    def start_agent(self, node: ClusterNode, *extra: str) -> subprocess.Popen[bytes]:
        return self.lab.start_agent(node.plan, *extra)

    def stop_agent(self, node: ClusterNode) -> int:
        return self.lab.stop_agent(node.plan)

    def write_nodes(self, entries: list[dict[str, str]] | str) -> None:
        """Replace the nodes file the agents read (a string is written as it is)."""
        self.lab.write_nodes(entries if isinstance(entries, str) else {"nodes": entries})

    def add_pod(
        self,
        node: ClusterNode,
        role: str,
        capability_args: dict[str, Any] | None = None,
        check: bool = True,
    ) -> ClusterPod:
        """`capability_args`: what the runtime passes as CapabilityArgs (e.g. portMappings)."""
        pod = self.lab.lab.pod(node.name, role)
        addresses = self.lab.add_pod_addresses(pod, capability_args, check)
        return ClusterPod(node, pod.netns, pod.container_id, addresses[0], addresses)

    def add_outsider(self) -> str:
        """A host on the segment that is not a node: 'outside the cluster' (192.168.50.200)."""
        return self.lab.add_outsider().netns

    def routes(self, node: ClusterNode) -> dict[str, dict[str, Any]]:
        """Our routes on `node`: dst -> {gateway, oif name, proto}."""
        with ipr_in(node.ns) as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            found = {}
            for route in ipr.route("dump", table=254):
                if route["proto"] != ROUTE_PROTOCOL:
                    continue
                dst = f"{route.get('dst')}/{route['dst_len']}"
                found[dst] = {
                    "gateway": route.get("gateway"),
                    "dev": names.get(route.get("oif")),
                    "onlink": bool(route["flags"] & 4),
                }
            return found

    def in_ns(self, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=30)  # fmt: skip


def peer_seen_by(server_ns: str, server_ip: str, client_ns: str, port: int = 7777) -> str:
    """Connect over TCP from `client_ns` to `server_ip` (of either family) and return the source
    address the server saw. Both sockets are opened inside their namespace and stay bound to
    it."""
    ipv6 = ":" in server_ip
    with netns.enter(netns.path_of(server_ns)):
        server = socket.create_server(
            ("::" if ipv6 else "0.0.0.0", port),
            family=socket.AF_INET6 if ipv6 else socket.AF_INET,
            dualstack_ipv6=False,
        )
    with server:
        server.settimeout(5)
        with netns.enter(netns.path_of(client_ns)):
            client = socket.create_connection((server_ip, port), timeout=5)
        with client:
            connection, address = server.accept()
            connection.close()
            return str(address[0])


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


AGENT_HEALTH_PORT = int(AGENT_HEALTH_ADDR.rsplit(":", 1)[1])


def health_get(node: ClusterNode, path: str, port: int = AGENT_HEALTH_PORT) -> tuple[int, str]:
    """GET `path` from the node's agent's health endpoint (/healthz, /readyz, /metrics), as
    kubelet's probe reaches a hostNetwork pod: status and body."""
    with netns.enter(netns.path_of(node.ns)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.connect()  # the socket is made inside the node's namespace
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


# -- one node for a real runtime ----------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeNode:
    """A one-node lab whose agent has not run: a test runs `minicni-agent --once` (`run_agent`),
    then points a real runtime at exactly the conf and bin dirs it wrote, as on a node the
    DaemonSet set up. With the CRI runtime the lab's containerd already runs on those dirs."""

    lab: NetnsLab
    plan: NodePlan

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def ns(self) -> str:
        return self.plan.netns

    @property
    def path(self) -> str:
        return netns.path_of(self.plan.netns)

    @property
    def files(self) -> NodeFiles:
        return self.lab.files(self.plan)

    @property
    def home(self) -> Path:
        return self.files.home

    @property
    def conf_dir(self) -> Path:
        return self.files.conf_dir

    @property
    def bin_dir(self) -> Path:
        return self.files.bin_dir

    @property
    def pod_cidr(self) -> str:
        return self.plan.pod_cidr

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.plan.pod_cidr)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def run_agent(self, *extra: str) -> dict[str, Any]:
        """`minicni-agent --once` on the node, with the lab's flags (and `extra`): its report."""
        done = self.lab.run_agent_once(self.plan, *extra)
        assert done.returncode == 0, f"minicni-agent --once failed:\n{done.stdout}\n{done.stderr}"
        report: dict[str, Any] = json.loads(done.stdout)
        assert report["conflist_written"] and report["plugin_installed"], report
        return report

    # -- what the agent wrote -------------------------------------------------------------------

    def conflist_path(self) -> Path:
        found = sorted(self.conf_dir.glob("*.conflist"))
        assert len(found) == 1, f"expected the agent's one conflist in {self.conf_dir}: {found}"
        return found[0]

    def conflist(self) -> dict[str, Any]:
        return json.loads(self.conflist_path().read_text())  # type: ignore[no-any-return]

    @property
    def network(self) -> str:
        return str(self.conflist()["name"])

    @property
    def bridge(self) -> str:
        return str(self.conflist()["plugins"][0]["bridge"])

    @property
    def store(self) -> Path:
        """The address store the conflist names: `<dataDir>/<network name>`."""
        conflist = self.conflist()
        return Path(str(conflist["plugins"][0]["dataDir"]), str(conflist["name"]))

    def reservations(self) -> dict[str, str]:
        """address -> containerID of every reservation file in the store."""
        if not self.store.is_dir():
            return {}
        found = {}
        for entry in self.store.iterdir():
            with contextlib.suppress(ValueError):
                ipaddress.IPv4Address(entry.name)
                found[entry.name] = json.loads(entry.read_text())["containerID"]
        return found

    def plugin_log_tail(self, size: int = 3000) -> str:
        log = Path(self.conflist()["plugins"][0]["logFile"])
        return log.read_text()[-size:] if log.exists() else "(no plugin log)"


@contextmanager
def runtime_node(runtime: str = "libcni") -> Iterator[RuntimeNode]:
    """One node (`runtime` "cri": with its containerd running), removed with everything in it
    even when the test fails. Its state lives in a short temp dir: a runtime's unix sockets go
    under the node's directory, and a socket path may not exceed 107 bytes."""
    state_root = tempfile.mkdtemp(prefix="mlrt-")
    try:
        topology = Topology(nodes=1, pods_per_node=0, runtime=runtime)
        lab = NetnsLab(plan(topology, new_lab_id()), state_root, start_agents=False)
        lab.up()  # a failed up removes what it built
        try:
            yield RuntimeNode(lab, lab.lab.nodes[0])
        finally:
            problems = lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []
        assert not problems, problems
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
