"""minicni-agent on a lab's nodes: the only place the lab writes the agent's flags (and, for
agents run from the image, the manifest's env values the lab sets instead).

Each node's agent runs from the venv's console script inside the node's namespace, with its files
in the node's directory of the lab's work dir (stand-ins for /etc/cni/net.d, /opt/cni/bin,
/var/lib/minicni, /var/lib/cni/networks and /opt/minicni) and, as its node source, one static
nodes file shared by every node. The lab runs agents in the background and waits until each is
ready; the root tests also run them `--once`, or with flags of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.cluster.processes import alive, cmdline, kill, send_signal
from lab.cluster.state import LabState
from lab.topology import LabPlan, NodePlan, Topology
from minicni import defaults
from minicni.agent.service.cli import env_name
from minicni.fileutil import write_atomic
from minicni.net import netns

AGENT_HEALTH_ADDR = "127.0.0.1:9095"
MINICNI_CONFLIST = defaults.CONFLIST_NAME
BUNDLE_READY_TIMEOUT = 180.0  # a bundle install copies ~70 MB per node, all nodes at once


class AgentError(RuntimeError):
    """An agent exited, or was not ready in time; the message ends with its log's tail."""


@dataclass(frozen=True)
class NodeFiles:
    """A node's directory in the lab's work dir and the host paths it stands in for."""

    home: Path

    @property
    def conf_dir(self) -> Path:  # /etc/cni/net.d
        return self.home / "net.d"

    @property
    def bin_dir(self) -> Path:  # /opt/cni/bin
        return self.home / "bin"

    @property
    def state_dir(self) -> Path:  # /var/lib/minicni
        return self.home / "state"

    @property
    def ipam_dir(self) -> Path:  # /var/lib/cni/networks
        return self.home / "ipam"

    @property
    def plugin_dir(self) -> Path:  # /opt/minicni
        return self.home / "opt"

    @property
    def conflist(self) -> Path:
        return self.conf_dir / MINICNI_CONFLIST

    @property
    def plugin_log(self) -> Path:
        return self.state_dir / "minicni.log"

    @property
    def agent_log(self) -> Path:
        return self.home / "agent.log"

    @property
    def cni_socket(self) -> Path:  # /run/minicni/cni.sock
        return self.home / "run" / "cni.sock"

    def create(self) -> None:
        for directory in (
            self.conf_dir,
            self.bin_dir,
            self.state_dir,
            self.ipam_dir,
            self.plugin_dir,
        ):
            directory.mkdir(parents=True)


def cluster_flags(topology: Topology) -> dict[str, str]:
    """The flags every node's agent gets alike: the cluster's own settings."""
    return {
        "--cluster-cidr": cluster_cidr(topology),
        "--backend": topology.backend,
        "--resync-seconds": str(topology.agent_resync_seconds),
    }


def agent_flags(
    topology: Topology, node: NodePlan, files: NodeFiles, nodes_file: Path
) -> dict[str, str]:
    """Every flag the lab gives a node's agent, by name."""
    return {
        "--node-name": node.name,
        **cluster_flags(topology),
        "--nodes-file": str(nodes_file),
        "--cni-conf-dir": str(files.conf_dir),
        "--cni-bin-dir": str(files.bin_dir),
        "--state-dir": str(files.state_dir),
        "--ipam-data-dir": str(files.ipam_dir),
        "--plugin-log-file": str(files.plugin_log),
        "--plugin-install": plugin_install(topology),
        "--plugin-dir": str(files.plugin_dir),
        "--cni-socket": str(files.cni_socket) if topology.fast_path else "",
        "--health-addr": AGENT_HEALTH_ADDR,
    }


FALLBACK_MARK = "fast path unavailable"
"""What the plugin logs when its shim runs it in-process (minicni.agent.host.shim)."""


def fallbacks(files: NodeFiles) -> list[str]:
    """The plugin's calls on this node that its shim ran in-process, each with why (its log)."""
    try:
        text = files.plugin_log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if FALLBACK_MARK in line]


def require_served(nodes: Sequence[NodeFiles]) -> None:
    """AgentError unless every CNI call so far was served by its node's agent: with the agents
    up and serving, a fallback is a fault (a refusal, a socket the shim cannot reach) that the
    matrix would otherwise hide, since the plugin in-process wires the pod just as well."""
    found = [line for files in nodes for line in fallbacks(files)]
    if found:
        shown = "\n".join(found[:5])
        raise AgentError(f"{counted_calls(len(found))} ran in-process, not served:\n{shown}")


def counted_calls(number: int) -> str:
    return f"{number} CNI call" + ("" if number == 1 else "s")


def manifest_settings(topology: Topology) -> dict[str, str]:
    """The cluster's settings as the DaemonSet's env variables, for agents run from the image:
    what a user sets in the manifest for this cluster. The node's paths stay the manifest's; an
    empty MINICNI_CNI_SOCKET turns the fast path off, as `fast_path: false` does for the lab's own
    agents."""
    settings = {env_name(flag): value for flag, value in cluster_flags(topology).items()}
    if not topology.fast_path:
        settings[env_name("--cni-socket")] = ""
    return settings


