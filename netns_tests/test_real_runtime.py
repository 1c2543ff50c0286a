"""A real CNI consumer runs minicni: podman (CNI backend) and containerd's `ctr run --cni`.

Each test gives the runtime a private "node": a one-node lab built by the lab's cluster builder
(lab.cluster), in whose network namespace podman (or ctr) runs, so the bridge, the host veths and
the `ip_forward` the plugin enables land there and never on the real host; the node's underlay
ends in the lab's own fabric namespace, so container traffic cannot leave it. The node is set up as
the DaemonSet sets up a Kubernetes node: `minicni-agent --once` runs in it with the lab's nodes
file and flags, writes the conflist and installs the plugin (bundle mode) into the node's own CNI
dirs; the runtime is pointed at exactly those dirs, and nothing here writes a conflist or copies
the plugin. Runtime state (storage, run dirs, CNI config and plugin dirs, the address store, the
plugin log) lives in the node's directory, removed afterwards. The container image is a
busybox-static rootfs built offline: there is no registry.

What a user would check: the container gets an address of the network's subnet, has a default
route via the gateway and reaches it (ICMP and a TCP connection to a listener on the gateway
address, whose peer address is the container's); removing the container releases the reservation
and removes the host veth.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.runtimes.cri.cleanup import remove_tree
from minicni.net import links, netns
from netns_tests.lab_support import RuntimeNode, runtime_node

pytestmark = [
    pytest.mark.root,
    pytest.mark.runtime,
    pytest.mark.slow,
]

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ip", "ping", "nc", "sleep", "cat")
# Directories a runtime creates on the host by itself whatever it is told (libcni's result cache,
# runc's default root, containerd's shim sockets). Removed after the test if the test created them
# and left them empty, so the host ends as it was found.
RUNTIME_HOST_DIRS = (
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/run/runc",
    "/run/crun",
    "/run/containerd",
    "/run/containerd/s",
    "/run/containerd/runc",
    "/run/containerd/fifo",
)
IP_FREEBIND = 15  # linux/in.h: bind to an address that is not (yet) on an interface
COMMAND_TIMEOUT = 60


# -- helpers -------------------------------------------------------------------------------------
def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF with no PT_INTERP: it runs in a rootfs that has no libc."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:5] != b"\x7fELF\x02":
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    types = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return pt_interp not in types


def _run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, **kwargs
    )


def _cgroup_roots() -> list[Path]:
    """The cgroup hierarchies' mount points: /sys/fs/cgroup itself (v2) or one per controller."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]


def _remove_cgroups(parent: str) -> None:
    """Remove the (empty) cgroups a runtime made under `parent` in every hierarchy: runc leaves
    them behind with the cgroupfs driver. rmdir refuses a cgroup that still has processes."""
    for root in _cgroup_roots():
        top = root / parent.strip("/")
        if not top.is_dir():
            continue
        for directory, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _link(node: str, name: str) -> dict[str, object] | None:
    """A link in the node namespace as `ip -j` shows it, or None."""
    proc = _run(["ip", "-n", node, "-j", "-d", "link", "show", "dev", name])
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None  # type: ignore[no-any-return]


