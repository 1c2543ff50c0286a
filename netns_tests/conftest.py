"""Shared fixtures for the root tests: a fake host namespace and container namespaces per test, and
`run_plugin`, which executes the installed `minicni` executable inside the fake host exactly as a
runtime does (env + config on stdin, one JSON document back on stdout); and `agent_cluster`, a
cluster of node namespaces built by the lab's one builder (`lab.cluster`) for the agent's tests.

The plugin's two paths (issue 9): a module parametrizes `node` with PLUGIN_PATHS (indirectly) to
run each of its tests through the plugin a running minicni-agent installed and serves ("served":
the shim forwards to the agent's CNI socket), and through the same kind of installed shim with no
agent ("fallback": the shim runs the plugin in-process). Unparametrized, `node` runs the venv's
`minicni` console script, the plugin itself.

Nothing here imports the plugin: the executable is found next to `sys.executable` (the venv's bin
directory) or named by env MINICNI_PLUGIN. Kernel state is read back with pyroute2. Whether a test
needs root is decided in one place, the top-level conftest.py: every test here does.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from lab.cluster.agents import NodeFiles
from lab.cluster.build import NetnsLab, lab_namespaces
from lab.topology import Topology, new_lab_id, plan
from minicni.net import netns
from netns_tests.lab_support import AgentCluster, agent_topology

_serial = itertools.count()


def unique_name(prefix: str) -> str:
    """A namespace/link name unique to this process and test, at most 15 characters."""
    name = f"{prefix}{os.getpid() % 100000:05d}{next(_serial) % 1000:03d}"
    assert len(name) <= 15, name
    return name


def plugin_executable() -> str:
    configured = os.environ.get("MINICNI_PLUGIN")
    if configured:
        return configured
    beside = Path(sys.executable).parent / "minicni"
    if beside.exists():
        return str(beside)
    found = shutil.which("minicni")
    if found is None:
        pytest.fail("the minicni executable is not installed (pip install -e .) nor MINICNI_PLUGIN")
    return found


# -- reading kernel state ---------------------------------------------------------------------
@dataclass(frozen=True)
class LinkState:
    name: str
    kind: str | None
    master: str | None
    mtu: int
    up: bool
    mac: str


def _ipr_in(path: str) -> IPRoute:
    with netns.enter(path):
        return IPRoute()


def links_in(path: str) -> dict[str, LinkState]:
    with _ipr_in(path) as ipr:
        raw = list(ipr.get_links())
        names = {m["index"]: m.get("ifname") for m in raw}
        return {
            m.get("ifname"): LinkState(
                name=m.get("ifname"),
                kind=m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                master=names.get(m.get("master")) if m.get("master") else None,
                mtu=m.get("mtu"),
                up=bool(m["flags"] & 1),
                mac=m.get("address"),
            )
            for m in raw
        }


def addresses_in(path: str, ifname: str | None = None, family: int = 2) -> set[str]:
    """IPv4 addresses as "a.b.c.d/len" (IPv6 with `family` 10, link-local ones left out; of one
    interface when `ifname` is given)."""
    with _ipr_in(path) as ipr:
        kwargs: dict[str, Any] = {"family": family}
        if ifname is not None:
            kwargs["index"] = ipr.link_lookup(ifname=ifname)[0]
        return {
            f"{a.get('address')}/{a['prefixlen']}"
            for a in ipr.get_addr(**kwargs)
            if not str(a.get("address")).startswith("fe80:")
        }


def routes_in(path: str) -> set[tuple[str, str | None, str | None]]:
    """Main-table IPv4 routes as (dst/len, gateway, device)."""
    with _ipr_in(path) as ipr:
        names = {m["index"]: m.get("ifname") for m in ipr.get_links()}
        return {
            (
                f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}",
                r.get("gateway"),
                names.get(r.get("oif")),
            )
            for r in ipr.get_routes(family=2, table=254)
        }


def host_snapshot(
    path: str,
) -> tuple[frozenset[tuple[str, str | None, str | None]], frozenset[str]]:
    """What a failed command must not change: links (name, kind, master) and addresses."""
    return (
        frozenset((link.name, link.kind, link.master) for link in links_in(path).values()),
        frozenset(addresses_in(path)),
    )


def tree(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its content (symlinks as `-> target`)."""
    found: dict[str, str] = {}
    if not directory.exists():
        return found
    for entry in sorted(directory.rglob("*")):
        relative = str(entry.relative_to(directory))
        if entry.is_symlink():
            found[relative] = f"-> {os.readlink(entry)}"
        elif entry.is_file():
            found[relative] = entry.read_text(errors="replace")
        else:
            found[relative] = "<dir>"
    return found


