"""Shared fixtures for the root tests: a fake host namespace and container namespaces per test, and
`run_plugin`, which executes the installed `minicni` executable inside the fake host exactly as a
runtime does (env + config on stdin, one JSON document back on stdout); and `agent_cluster`, a
cluster of node namespaces built by the lab's one builder (`lab.cluster`) for the agent's tests.

Nothing here imports the plugin: the executable is found next to `sys.executable` (the venv's bin
directory) or named by env MINICNI_PLUGIN. Kernel state is read back with pyroute2. Whether a test
needs root is decided in one place, the top-level conftest.py: every test here does.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from lab.cluster.build import NetnsLab, lab_namespaces
from lab.topology import new_lab_id, plan
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


def addresses_in(path: str, ifname: str | None = None) -> set[str]:
    """IPv4 addresses as "a.b.c.d/len" (of one interface when `ifname` is given)."""
    with _ipr_in(path) as ipr:
        kwargs: dict[str, Any] = {"family": 2}
        if ifname is not None:
            kwargs["index"] = ipr.link_lookup(ifname=ifname)[0]
        return {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(**kwargs)}


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
    """A fake host namespace with its own data dir, log file, bridge name and pod namespaces."""

    host: str  # path of the fake host namespace
    tmp: Path
    bridge: str
    network: str = "ptnet"
    subnet: str = "10.99.0.0/24"
    pods: list[str] = field(default_factory=list)  # names of the container namespaces
    attachments: set[tuple[str, str]] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

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
            ["nsenter", f"--net={self.host}", plugin_executable()],
            input=body,
            env={k: v for k, v in variables.items() if v is not None},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return PluginRun(done.returncode, done.stdout.decode(), done.stderr.decode())

    def add(self, netns_path: str, container_id: str | None = None, **kwargs: Any) -> PluginRun:
        return self.run("ADD", kwargs.pop("config", None), container_id, netns_path, **kwargs)

    def reservations(self) -> dict[str, dict[str, Any]]:
        """The store's reservation files: address -> content."""
        if not self.store_dir.exists():
            return {}
        found = {}
        for entry in self.store_dir.iterdir():
            if entry.name[:1].isdigit() and not entry.name.endswith(".tmp"):
                found[entry.name] = json.loads(entry.read_text())
        return found


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    """A fake host namespace per test, removed with everything in it even when the test fails."""
    name = unique_name("pth")
    path = netns.create(name)
    fake = FakeNode(host=path, tmp=tmp_path, bridge=unique_name("ptb"))
    try:
        in_netns(path, "ip", "link", "set", "lo", "up")
        yield fake
    finally:
        for pod in fake.pods:
            netns.remove(pod)
        netns.remove(name)
        _assert_nothing_leaked_to_root(fake)


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

    def build(underlay: str, nodes: int = 3) -> AgentCluster:
        lab = NetnsLab(
            plan(agent_topology(underlay, nodes), new_lab_id()),
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
