"""One node, set up as the DaemonSet sets up a Kubernetes node, for the tests that point a real
runtime at it (containerd's CRI, podman, `ctr run --cni`).

A network namespace of its own is the node's host: an underlay interface holding the node's
address, `lo` up, and a CNI bin dir that already holds `loopback` (as kind and kubeadm nodes ship
it). `minicni-agent --once` runs inside it with a nodes file naming the node, in bundle install
mode, with every directory under the node's own temp dir: the conflist, the plugin and its Python
runtime, the address store, the plugin log. The runtimes under test are then pointed at exactly
those dirs; nothing here writes a conflist or copies the plugin.

The node is removed with everything in it when the context ends, also after a failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.runtimes.cni_plugins import install_loopback
from lab.runtimes.cri.cleanup import remove_tree
from minicni.net import netns

AGENT = str(Path(sys.executable).with_name("minicni-agent"))
AGENT_TIMEOUT = 120  # a bundle install copies ~70 MB; slow on a shared machine


@dataclass
class AgentNode:
    ns: str  # the node's network namespace (name)
    home: Path  # everything the agent, the plugin and the runtimes write
    name: str = "n1"
    ip: str = "192.168.77.11"
    prefixlen: int = 24
    pod_cidr: str = "10.244.1.0/24"

    @property
    def path(self) -> str:
        return netns.path_of(self.ns)

    @property
    def conf_dir(self) -> Path:
        return self.home / "net.d"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def plugin_dir(self) -> Path:
        return self.home / "opt"

    @property
    def data_dir(self) -> Path:
        return self.home / "ipam"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def log_file(self) -> Path:
        return self.home / "minicni.log"

    @property
    def nodes_file(self) -> Path:
        return self.home / "nodes.json"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

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
        return Path(conflist["plugins"][0]["dataDir"]) / conflist["name"]

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
        return self.log_file.read_text()[-size:] if self.log_file.exists() else "(no plugin log)"

    # -- the agent --------------------------------------------------------------------------------

    def run_agent(self, *extra: str) -> dict[str, Any]:
        """`minicni-agent --once` in the node, as the DaemonSet would run it; its JSON report."""
        argv = [
            "nsenter", f"--net={self.path}", AGENT, "--once",
            "--node-name", self.name,
            "--nodes-file", str(self.nodes_file),
            "--cni-conf-dir", str(self.conf_dir),
            "--cni-bin-dir", str(self.bin_dir),
            "--plugin-install", "bundle",
            "--plugin-dir", str(self.plugin_dir),
            "--ipam-data-dir", str(self.data_dir),
            "--plugin-log-file", str(self.log_file),
            "--state-dir", str(self.state_dir),
            "--health-addr", "",
            *extra,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=AGENT_TIMEOUT)
        assert done.returncode == 0, f"minicni-agent --once failed:\n{done.stdout}\n{done.stderr}"
        report: dict[str, Any] = json.loads(done.stdout)
        assert report["conflist_written"] and report["plugin_installed"], report
        return report

    def in_node(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net={self.path}", *argv], capture_output=True, text=True, timeout=30
        )


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def agent_node(prefix: str = "an", pod_cidr: str = "10.244.1.0/24") -> Iterator[AgentNode]:
    """A fresh node namespace with an underlay address, `loopback` in its bin dir and a nodes
    file naming it; the agent has not run yet (`run_agent`)."""
    suffix = secrets.token_hex(3)
    home = Path(tempfile.mkdtemp(prefix=f"minicni-{prefix}-{suffix}-"))
    node = AgentNode(ns=f"{prefix}{suffix}", home=home, pod_cidr=pod_cidr)
    created = False
    try:
        netns.create(node.ns)
        created = True
        # the node's underlay: a veth whose other end stays in the node (no way out of it)
        _ip("-n", node.ns, "link", "set", "lo", "up")
        _ip("-n", node.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        _ip("-n", node.ns, "addr", "add", f"{node.ip}/{node.prefixlen}", "dev", "eth0")
        _ip("-n", node.ns, "link", "set", "eth0", "up")
        _ip("-n", node.ns, "link", "set", "eth0p", "up")
        for directory in (node.conf_dir, node.bin_dir, node.state_dir):
            directory.mkdir(parents=True)
        install_loopback(str(node.bin_dir))
        entry = {"name": node.name, "internalIP": node.ip, "podCIDR": node.pod_cidr}
        node.nodes_file.write_text(json.dumps({"nodes": [entry]}))
        yield node
    finally:
        if created:
            netns.remove(node.ns)  # the bridge, the host veths go with it
        remove_tree(str(home))  # unmounts what a runtime left mounted there first
