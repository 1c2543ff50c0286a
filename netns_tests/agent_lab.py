"""A small virtual cluster for the agent's root tests: node namespaces on one L2 segment (a bridge
in a "switch" namespace) or on routed subnets (a "router" namespace, one /24 per node), each node
running `minicni-agent` from its documented flags with a shared nodes file, and pods added through
the installed plugin exactly as a runtime does (env + network config on stdin).

The namespaces, underlay, addresses and sysctls are the network-namespace lab's (`lab.topology`
names them, `lab.fabric` wires them) and pods go through its CNI runtime (`lab.runtime`); what is
the agent's own lives here: the nodes file, `minicni-agent --once`, background agents, our routes.

Every namespace, process and file made here is removed by `close()`, which the fixtures call in
a finalizer, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import fabric
from lab.netns import node_entry, nodes_document, pod_address, pod_attachment
from lab.runtime import CniRuntime
from lab.topology import LabPlan, NodePlan, Topology, plan
from minicni.agent.routes import RTPROT_MINICNI
from minicni.fileutil import write_atomic
from minicni.net import netns

AGENT = str(Path(sys.executable).with_name("minicni-agent"))
# l2: one segment, 192.168.50.0/24; routed: node <i> on 192.168.6<i>.0/24 (segment 60 + i)
UNDERLAY_CIDR = "192.168.0.0/16"
FIRST_SEGMENT = {"l2": 50, "routed": 60}


@dataclass
class LabNode:
    plan: NodePlan
    home: Path

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
    def conf_dir(self) -> Path:
        return self.home / "net.d"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def data_dir(self) -> Path:
        return self.home / "ipam"

    @property
    def conflist(self) -> Path:
        return self.conf_dir / "10-minicni.conflist"

    def entry(self) -> dict[str, str]:
        return node_entry(self.plan)


@dataclass
class LabPod:
    node: LabNode
    ns: str
    container_id: str
    ip: str


@dataclass
class AgentLab:
    """`layout` is "l2" (one segment, 192.168.50.0/24) or "routed" (192.168.6<i>.0/24 each).
    Nodes run with rp_filter=1 (strict) on every interface, as kind's nodes do."""

    tmp: Path
    layout: str = "l2"
    count: int = 3
    tag: str = field(default_factory=lambda: "ag" + secrets.token_hex(2))
    nodes: list[LabNode] = field(default_factory=list)
    pods: list[LabPod] = field(default_factory=list)
    extra_ns: list[str] = field(default_factory=list)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    plan: LabPlan = field(init=False)

    def __post_init__(self) -> None:
        topology = Topology(
            nodes=self.count,
            pods_per_node=0,  # the tests add their own, after the agents ran
            backend="auto",  # the agent's default; the lab never starts agents from it
            underlay=self.layout,
            underlay_cidr=UNDERLAY_CIDR,
            underlay_segment=FIRST_SEGMENT[self.layout],
            rp_filter=1,
        )
        self.plan = plan(topology, self.tag)

    @property
    def nodes_file(self) -> Path:
        return self.tmp / "nodes.json"

    # -- building ---------------------------------------------------------------------------

    def build(self) -> AgentLab:
        for name in [self.plan.fabric_netns, *(node.netns for node in self.plan.nodes)]:
            self._new_ns(name)
        fabric.build_fabric(self.plan)
        for node_plan in self.plan.nodes:
            node = LabNode(node_plan, self.tmp / node_plan.name)
            for path in (node.conf_dir, node.bin_dir, node.state_dir, node.data_dir):
                path.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
        self.write_nodes(nodes_document(self.plan)["nodes"])
        return self

    def add_outsider(self, name: str = "ext", host: int = 200) -> str:
        """A host on the segment that is not a node: 'outside the cluster' (192.168.50.200)."""
        outsider = self.plan.outsider(name, host)
        self._new_ns(outsider.netns)
        fabric.attach_host(self.plan, outsider)
        return outsider.netns

    def _new_ns(self, name: str) -> None:
        self.extra_ns.append(name)  # recorded first: close() removes it whatever happens next
        netns.create(name)

    def write_nodes(self, entries: list[dict[str, str]] | str) -> None:
        """Replace the nodes file atomically (the agents poll it)."""
        text = entries if isinstance(entries, str) else json.dumps({"nodes": entries})
        write_atomic(str(self.nodes_file), text.encode(), durable=False)

    # -- running the agent ------------------------------------------------------------------

    def agent_args(self, node: LabNode, *extra: str, kubeconfig: Path | None = None) -> list[str]:
        """The agent's command line: the Kubernetes source with `kubeconfig`, else the file."""
        source = (
            ["--kubeconfig", str(kubeconfig)]
            if kubeconfig
            else ["--nodes-file", str(self.nodes_file)]
        )
        return [
            "ip", "netns", "exec", node.ns, AGENT,
            "--node-name", node.name,
            "--cluster-cidr", self.plan.topology.cluster_cidr,
            *source,
            "--cni-conf-dir", str(node.conf_dir),
            "--cni-bin-dir", str(node.bin_dir),
            "--state-dir", str(node.state_dir),
            "--ipam-data-dir", str(node.data_dir),
            "--plugin-log-file", str(node.state_dir / "minicni.log"),
            "--plugin-install", "launcher",
            *extra,
        ]  # fmt: skip

    def once(self, node: LabNode, *extra: str) -> tuple[int, dict[str, Any], str]:
        """Run `minicni-agent --once`: exit code, JSON report, log."""
        done = subprocess.run(
            self.agent_args(node, "--once", *extra), capture_output=True, text=True, timeout=60
        )
        return done.returncode, json.loads(done.stdout), done.stderr

    def run_once(self, node: LabNode, *extra: str) -> dict[str, Any]:
        code, report, log = self.once(node, *extra)
        assert code == 0, f"agent on {node.name} failed: {report['errors']}\n{log}"
        return report

    def run_once_everywhere(self, *extra: str) -> list[dict[str, Any]]:
        return [self.run_once(node, *extra) for node in self.nodes]

    def start_agent(
        self, node: LabNode, *extra: str, kubeconfig: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(node.home / "agent.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            self.agent_args(
                node, "--resync-seconds", "1", "--health-addr", "", *extra, kubeconfig=kubeconfig
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.agents[node.name] = process
        return process

    def stop_agent(self, node: LabNode) -> int:
        process = self.agents.pop(node.name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    # -- pods through the installed plugin -------------------------------------------------

    def add_pod(
        self, node: LabNode, role: str, capability_args: dict[str, Any] | None = None
    ) -> LabPod:
        """`capability_args`: what the runtime passes as CapabilityArgs (e.g. portMappings)."""
        pod = self.plan.pod(node.name, role)
        self._new_ns(pod.netns)
        fabric.bring_up_loopback(pod.netns)
        attachment = replace(pod_attachment(pod), capability_args=capability_args or {})
        result = self.runtime(node).add(attachment)
        added = LabPod(node, pod.netns, pod.container_id, pod_address(result))
        self.pods.append(added)
        return added

    def runtime(self, node: LabNode) -> CniRuntime:
        """The node's runtime: its conflist and CNI bin dir, the plugin run inside the node."""
        return CniRuntime.from_file(
            str(node.conflist),
            bin_dirs=[str(node.bin_dir)],
            cache_dir=str(node.home / "cni-cache"),
            exec_prefix=["ip", "netns", "exec", node.ns],
        )

    # -- looking at the kernel ---------------------------------------------------------------

    def routes(self, node: LabNode) -> dict[str, dict[str, Any]]:
        """Our routes on `node`: dst -> {gateway, oif name, proto}."""
        with fabric.ipr_in(node.ns) as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            found = {}
            for route in ipr.route("dump", table=254):
                if route["proto"] != RTPROT_MINICNI:
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

    # -- tear-down ---------------------------------------------------------------------------

    def close(self) -> None:
        for name in list(self.agents):
            with contextlib.suppress(Exception):
                node = next(n for n in self.nodes if n.name == name)
                self.stop_agent(node)
        for name in reversed(self.extra_ns):
            netns.remove(name)
        self.extra_ns.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def peer_seen_by(server_ns: str, server_ip: str, client_ns: str, port: int = 7777) -> str:
    """Connect over TCP from `client_ns` to `server_ip` and return the source address the server
    saw. Both sockets are opened inside their namespace and stay bound to it."""
    with netns.enter(netns.path_of(server_ns)):
        server = socket.create_server(("0.0.0.0", port))
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


@contextlib.contextmanager
def lab(tmp: Path, layout: str = "l2", count: int = 3) -> Iterator[AgentLab]:
    built = AgentLab(tmp, layout, count)
    try:
        yield built.build()
    finally:
        built.close()
