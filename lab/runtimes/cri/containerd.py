"""One containerd per node namespace, configured as a kubeadm or kind node's containerd is.

The daemon runs inside the node's network namespace (`nsenter --net`, so it shares the host's mount
namespace: the pod netns files it mounts are visible to the lab) with everything of its own under
the node's directory: root, state, the runc root, the pod network namespaces
(`netns_mounts_under_state_dir`). Its gRPC and ttrpc sockets live in a short temp dir (a unix
socket path is limited to 107 bytes). The CRI plugin reads its CNI config from `conf_dir` and runs
plugins from `bin_dir`: the node agent's dirs, untouched by the lab. Sandboxes get a kubelet-style
cgroup parent under `cgroup_root`, so the whole tree can be removed afterwards.

A node whose agent runs from the image keeps its files (the plugin's runtime in /opt, the address
store in /var/lib, the plugin's log in /var/log) in a directory standing in for its "/": its
containerd then runs under a `view`, an argv prefix giving it a mount namespace of its own in which
those dirs are the node's, as a real node's containerd sees them. The pod netns files it mounts
exist in that namespace only; the lab reaches them through /proc/<pid>/root (`reachable`).

What root lacks here: CAP_SYS_RESOURCE, so the sandbox's oom_score_adj (-998) is refused
(`restrict_oom_score_adj`); and only cgroup v1 (hybrid), so runc uses cgroupfs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, fields
from typing import Any

from lab.runtimes.cri import cleanup, pause
from lab.runtimes.cri.client import CriClient, CriError

SNAPSHOTTER = "overlayfs"
START_TIMEOUT = 30.0
STOP_GRACE = 10.0
CRI_PLUGIN_DIR = "io.containerd.grpc.v1.cri"
# Plugins a node never needs here; skipping them keeps start-up quiet and quick.
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


class ContainerdError(RuntimeError):
    pass


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escaping is a subset TOML accepts."""
    return json.dumps(value)


