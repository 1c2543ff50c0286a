"""A small virtual cluster for the agent's root tests: node namespaces on one L2 segment (a bridge
in a "switch" namespace) or on routed subnets (a "router" namespace, one /24 per node), each node
running `minicni-agent` from its documented flags with a shared nodes file, and pods added through
the installed plugin exactly as a runtime does (env + network config on stdin).

Every namespace, process and file made here is removed by `close()`, which the fixtures call in
a finalizer, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicni.agent.routes import RTPROT_MINICNI
from minicni.net import netns

CLUSTER_CIDR = "10.244.0.0/16"
STRICT_RP = ("all", "default")
AGENT = str(Path(sys.executable).with_name("minicni-agent"))


@dataclass
class LabNode:
    name: str
    ns: str
    ip: str
    prefixlen: int
    pod_cidr: str
    home: Path

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
        return {"name": self.name, "internalIP": self.ip, "podCIDR": self.pod_cidr}


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

    @property
    def nodes_file(self) -> Path:
        return self.tmp / "nodes.json"

    def ns_name(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        assert len(name) <= 15, name
        return name

    # -- building ---------------------------------------------------------------------------

    def build(self) -> AgentLab:
        hub = self.ns_name("sw" if self.layout == "l2" else "rt")
        self._new_ns(hub)
        if self.layout == "l2":
            self._in(hub, "ip", "link", "add", "br0", "type", "bridge")
            self._in(hub, "ip", "link", "set", "br0", "up")
        else:
            self._in(hub, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i in range(1, self.count + 1):
            self._add_node(hub, i)
        self.write_nodes([node.entry() for node in self.nodes])
        return self

    def _add_node(self, hub: str, i: int) -> None:
        ns = self.ns_name(f"n{i}")
        self._new_ns(ns)
        # Strict reverse-path filtering, as kind's nodes run: an asymmetric path is dropped.
        self._in(ns, "sysctl", "-qw", *(f"net.ipv4.conf.{k}.rp_filter=1" for k in STRICT_RP))
        if self.layout == "l2":
            ip, prefixlen, hub_side = f"192.168.50.{10 + i}", 24, None
        else:
            ip, prefixlen, hub_side = f"192.168.{60 + i}.2", 24, f"192.168.{60 + i}.1"
        home = self.tmp / f"n{i}"
        node = LabNode(f"node{i}", ns, ip, prefixlen, f"10.244.{i}.0/24", home)
        for path in (node.conf_dir, node.bin_dir, node.state_dir, node.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.nodes.append(node)
        self._link_to_hub(hub, ns, f"p{i}", ip, prefixlen, hub_side)

    def _link_to_hub(
        self, hub: str, ns: str, port: str, ip: str, prefixlen: int, hub_side: str | None
    ) -> None:
        self._in(
            hub, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns
        )
        if hub_side is None:
            self._in(hub, "ip", "link", "set", port, "master", "br0")
        else:
            self._in(hub, "ip", "addr", "add", f"{hub_side}/{prefixlen}", "dev", port)
        self._in(hub, "ip", "link", "set", port, "up")
        self._in(ns, "ip", "addr", "add", f"{ip}/{prefixlen}", "dev", "eth0")
        self._in(ns, "ip", "link", "set", "eth0", "up")
        if hub_side is not None:
            self._in(ns, "ip", "route", "add", "default", "via", hub_side)

    def add_outsider(self, role: str = "ext", ip: str = "192.168.50.200") -> str:
        """A host on the segment that is not a node: 'outside the cluster'."""
        assert self.layout == "l2"
        ns = self.ns_name(role)
        self._new_ns(ns)
        self._link_to_hub(self.ns_name("sw"), ns, f"p{role}", ip, 24, None)
        return ns

    def _new_ns(self, name: str) -> None:
        netns.create(name)
        self.extra_ns.append(name)
        self._in(name, "ip", "link", "set", "lo", "up")

    def write_nodes(self, entries: list[dict[str, str]] | str) -> None:
        """Replace the nodes file atomically (the agents poll it)."""
        text = entries if isinstance(entries, str) else json.dumps({"nodes": entries})
        temporary = self.nodes_file.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.nodes_file)

    # -- running the agent ------------------------------------------------------------------

    def agent_args(self, node: LabNode, *extra: str) -> list[str]:
        return [
            "ip", "netns", "exec", node.ns, AGENT,
            "--node-name", node.name,
            "--cluster-cidr", CLUSTER_CIDR,
            "--nodes-file", str(self.nodes_file),
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

    def start_agent(self, node: LabNode, *extra: str) -> subprocess.Popen[bytes]:
        log = open(node.home / "agent.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            self.agent_args(node, "--resync-seconds", "1", "--health-addr", "", *extra),
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

    def add_pod(self, node: LabNode, role: str) -> LabPod:
        ns = self.ns_name(role)
        self._new_ns(ns)
        container_id = f"{self.tag}{role}"
        result = self._cni(node, "ADD", ns, container_id)
        ip = str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)
        pod = LabPod(node, ns, container_id, ip)
        self.pods.append(pod)
        return pod

    def _cni(self, node: LabNode, command: str, ns: str, container_id: str) -> Any:
        conflist = json.loads(node.conflist.read_text())
        config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
                  **conflist["plugins"][0]}  # fmt: skip
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns.path_of(ns),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(node.bin_dir),
            "MINICNI_LOG_FILE": str(node.home / "plugin.log"),
        }
        done = subprocess.run(
            ["ip", "netns", "exec", node.ns, str(node.bin_dir / "minicni")],
            input=json.dumps(config),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"CNI {command} failed: {done.stdout} {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    # -- looking at the kernel ---------------------------------------------------------------

    def routes(self, node: LabNode) -> dict[str, dict[str, Any]]:
        """Our routes on `node`: dst -> {gateway, oif name, proto}."""
        from pyroute2 import IPRoute

        with netns.enter(netns.path_of(node.ns)), IPRoute() as ipr:
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

    def _in(self, ns: str, *argv: str) -> None:
        done = self.in_ns(ns, *argv)
        assert done.returncode == 0, f"{' '.join(argv)} in {ns}: {done.stderr}"

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