class GatewayListener:
    """A TCP listener on the gateway address inside the node namespace; records who connected and
    what they sent. IP_FREEBIND lets it bind before the first ADD puts the address on the bridge."""

    def __init__(self, node_path: str, address: str) -> None:
        with netns.enter(node_path):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind((address, 0))
        self.sock.listen(4)
        self.sock.settimeout(COMMAND_TIMEOUT)
        self.port: int = self.sock.getsockname()[1]
        self.peers: list[tuple[str, bytes]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, (peer, _) = self.sock.accept()
                with conn:
                    conn.settimeout(10)
                    data = b""
                    with contextlib.suppress(OSError):
                        while not data.endswith(b"\n") and (chunk := conn.recv(4096)):
                            data += chunk
                    # Recorded before closing: the client exits once we close.
                    self.peers.append((peer, data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


# -- fixtures (prefixed rt_ so they never clash with netns_tests/conftest.py) ---------------------
@pytest.fixture(scope="module")
def rt_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs holding only a static busybox and the applets the tests use."""
    if not BUSYBOX.exists() or not _is_static_elf(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing or not static: apt-get install busybox-static")
    root = tmp_path_factory.mktemp("rt-rootfs")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "sys", "dev", "etc", "tmp", "run"):
        (root / directory).mkdir()
    return root


@pytest.fixture
def rt_host_dirs() -> Iterator[None]:
    """Remove, afterwards, the runtime's own host directories this test created (if empty)."""
    existed = {d for d in RUNTIME_HOST_DIRS if os.path.lexists(d)}
    yield
    for directory in sorted(set(RUNTIME_HOST_DIRS) - existed, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


@pytest.fixture
def rt_node(rt_host_dirs: None) -> Iterator[RuntimeNode]:
    """A lab node on which `minicni-agent --once` installed the minicni network, the plugin in
    bundle mode (its own Python runtime), as the DaemonSet installs it."""
    with runtime_node() as node:
        node.run_agent("--plugin-install", "bundle")
        yield node


# -- podman --------------------------------------------------------------------------------------
def _podman_skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman)"
    if shutil.which("nsenter") is None:
        return "nsenter is not installed (apt-get install util-linux)"
    version = _run(["podman", "--version"]).stdout
    match = re.search(r"(\d+)\.\d+", version)
    if match is None or int(match.group(1)) != 4:
        return f"needs podman 4.x, the last with a CNI backend (found {version.strip()!r})"
    return None


class Podman:
    """podman with every piece of state in the node's temp dir, run inside the node namespace."""

    def __init__(self, node: RuntimeNode) -> None:
        self.node = node
        self.base = base = node.home / "podman"
        self.dirs = {k: base / k for k in ("root", "runroot", "tmp", "runtime", "volumes")}
        for directory in self.dirs.values():
            directory.mkdir(parents=True)
        # runc rather than crun: crun refuses cgroup v1 hosts with a hybrid layout.
        runtime = shutil.which("runc") or shutil.which("crun") or "runc"
        conf = base / "containers.conf"
        conf.write_text(
            f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
network_config_dir = "{node.conf_dir}"
cni_plugin_dirs = ["{node.bin_dir}"]
default_network = "{node.network}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.dirs["tmp"]}/events.log"
tmp_dir = "{self.dirs["tmp"]}"
volume_path = "{self.dirs["volumes"]}"
"""
        )
        storage = base / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.dirs["root"]}"\n'
            f'runroot = "{self.dirs["runroot"]}"\n'
        )
        # A cgroup parent of our own, removed afterwards (cgroupfs leaves empty cgroups behind).
        self.cgroup_parent = f"/{node.ns}-podman"
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=str(conf),
            CONTAINERS_STORAGE_CONF=str(storage),
            TMPDIR=str(self.dirs["tmp"]),
        )
        self.argv = [
            "nsenter",
            f"--net={node.path}",
            "podman",
            "--root", str(self.dirs["root"]),
            "--runroot", str(self.dirs["runroot"]),
            "--tmpdir", str(self.dirs["tmp"]),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", runtime,
            "--runtime-flag", f"root={self.dirs['runtime']}",
        ]  # fmt: skip

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([*self.argv, *args], env=self.env)

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, (
            f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n"
            f"plugin log:\n{self.node.plugin_log_tail()}"
        )
        return proc.stdout

    def remove_everything(self) -> None:
        self("rm", "--all", "--force", "--time", "0")
        _remove_cgroups(self.cgroup_parent)
        remove_tree(str(self.base))  # what podman left mounted there first, never into the host


@pytest.fixture
def rt_podman(rt_node: RuntimeNode) -> Iterator[Podman]:
    reason = _podman_skip_reason()
    if reason:
        pytest.skip(reason)
    podman = Podman(rt_node)
    try:
        yield podman
    finally:
        podman.remove_everything()


@dataclass(frozen=True)
class Started:
    id: str
    address: str
    gateway: str
    sandbox: str


def _start(podman: Podman, name: str, rootfs: Path) -> Started:
    podman.ok(
        "run", "--detach", "--name", name, "--network", podman.node.network,
        "--cgroup-parent", podman.cgroup_parent,
        "--rootfs", str(rootfs), "/bin/sleep", "600",
    )  # fmt: skip
    info = json.loads(podman.ok("inspect", "--type", "container", name))[0]
    network = info["NetworkSettings"]["Networks"][podman.node.network]
    return Started(
        id=info["Id"],
        address=network["IPAddress"],
        gateway=network["Gateway"],
        sandbox=info["NetworkSettings"]["SandboxKey"],
    )


def test_podman_container_gets_an_address_reaches_the_gateway_and_releases_it(
    rt_podman: Podman, rt_node: RuntimeNode, rt_rootfs: Path
) -> None:
    podman, node = rt_podman, rt_node
    assert node.network in podman.ok("network", "ls", "--format", "{{.Name}}").split()

    first = _start(podman, "rt-a", rt_rootfs)
    second = _start(podman, "rt-b", rt_rootfs)

    # Addresses from the subnet, distinct, gateway the subnet's first address, reserved by ID.
    for started in (first, second):
        assert ipaddress.IPv4Address(started.address) in node.subnet
        assert started.gateway == node.gateway
    assert first.address != second.address
    assert node.reservations() == {first.address: first.id, second.address: second.id}

    # What the container itself sees: its address on eth0 and the default route via the gateway.
    addresses = podman.ok("exec", "rt-a", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert f"inet {first.address}/{node.subnet.prefixlen}" in addresses
    routes = podman.ok("exec", "rt-a", "ip", "-4", "route", "show")
    assert f"default via {node.gateway} dev eth0" in routes

    # The host veth sits on the test's bridge in the node namespace.
    host_veth = links.host_veth_name(first.id, "eth0")
    veth, bridge = _link(node.ns, host_veth), _link(node.ns, node.bridge)
    assert veth is not None and bridge is not None
    assert veth.get("master") == node.bridge

    # Traffic: ICMP to the gateway, a TCP connection to a listener on it, a neighbour container.
    podman.ok("exec", "rt-a", "ping", "-c", "2", "-W", "3", node.gateway)
    listener = GatewayListener(node.path, node.gateway)
    try:
        token = f"hello-from-{first.id[:12]}"
        podman.ok(
            "exec", "rt-a", "sh", "-c",
            f"echo {token} | nc -w 3 {node.gateway} {listener.port}",
        )  # fmt: skip
    finally:
        listener.close()
    assert (first.address, f"{token}\n".encode()) in listener.peers
    podman.ok("exec", "rt-a", "ping", "-c", "1", "-W", "3", second.address)

    # Removing the container: reservation released, host veth and container netns gone.
    podman.ok("rm", "--force", "--time", "0", "rt-a")
    assert node.reservations() == {second.address: second.id}
    assert not any(p.name.startswith(f"owner-{first.id}") for p in node.store.iterdir())
    assert _link(node.ns, host_veth) is None
    assert not os.path.exists(first.sandbox)

    podman.ok("rm", "--force", "--time", "0", "rt-b")
    assert node.reservations() == {}
    assert _link(node.ns, links.host_veth_name(second.id, "eth0")) is None


# -- containerd (ctr run --cni) -------------------------------------------------------------------
# `ctr run --cni` reads /etc/cni/net.d and /opt/cni/bin with no flag to change them, so ctr runs
# in a private mount namespace where the test's dirs are mounted over those paths (the host's
# stay untouched), and in the node namespace. Run as `python -c CTR_LAUNCHER conf bin node argv`.
CTR_LAUNCHER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
CLONE_NEWNS, CLONE_NEWNET, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x40000000, 4096, 16384, 1 << 18
conf, bindir, node, *argv = sys.argv[1:]
check(libc.unshare(CLONE_NEWNS), "unshare")
check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
if not os.path.isdir("/opt/cni/bin"):
    check(libc.mount(b"tmpfs", b"/opt", b"tmpfs", 0, b"mode=755"), "tmpfs on /opt")
    os.makedirs("/opt/cni/bin")
check(libc.mount(bindir.encode(), b"/opt/cni/bin", None, MS_BIND, None), "bind /opt/cni/bin")
check(libc.mount(conf.encode(), b"/etc/cni/net.d", None, MS_BIND, None), "bind /etc/cni/net.d")
fd = os.open(node, os.O_RDONLY)
check(libc.setns(fd, CLONE_NEWNET), "setns")
os.close(fd)
os.execvp(argv[0], argv)
"""


def _containerd_skip_reason() -> str | None:
    for tool, package in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if shutil.which("containerd-shim-runc-v2") is None:
        return "containerd-shim-runc-v2 is not installed (apt-get install containerd)"
    if not os.path.isdir("/etc/cni/net.d"):
        return "/etc/cni/net.d is missing: ctr run --cni has no other config dir to mount over"
    if sys.executable.startswith("/opt/"):
        return "the test's Python lives in /opt, which the ctr mount namespace replaces"
    return None


class Containerd:
    """A containerd daemon of the test's own (socket, root, state in the temp dir), and ctr."""

    def __init__(self, node: RuntimeNode) -> None:
        self.node = node
        self.base = node.home / "containerd"
        self.base.mkdir()
        self.address = str(self.base / "containerd.sock")
        # Hex and dashes only: containerd rejects a namespace with "_" (mkdtemp names may have one).
        self.namespace = f"minicni-{node.ns}"  # also the cgroup parent ctr gives its containers
        config = self.base / "config.toml"
        config.write_text(
            f"""version = 2
root = "{self.base}/root"
state = "{self.base}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.base}/opt"
"""
        )
        self.log = (self.base / "containerd.log").open("wb")
        self.daemon = subprocess.Popen(
            ["nsenter", f"--net={node.path}", "containerd", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ctr(self, *args: str, mount_cni: bool = False) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        if mount_cni:
            argv = [
                sys.executable, "-I", "-c", CTR_LAUNCHER,
                str(self.node.conf_dir), str(self.node.bin_dir), self.node.path, *argv,
            ]  # fmt: skip
        return _run(argv)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                break
            if self.ctr("version").returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"containerd did not start:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return (self.base / "containerd.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """Kill and delete every task and container of our namespace, then the daemon."""
        if self.daemon.poll() is None:
            for line in self.ctr("containers", "list", "--quiet").stdout.split():
                self.ctr("tasks", "kill", "--signal", "SIGKILL", line)
                self.ctr("tasks", "delete", "--force", line)
                self.ctr("containers", "delete", line)
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(10)
        self.log.close()
        _remove_cgroups(self.namespace)
        with contextlib.suppress(OSError):  # the shim's runc root for our namespace
            os.rmdir(f"/run/containerd/runc/{self.namespace}")
        remove_tree(str(self.base))  # what containerd left mounted there first


@pytest.fixture
def rt_containerd(rt_node: RuntimeNode) -> Iterator[Containerd]:
    reason = _containerd_skip_reason()
    if reason:
        pytest.skip(reason)
    containerd = Containerd(rt_node)
    try:
        containerd.wait_ready()
        yield containerd
    finally:
        containerd.stop()


def test_ctr_run_cni_container_reaches_the_gateway_and_del_releases_the_address(
    rt_containerd: Containerd, rt_node: RuntimeNode, rt_rootfs: Path
) -> None:
    containerd, node = rt_containerd, rt_node
    listener = GatewayListener(node.path, node.gateway)
    token = f"hello-from-ctr-{uuid.uuid4().hex[:6]}"
    script = (
        "ip -4 -o addr show dev eth0 && ip -4 route && "
        f"ping -c 2 -W 3 {node.gateway} && echo {token} | nc -w 3 {node.gateway} {listener.port}"
    )
    try:
        # Foreground run: ctr calls ADD before starting the task and DEL (with no netns, the
        # task being gone) once it exits; --rm then deletes the container.
        proc = containerd.ctr(
            "run", "--rm", "--cni", "--fifo-dir", str(containerd.base / "fifo"),
            "--rootfs", str(rt_rootfs), "rt-ctr", "/bin/sh", "-c", script,
            mount_cni=True,
        )  # fmt: skip
    finally:
        listener.close()
    assert proc.returncode == 0, (
        f"ctr run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
        f"plugin log:\n{node.plugin_log_tail()}\ncontainerd log:\n{containerd.log_tail()}"
    )
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", proc.stdout)
    assert match is not None, proc.stdout
    address = match.group(1)
    assert ipaddress.IPv4Address(address) in node.subnet
    assert int(match.group(2)) == node.subnet.prefixlen
    assert f"default via {node.gateway} dev eth0" in proc.stdout
    assert (address, f"{token}\n".encode()) in listener.peers

    # ctr's DEL (CNI_NETNS empty) released the reservation and removed the host veth.
    container_id = f"{containerd.namespace}-rt-ctr"  # ctr passes <namespace>-<id>
    log = node.plugin_log_tail()
    assert f"ADD {container_id}/eth0: {address}" in log
    assert f"DEL {container_id}/eth0: released {address}" in log
    assert node.reservations() == {}
    assert _link(node.ns, links.host_veth_name(container_id, "eth0")) is None
    assert _link(node.ns, node.bridge) is not None