@dataclass
class ContainerdNode:
    """A node's containerd: where everything is, and (once started) its pid. Serialisable with
    `to_mapping`, so a lab's state file can describe it to a later `down`."""

    name: str
    netns: str  # path of the node's network namespace
    home: str  # the node's containerd dir: config, root, state, runc root, log
    cni_conf_dir: str
    cni_bin_dir: str
    cgroup_root: str  # e.g. "/ml3f2a-n1-kubepods": every sandbox's cgroup is below it
    socket_dir: str = ""  # set by start(): a short temp dir for the sockets
    sandbox_image: str = pause.IMAGE_NAME
    snapshotter: str = SNAPSHOTTER
    pid: int = 0
    sandboxes: list[str] = field(default_factory=list)  # ids seen, for host-file clean-up
    view: list[str] = field(default_factory=list)  # argv prefix: the node's own files; [] = ours
    # the daemon, when this process started it (not part of the mapping)
    _daemon: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        return os.path.join(self.socket_dir, "containerd.sock")

    @property
    def log_file(self) -> str:
        return os.path.join(self.home, "containerd.log")

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    def to_mapping(self) -> dict[str, Any]:
        return {
            f.name: copy.copy(getattr(self, f.name))
            for f in fields(self)
            if not f.name.startswith("_")
        }

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ContainerdNode:
        return cls(**data)

    # ------------------------------------------------------------ configuration

    def config(self) -> str:
        """containerd's config.toml (version 2) for this node."""
        q = _toml_string
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return "\n".join(
            [
                "version = 2",
                f"root = {q(self.path('root'))}",
                f"state = {q(self.path('state'))}",
                f"disabled_plugins = [{', '.join(q(p) for p in DISABLED_PLUGINS)}]",
                "[grpc]",
                f"  address = {q(self.address)}",
                "[ttrpc]",
                f"  address = {q(self.address + '.ttrpc')}",
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {q(self.path('opt'))}",
                f"{cri}]",
                f"  sandbox_image = {q(self.sandbox_image)}",
                "  restrict_oom_score_adj = true",
                "  netns_mounts_under_state_dir = true",
                "  disable_tcp_service = true",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                "  enable_selinux = false",
                "  disable_apparmor = true",
                f"{cri}.cni]",
                f"  conf_dir = {q(self.cni_conf_dir)}",
                f"  bin_dir = {q(self.cni_bin_dir)}",
                "  max_conf_num = 1",
                f"{cri}.containerd]",
                f"  snapshotter = {q(self.snapshotter)}",
                '  default_runtime_name = "runc"',
                f"{cri}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri}.containerd.runtimes.runc.options]",
                f"  Root = {q(self.path('runc'))}",
                "  SystemdCgroup = false",
                "",
            ]
        )

    def pod_cgroup(self, pod_uid: str) -> str:
        """kubelet's cgroup for a BestEffort pod, under this node's tree (cgroupfs syntax)."""
        return f"{self.cgroup_root}/besteffort/pod{pod_uid}"

    # ------------------------------------------------------------ life cycle

    def prepare(self) -> None:
        """Create the node's dirs, its socket dir and config: what `stop` removes (a lab records
        the socket dir before starting anything)."""
        os.makedirs(self.home, exist_ok=True)
        if not self.socket_dir:
            self.socket_dir = tempfile.mkdtemp(prefix=f"mlcri-{self.name}-")
        with open(self.path("config.toml"), "w", encoding="utf-8") as stream:
            stream.write(self.config())

    def start(self, image_tarball: str, timeout: float = START_TIMEOUT) -> None:
        """Start the daemon in the node's namespace, wait for its CRI, import the pause image."""
        self.prepare()
        config = self.path("config.toml")
        with open(self.log_file, "ab") as log:
            daemon = subprocess.Popen(
                [*self.view, "nsenter", f"--net={self.netns}", "containerd", "--config", config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C of the lab does not reach it: down stops it
            )
        self.pid = daemon.pid
        self._daemon = daemon
        self.wait_ready(timeout)
        pause.import_image(self.address, image_tarball, self.snapshotter)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """The CRI answers Version (the CRI plugin is up; the network may not be ready yet)."""
        deadline = time.monotonic() + timeout
        with CriClient(self.address) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    raise ContainerdError(f"containerd of {self.name} exited:\n{self.log_tail()}")
                if os.path.exists(self.address):
                    with contextlib.suppress(CriError):
                        client.version(timeout=2.0)
                        return
                time.sleep(0.05)
        raise ContainerdError(
            f"containerd of {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}"
        )

    def running(self) -> bool:
        if self._daemon is not None:
            return self._daemon.poll() is None
        return bool(_daemon_pids(self.path("config.toml")))

    def reachable(self, path: str) -> str:
        """A path as the daemon sees it, as this process can open it: through the daemon's own
        root when it runs under a view (every exec in the view keeps the daemon's pid)."""
        if not self.view:
            return path
        if not self.pid:
            raise ContainerdError(f"containerd of {self.name} is not running")
        return f"/proc/{self.pid}/root{path}"

    def client(self) -> CriClient:
        return CriClient(self.address)

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as stream:
                return stream.read()[-size:]
        except OSError:
            return "(no containerd log)"

    def stop(self) -> list[str]:
        """Remove every sandbox through the CRI (the plugin's DEL runs, as when kubelet deletes
        pods), stop the daemon, then remove whatever is left: shims, sandbox processes, mounts,
        cgroups, the node's libcni cache entries and shim sockets, the node's dirs.
        Returns the problems met; goes on past each."""
        problems: list[str] = []
        if self.running():
            problems += self._remove_sandboxes()
        problems += self._stop_daemon()
        self.sandboxes = sorted({*self.sandboxes, *self._sandboxes_on_disk()})
        cleanup.kill(cleanup.shims_of(self.address))
        problems += [
            f"{self.name}: cgroup left: {c}" for c in cleanup.remove_cgroups(self.cgroup_root)
        ]
        cleanup.remove_host_files(self.address, self.sandboxes)
        problems += [f"{self.name}: {p}" for p in cleanup.remove_tree(self.home)]
        if self.socket_dir:
            problems += [f"{self.name}: {p}" for p in cleanup.remove_tree(self.socket_dir)]
        return problems

    def _remove_sandboxes(self) -> list[str]:
        problems = []
        with self.client() as client:
            try:
                ids = client.list_pod_sandboxes()
            except CriError as err:
                return [f"{self.name}: {err}"]
            self.sandboxes = sorted({*self.sandboxes, *ids})
            for sandbox_id in ids:
                try:
                    client.stop_pod_sandbox(sandbox_id)
                    client.remove_pod_sandbox(sandbox_id)
                except CriError as err:
                    problems.append(f"{self.name}: sandbox {sandbox_id[:12]}: {err}")
        return problems

    def _stop_daemon(self) -> list[str]:
        pids = _daemon_pids(self.path("config.toml"))
        daemon = self._daemon
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        left = cleanup.wait_gone(pids, STOP_GRACE)
        cleanup.kill(left)
        cleanup.wait_gone(left)
        if daemon is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(5)
        self.pid, self._daemon = 0, None
        return [f"{self.name}: containerd ignored SIGTERM, killed"] if left else []

    def _sandboxes_on_disk(self) -> list[str]:
        """Sandbox ids from the CRI plugin's own state: found even when the daemon is gone."""
        with contextlib.suppress(OSError):
            return os.listdir(self.path("root", CRI_PLUGIN_DIR, "sandboxes"))
        return []


def _daemon_pids(config: str) -> list[int]:
    """containerd daemons started with `--config <config>`: ours, whoever started them."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as stream:
                    argv = stream.read().split(b"\0")
            except OSError:
                continue
            if os.path.basename(argv[0]) == b"containerd" and config.encode() in argv:
                found.append(int(entry))
    return found


def prerequisites() -> list[str]:
    """What is missing on this host to run a CRI node, as install hints ([] when all is there)."""
    missing = []
    for tool, package in (
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    try:
        pause.static_busybox()
    except pause.PauseImageError as err:
        missing.append(str(err))
    return missing