def plugin_install(topology: Topology) -> str:
    """bundle (the plugin with its own Python, as the DaemonSet installs it) when a real runtime
    runs the plugin; the lab's own runtime takes the quicker launcher."""
    return "bundle" if topology.runtime == "cri" else "launcher"


def ready_timeout(topology: Topology, timeout: float) -> float:
    """How long to wait for an agent: longer when it installs a bundle."""
    if plugin_install(topology) == "bundle":
        return max(timeout, BUNDLE_READY_TIMEOUT)
    return timeout


def agent_argv(node: NodePlan, flags: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """The agent in the node's namespace with `flags`, then `extra`: a flag that `extra` gives
    too (a test's own `--backend vxlan`) is left to `extra`, so each flag appears once."""
    argv = ["ip", "netns", "exec", node.netns, console_script("minicni-agent")]
    for flag, value in flags.items():
        if flag not in extra:
            argv += [flag, value]
    return [*argv, *extra]


def start_agent(argv: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
    """In the background, in a session of its own (a Ctrl-C of the lab is not the agent's)."""
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def run_agent_once(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`argv` (with `--once` in it) to the end: its JSON report on stdout, its log on stderr."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def await_ready(
    node: NodePlan,
    files: NodeFiles,
    process: subprocess.Popen[bytes],
    timeout: float,
    serving: bool = True,
) -> None:
    """Ready = the conflist is written, the plugin installed, /readyz answers 200 and, when the
    agent serves CNI requests (`serving`), its socket is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AgentError(
                f"agent on {node.name} exited {process.returncode}:\n" + tail(files.agent_log)
            )
        if (
            files.conflist.exists()
            and (files.bin_dir / "minicni").exists()
            and (not serving or files.cni_socket.exists())
            and http_ok(node.netns, AGENT_HEALTH_ADDR, "/readyz")
        ):
            return
        time.sleep(0.05)
    raise AgentError(
        f"agent on {node.name} not ready after {timeout:.0f} s:\n" + tail(files.agent_log)
    )


def stop_agent(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, SIGKILL after `timeout` seconds; the exit code (0: it stopped as asked)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stop_agents(
    state: LabState, agents: dict[str, subprocess.Popen[bytes]], grace: float = 3.0
) -> list[str]:
    """SIGTERM every agent at once, SIGKILL those still running after `grace` seconds.

    A recorded pid that no longer runs our agent (the pid was reused) is left alone: without our
    own Popen object, the agent's command line must name this lab's work directory.
    """
    running: dict[str, int] = {}
    for node, pid in state.agents.items():
        if node in agents or state.work_dir in cmdline(pid):
            send_signal(pid, signal.SIGTERM)
            running[node] = pid
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        for node, pid in list(running.items()):
            process = agents.get(node)
            gone = process.poll() is not None if process else not alive(pid)
            if gone:
                del running[node]
        time.sleep(0.02)
    for node, pid in running.items():
        kill(pid)
        if node in agents:
            agents[node].wait(5)
    # forget them: a pid signalled again later could belong to someone else by then
    state.agents.clear()
    agents.clear()
    return [f"agent {node} (pid {pid}) ignored SIGTERM, killed" for node, pid in running.items()]


# ------------------------------------------------------------ the node source


def nodes_document(lab: LabPlan) -> dict[str, Any]:
    """The agent's static node source, shaped like the Kubernetes Node fields it needs."""
    return {"nodes": [node_entry(node) for node in lab.nodes]}


def node_entry(node: NodePlan) -> dict[str, Any]:
    """A node as the nodes file has it: `internalIP` and `podCIDR`, and for a node with IPv6
    the `internalIPs` and `podCIDRs` lists beside them (both families, IPv4 first)."""
    entry: dict[str, Any] = {
        "name": node.name,
        "internalIP": node.primary_ip,
        "podCIDR": node.pod_cidrs[0],
    }
    if node.ip6 or node.pod_cidr6:
        entry.update(internalIPs=list(node.ips), podCIDRs=list(node.pod_cidrs))
    return entry


def cluster_cidr(topology: Topology) -> str:
    """`--cluster-cidr`: one CIDR per family of the pods, IPv4 first."""
    cidrs = {4: topology.cluster_cidr, 6: topology.cluster_cidr6}
    return ",".join(cidrs[version] for version in topology.pod_versions)


def write_nodes_file(path: Path, document: Mapping[str, Any] | str) -> None:
    """Replace the nodes file in one step (running agents poll it); a string is written as is."""
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    write_atomic(str(path), text.encode(), durable=False)


# ------------------------------------------------------------ plumbing


def console_script(name: str) -> str:
    beside_python = os.path.join(os.path.dirname(sys.executable), name)
    found = beside_python if os.access(beside_python, os.X_OK) else shutil.which(name)
    if not found:
        raise AgentError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def http_ok(namespace: str, address: str, path: str) -> bool:
    """GET http://address/path from inside the namespace (the socket is opened inside it)."""
    import http.client

    host, port = address.rsplit(":", 1)
    with netns.enter(netns.path_of(namespace)):
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        try:
            connection.connect()
        except OSError:
            connection.close()
            return False
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "".join(stream.readlines()[-lines:])
    except OSError:
        return "(no log)"