def in_netns(path: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_then_delete(
    node: FakeNode, config: dict[str, Any], result: dict[str, Any], cid: str, pod: str, version: str
) -> None:
    """CHECK, then DEL, each with the ADD's result as prevResult, as a runtime runs them: CHECK
    passes (0.3.x has none: CNI error 1), DEL succeeds with nothing on stdout."""
    checked = node.run("CHECK", dict(config, prevResult=result), cid, pod)
    if version in ("0.3.0", "0.3.1"):
        assert checked.code != 0 and checked.json["code"] == 1, checked
    else:
        assert (checked.code, checked.stdout) == (0, ""), checked
    deleted = node.run("DEL", dict(config, prevResult=result), cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted


def ping(path: str, address: str) -> bool:
    return in_netns(path, "ping", "-c", "1", "-W", "2", "-q", address).returncode == 0


# -- the plugin, run as a runtime runs it -------------------------------------------------------
@dataclass
class PluginRun:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@dataclass
class FakeNode:
    """A fake host namespace with its own data dir, log file, bridge name and pod namespaces.

    `executable`: the plugin run; `agent_log` (the served path): where the plugin's log lines go
    when the agent serves the request; `shared_data_dir`: the agent's data dir, which the config's
    dataDir must name for the agent to serve it (each test has a network of its own in it)."""

    host: str  # path of the fake host namespace
    tmp: Path
    bridge: str
    network: str = "ptnet"
    subnet: str = "10.99.0.0/24"
    pods: list[str] = field(default_factory=list)  # names of the container namespaces
    attachments: set[tuple[str, str]] = field(default_factory=set)
    executable: str = ""
    path: str = "in-process"  # which of the plugin's paths: in-process, served, fallback
    agent_log: Path | None = None
    shared_data_dir: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.shared_data_dir or self.tmp / "data"

    @property
    def served(self) -> bool:
        return self.path == "served"

    def log_text(self) -> str:
        """What the plugin logged: its log file, or on the served path the agent's log."""
        log = self.agent_log if self.served and self.agent_log else self.log_file
        return log.read_text(errors="replace") if log.exists() else ""

    def files(self) -> dict[str, str]:
        """Every file a command may touch besides the logs: the data dir's parent (where an
        escaping container ID would write) with its content."""
        found = tree(self.data_dir.parent)
        for log in ("minicni.log", "agent.log"):
            found.pop(log, None)
        return found

    def deleting(self, container_id: str, ifname: str) -> bool:
        """A DEL answered and not finished yet (the served path finishes it after its answer)."""
        from minicni.ipam.store import AddressStore

        return AddressStore(str(self.store_dir)).is_deleting(container_id, ifname)

    def wait_for_deletes(self, timeout: float = 15.0) -> None:
        """Until no DEL of this node's network is left unfinished."""
        deadline = time.monotonic() + timeout
        while self.store_dir.is_dir() and time.monotonic() < deadline:
            if not [p for p in self.store_dir.iterdir() if p.name.startswith("deleting-")]:
                return
            time.sleep(0.01)

    @property
    def store_dir(self) -> Path:
        return self.data_dir / self.network

    @property
    def log_file(self) -> Path:
        return self.tmp / "minicni.log"

    def config(self, version: str = "1.1.0", **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "cniVersion": version,
            "name": self.network,
            "type": "minicni",
            "bridge": self.bridge,
            "subnet": self.subnet,
            "dataDir": str(self.data_dir),
            "logFile": str(self.log_file),
        }
        for key, value in overrides.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return config

    def pod(self) -> str:
        """A new container namespace (removed at teardown); returns its path."""
        name = unique_name("ptc")
        path = netns.create(name)
        self.pods.append(name)
        in_netns(path, "ip", "link", "set", "lo", "up")
        return path

    def container_id(self) -> str:
        return f"pt-{uuid.uuid4().hex}"

    def run(
        self,
        command: str,
        config: Mapping[str, Any] | None = None,
        container_id: str | None = None,
        netns_path: str | None = None,
        ifname: str | None = "eth0",
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 60,
    ) -> PluginRun:
        """Execute the plugin in the fake host, env and stdin exactly as a runtime passes them.

        `None` leaves a variable out; `env` adds or (with None) removes variables.
        """
        variables: dict[str, str | None] = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pt",
            "CNI_PATH": "/opt/cni/bin",
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            # Where the plugin logs when stdin has no readable logFile (malformed JSON).
            "MINICNI_LOG_FILE": str(self.log_file),
        }
        variables.update(env or {})
        if container_id and ifname:
            self.attachments.add((container_id, ifname))
        body = stdin if stdin is not None else json.dumps(config or self.config()).encode()
        done = subprocess.run(
            ["nsenter", f"--net={self.host}", self.executable or plugin_executable()],
            input=body,
            env={k: v for k, v in variables.items() if v is not None},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        stderr = done.stderr.decode()
        # The served path must not pass by falling back (the shim says why it did).
        assert not self.served or "fast path unavailable" not in stderr, stderr
        if self.served and command == "DEL" and done.returncode == 0 and container_id and ifname:
            # Answered once recorded; the tests look at the kernel once it is all done.
            deadline = time.monotonic() + timeout
            while self.deleting(container_id, ifname) and time.monotonic() < deadline:
                time.sleep(0.005)
        return PluginRun(done.returncode, done.stdout.decode(), stderr)

    def add(self, netns_path: str, container_id: str | None = None, **kwargs: Any) -> PluginRun:
        return self.run("ADD", kwargs.pop("config", None), container_id, netns_path, **kwargs)

    def reservations(self) -> dict[str, dict[str, Any]]:
        """The store's reservation files: address -> content."""
        if not self.store_dir.exists():
            return {}
        found = {}
        for entry in self.store_dir.iterdir():
            try:
                ipaddress.ip_address(entry.name)  # IPv4 or IPv6: a reservation file
            except ValueError:
                continue
            found[entry.name] = json.loads(entry.read_text())
        return found


PLUGIN_PATHS = ["served", "fallback"]
"""`pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)`: each test on both paths."""


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeNode]:
    """A fake host namespace per test, removed with everything in it even when the test fails;
    on the served path, a network of its own on the one node of a running agent (see
    `served_node`)."""
    path = getattr(request, "param", "in-process")
    if path == "served":
        yield from _on_served_node(request.getfixturevalue("served_node"), tmp_path)
        return
    name = unique_name("pth")
    host = netns.create(name)
    fake = FakeNode(host=host, tmp=tmp_path, bridge=unique_name("ptb"), path=path)
    if path == "fallback":
        fake.executable = str(request.getfixturevalue("fallback_plugin"))
    try:
        in_netns(host, "ip", "link", "set", "lo", "up")
        yield fake
    finally:
        for pod in fake.pods:
            netns.remove(pod)
        netns.remove(name)
        _assert_nothing_leaked_to_root(fake)


@dataclass(frozen=True)
class ServedNode:
    """A lab node whose agent serves CNI requests, and the plugin that agent installed."""

    host: str
    files: NodeFiles


@pytest.fixture(scope="module")
def served_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    """One node of the lab's builder with its agent running, as the lab runs it (the lab's
    flags, --cni-socket among them); the tests of a module share it, each with its own bridge,
    network and pods. A node of a dual-stack cluster: its agent turns on forwarding of both
    families, so it serves IPv4-only and dual-stack networks alike."""
    topology = Topology(nodes=1, pods_per_node=0, agent_resync_seconds=30, family="dual")
    lab = NetnsLab(plan(topology, new_lab_id()), str(tmp_path_factory.mktemp("labs")))
    lab.up()
    try:
        (plan_node,) = lab.lab.nodes
        files = lab.files(plan_node)
        assert files.cni_socket.is_socket(), agents_tail(files)
        yield ServedNode(netns.path_of(plan_node.netns), files)
    finally:
        problems = lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []
        assert not problems, problems


def agents_tail(files: NodeFiles) -> str:
    return files.agent_log.read_text(errors="replace")[-3000:] if files.agent_log.exists() else ""


def _on_served_node(served: ServedNode, tmp_path: Path) -> Iterator[FakeNode]:
    fake = FakeNode(
        host=served.host,
        tmp=tmp_path,
        bridge=unique_name("ptb"),
        network=unique_name("ptn"),
        executable=str(served.files.bin_dir / "minicni"),
        path="served",
        agent_log=served.files.agent_log,
        shared_data_dir=served.files.ipam_dir,
    )
    try:
        yield fake
    finally:
        fake.wait_for_deletes()
        for pod in fake.pods:
            netns.remove(pod)
        in_netns(served.host, "ip", "link", "del", fake.bridge)
        shutil.rmtree(fake.store_dir, ignore_errors=True)
        _assert_nothing_leaked_to_root(fake)


@pytest.fixture(scope="session")
def fallback_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin as an agent installs it with --cni-socket, whose socket nobody serves: the
    shim runs the plugin in-process (the agent is stopped, or not started yet)."""
    from minicni.agent.host.launcher import install_plugin

    home = tmp_path_factory.mktemp("fallback")
    install_plugin(
        home / "bin", mode="launcher", runtime_dir=home / "opt", cni_socket=str(home / "no.sock")
    )
    return home / "bin" / "minicni"


def _assert_nothing_leaked_to_root(fake: FakeNode) -> None:
    """The plugin runs in the fake host: none of its links may ever show up in the real one."""
    from minicni.net.links import host_veth_name

    ours = {fake.bridge} | {host_veth_name(cid, ifname) for cid, ifname in fake.attachments}
    with IPRoute() as ipr:
        leaked = ours & {m.get("ifname") for m in ipr.get_links()}
    assert not leaked, f"links leaked into the root namespace: {leaked}"


@pytest.fixture
def agent_cluster(tmp_path: Path) -> Iterator[Callable[..., AgentCluster]]:
    """Builds three node namespaces on an "l2" or "routed" underlay, agents not started (the test
    runs them); each cluster is removed with everything in it even when the test fails."""
    labs: list[NetnsLab] = []

    def build(underlay: str, nodes: int = 3, **families: str) -> AgentCluster:
        lab = NetnsLab(
            plan(agent_topology(underlay, nodes, **families), new_lab_id()),
            str(tmp_path / "labs"),
            start_agents=False,
        )
        lab.up()  # a failed up removes what it built
        labs.append(lab)
        return AgentCluster(lab)

    yield build
    for lab in labs:
        problems = lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []
        assert not problems, problems
