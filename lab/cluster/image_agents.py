"""The agent as the DaemonSet runs it: the built image, started by podman on a lab node.

`PodmanStore` is podman with every piece of its state in one directory of the lab's own (storage,
run dirs, runtime root, a cgroup parent), so nothing reaches the host's podman and everything goes
with `remove_everything()`, also after a killed run. The image comes from the archive that
`make image-offline` saves (or an image of the host's podman, copied in by name).

`ImageAgent` starts the agent container of deployments/manifests/minicni.yaml for one node (see
lab.cluster.daemonset for the translation), and waits for it as kubelet would: the startup probe
must pass before its deadline, then the readiness probe.

A lab node's file system is a directory standing in for the node's "/"; `node_view_prefix` runs a
command (the CNI plugin, as the node's runtime would) seeing that node's /opt, /var/lib, /var/log
and /run/minicni at their usual paths, in a mount namespace of its own that disappears with it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.cluster import daemonset
from lab.cluster.daemonset import AgentPodSpec, HttpProbe, LabNode
from lab.cluster.processes import kill, processes_naming
from lab.runtimes.cri.cleanup import remove_tree
from minicni.net import netns

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ARCHIVE = REPO / "build" / "image" / "minicni.tar"
ARCHIVE_ENV = "MINICNI_IMAGE_ARCHIVE"
BUILD_TARGET = "make image-offline"
# The node directories a CNI plugin run by the node's runtime uses: the bundle and the launcher
# (/opt), the address store (/var/lib/cni/networks), the plugin's log (/var/log) and the agent's
# CNI socket, which the plugin's shim connects to (/run/minicni).
NODE_VIEW_DIRS = ("/opt", "/var/lib", "/var/log", "/run/minicni")
HOST_MOUNT_POINTS = ("/run/minicni",)
"""View directories a host that runs no minicni lacks: a bind mount needs its mount point, so
they are made (empty, root's, 0700; /run is a tmpfs) and left in place, as `ip netns` leaves
/run/netns: removing one would detach the views of every other lab using it."""
COMMAND_TIMEOUT = 120.0
INIT_TIMEOUT = 300.0  # an init container copies the bundle (tens of MB) and may wait for the node
SHORT_RUN_DIR = "/run/minicni-podman"

# Linux capability numbers (linux/capability.h), to read CapEff.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip


class ImageAgentError(RuntimeError):
    pass


def image_archive() -> Path:
    """The saved image: $MINICNI_IMAGE_ARCHIVE, else where `make image-offline` puts it."""
    return Path(os.environ.get(ARCHIVE_ENV) or DEFAULT_ARCHIVE)


IMAGE_SOURCES = ("minicni", "lab", "pyproject.toml", "deployments/Dockerfile")
"""What the image is built from: an archive older than any of it runs code that is not this."""


def stale_image_reason(archive: Path | None = None) -> str | None:
    """Why the saved image is older than the sources it is built from (None: it is not, or it
    was not built from this checkout: $MINICNI_IMAGE_ARCHIVE names another)."""
    archive = archive or image_archive()
    if archive != DEFAULT_ARCHIVE or not archive.is_file():
        return None
    built = archive.stat().st_mtime
    for name in IMAGE_SOURCES:
        source = REPO / name
        files = source.rglob("*.py") if source.is_dir() else [source]
        newer = next((f for f in files if f.is_file() and f.stat().st_mtime > built), None)
        if newer is not None:
            return (
                f"the image at {archive} is older than {newer.relative_to(REPO)}: it runs other "
                f"code than this checkout's; rebuild it with `{BUILD_TARGET}`"
            )
    return None


def missing_image_reason() -> str | None:
    """Why the image cannot be run here (None: it can)."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman)"
    if not image_archive().is_file():
        return f"no agent image at {image_archive()}: build it with `{BUILD_TARGET}`"
    return None


def capabilities_of(mask: int) -> set[str]:
    return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1} | {
        f"CAP_{bit}" for bit in range(len(CAPABILITIES), 64) if mask >> bit & 1
    }


def effective_capabilities(pid: int) -> set[str]:
    """The capabilities process `pid` holds (CapEff in /proc/<pid>/status), by name."""
    with open(f"/proc/{pid}/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("CapEff:"):
                return capabilities_of(int(line.split()[1], 16))
    raise ImageAgentError(f"/proc/{pid}/status has no CapEff")


def _limits() -> list[str]:
    """Container limits from this process's own: podman's defaults (nofile 1048576) exceed what
    runc may set on many hosts. nproc is capped: runc fails above the kernel's per-user ceiling."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 16384)
    nproc = 16384 if nproc == resource.RLIM_INFINITY else nproc
    return [f"nofile={soft}:{hard}", f"nproc={nproc}:{nproc}"]


class PodmanStore:
    """podman with its storage, run dirs, runtime state and cgroup parent all our own."""

    def __init__(self, base: str, cgroup_parent: str) -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.dirs = {k: os.path.join(base, k) for k in ("root", "tmp", "runtime", "network")}
        # podman refuses a run root longer than 50 characters: a short one, named after `base`
        digest = hashlib.sha256(os.path.abspath(base).encode()).hexdigest()[:12]
        self.dirs["runroot"] = f"{SHORT_RUN_DIR}-{digest}"
        for directory in self.dirs.values():
            os.makedirs(directory, exist_ok=True)
        conf = os.path.join(base, "containers.conf")
        ulimits = ", ".join(f'"{limit}"' for limit in _limits())
        with open(conf, "w", encoding="utf-8") as stream:
            stream.write(
                f"[containers]\ndefault_ulimits = [{ulimits}]\n"
                f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                f'events_logfile_path = "{self.dirs["tmp"]}/events.log"\n'
                f'tmp_dir = "{self.dirs["tmp"]}"\n'
                # the agent runs in the node's network (no podman network); still, podman takes
                # its network backend's lock in this directory: ours, not the host's /etc/cni
                f'[network]\nnetwork_config_dir = "{self.dirs["network"]}"\n'
            )
        storage = os.path.join(base, "storage.conf")
        with open(storage, "w", encoding="utf-8") as stream:
            stream.write(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{self.dirs["root"]}"\n'
                f'runroot = "{self.dirs["runroot"]}"\n'
            )
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=conf,
            CONTAINERS_STORAGE_CONF=storage,
            TMPDIR=self.dirs["tmp"],
        )
        # runc rather than crun: crun refuses cgroup v1 hosts with a hybrid layout.
        runtime = shutil.which("runc") or shutil.which("crun") or "runc"
        self.argv = [
            "podman",
            "--root", self.dirs["root"],
            "--runroot", self.dirs["runroot"],
            "--tmpdir", self.dirs["tmp"],
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", runtime,
            "--runtime-flag", f"root={self.dirs['runtime']}",
        ]  # fmt: skip

    def __call__(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        done = self(*args, timeout=timeout)
        if done.returncode != 0:
            raise ImageAgentError(f"podman {' '.join(args[:3])}... failed: {done.stderr.strip()}")
        return done.stdout

    def load_archive(self, archive: Path) -> str:
        """Load a docker-archive; returns the image's id."""
        out = self.ok("load", "--quiet", "--input", str(archive), timeout=600)
        # "Loaded image(s): ref" or "Loaded image: ref": the last word names the image
        return out.strip().split()[-1]

    def copy_from_host(self, image: str) -> str:
        """Copy an image of the host's podman (default storage) into this store."""
        archive = os.path.join(self.dirs["tmp"], "image.tar")
        saved = subprocess.run(
            ["podman", "save", "--format", "docker-archive", "-o", archive, image],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if saved.returncode != 0:
            raise ImageAgentError(f"podman save {image}: {saved.stderr.strip()}")
        try:
            self.load_archive(Path(archive))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(archive)
        return image

    def remove_everything(self) -> list[str]:
        """Containers, storage (its mounts first), cgroups: what podman leaves behind."""
        problems = []
        if os.path.isdir(self.dirs["root"]):
            done = self("rm", "--all", "--force", "--time", "2", timeout=60)
            if done.returncode != 0:
                problems.append(f"podman rm: {done.stderr.strip()}")
        settle(self.base)
        for directory in (self.base, self.dirs["runroot"]):
            problems += remove_tree(directory)
        remove_cgroups(self.cgroup_parent)
        return problems


def settle(directory: str, timeout: float = 10.0) -> None:
    """Wait for what still works in the store after `podman rm` (conmon, its cleanup command),
    then kill what is left: the store is about to go, and a writer would bring files back."""
    deadline = time.monotonic() + timeout
    while processes_naming(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in processes_naming(directory):
        kill(pid)


def remove_cgroups(parent: str) -> None:
    """rmdir the (empty) cgroups made under `parent` in every hierarchy: with the cgroupfs
    manager, runc and conmon leave them behind. rmdir refuses one that still has processes."""
    base = Path("/sys/fs/cgroup")
    roots = (
        [base]
        if (base / "cgroup.controllers").exists()
        else [p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]
    )
    for root in roots:
        top = root / parent.strip("/")
        if top.is_dir():
            for directory, _, _ in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


def release_host_mount_points() -> None:
    """Remove the host's mount points `prepare_node_root` made, once no image lab is left (each
    has a podman run root until its teardown): never one with something in it."""
    if glob.glob(f"{SHORT_RUN_DIR}-*"):
        return
    for directory in HOST_MOUNT_POINTS:
        with contextlib.suppress(OSError):  # absent, or in use: a real agent's socket is there
            os.rmdir(directory)


PODMAN_HOST_FILES = (
    ("/var/lib/containers", "cache", "/var/lib/containers/storage"),
    ("/var/cache/containers", "short-name-aliases.conf.lock", "/var/lib/containers/storage"),
)
"""What podman writes for root whatever --root says (its blob-info cache, a lock of its
short-name aliases), as (directory, what it holds, the store that would show the host uses podman
itself)."""


def release_podman_host_files() -> None:
    """Remove what podman wrote outside the lab's own store, once no image lab is left, on a host
    that has no podman store of its own (there, the cache is the host's: it stays)."""
    if glob.glob(f"{SHORT_RUN_DIR}-*"):
        return
    for directory, written, own_store in PODMAN_HOST_FILES:
        if os.path.exists(own_store):
            continue
        with contextlib.suppress(OSError):
            if os.listdir(directory) == [written]:
                shutil.rmtree(directory)


def node_view_prefix(node_root: str) -> list[str]:
    """argv prefix: run the rest seeing the node's /opt, /var/lib and /var/log (bind mounts in a
    private mount namespace of that command alone, gone when it exits)."""
    for directory in NODE_VIEW_DIRS:
        if (node_root.rstrip("/") + "/").startswith(directory + "/"):
            raise ImageAgentError(f"a node root under {directory} would hide itself: {node_root}")
    binds = " && ".join(f'mount --bind "$0{d}" {d}' for d in NODE_VIEW_DIRS)
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", f'{binds} && exec "$@"', node_root]  # fmt: skip


def prepare_node_root(spec: AgentPodSpec, node: LabNode) -> None:
    """What kubelet creates for the hostPath types, and the node's own /opt, /var/lib, /var/log,
    /run/minicni (with the lab host's mount point for the last)."""
    for directory in NODE_VIEW_DIRS:
        os.makedirs(node.root + directory, exist_ok=True)
    for directory in HOST_MOUNT_POINTS:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    for path, kind in daemonset.host_paths_to_create(spec, node):
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8"):
                pass


def http_status(netns_path: str, url_host: str, port: int, path: str, timeout: float) -> int:
    """GET from inside the namespace, as kubelet's probe reaches a hostNetwork pod; 0: no answer."""
    with netns.enter(netns_path):
        connection = http.client.HTTPConnection(url_host, port, timeout=timeout)
        try:
            connection.connect()
        except OSError:
            connection.close()
            return 0
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def probe_passes(probe: HttpProbe, node: LabNode) -> bool:
    """kubelet's rule: a status from 200 to 399 is success."""
    status = http_status(
        node.netns_path, probe.host or node.ip, probe.port, probe.path, probe.timeout_seconds
    )
    return 200 <= status < 400


@dataclass
class ImageAgent:
    """One node's agent container."""

    store: PodmanStore
    spec: AgentPodSpec
    node: LabNode
    name: str

    def start(
        self,
        image: str,
        env_overrides: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """The init containers one after the other, each to a successful end, then the agent
        (detached), as kubelet starts the pod."""
        prepare_node_root(self.spec, self.node)
        options: dict[str, Any] = {
            "image": image,
            "env_overrides": env_overrides,
            "cgroup_parent": self.store.cgroup_parent,
            "labels": labels,
        }
        for init in self.spec.init_containers:
            name = f"{self.name}-{init.name}"
            argv = daemonset.podman_run_args(
                self.spec, self.node, name=name, container=init, **options
            )
            done = self.store(*argv, timeout=INIT_TIMEOUT)
            if done.returncode != 0:
                raise ImageAgentError(
                    f"init container {init.name} on {self.node.name} exited "
                    f"{done.returncode}:\n{_tail(done.stdout + done.stderr)}"
                )
        self.store.ok(*daemonset.podman_run_args(self.spec, self.node, name=self.name, **options))

    def state(self) -> dict[str, object]:
        out = self.store.ok("inspect", "--type", "container", self.name)
        info: dict[str, object] = json.loads(out)[0]["State"]
        return info

    def pid(self) -> int:
        return int(str(self.state()["Pid"]))

    def logs(self, tail: int = 30) -> str:
        done = self.store("logs", "--tail", str(tail), self.name)
        return done.stdout + done.stderr

    def wait_ready(self, poll: float = 0.1) -> float:
        """Seconds until ready: the startup probe passes (within its deadline), then readiness.
        Polled more often than kubelet would, with its time-outs and deadline."""
        started = time.monotonic()
        probes = self.spec.probes
        startup = probes.get("startup") or probes.get("liveness")
        stages: Sequence[HttpProbe] = [p for p in (startup, probes.get("readiness")) if p]
        deadline = started + (startup.deadline_seconds if startup else 120)
        for probe in stages:
            while not probe_passes(probe, self.node):
                if self.state().get("Running") is not True:
                    raise ImageAgentError(
                        f"agent container on {self.node.name} exited "
                        f"({self.state().get('ExitCode')}):\n{self.logs()}"
                    )
                if time.monotonic() > deadline:
                    raise ImageAgentError(
                        f"agent on {self.node.name}: {probe.kind} probe {probe.path} still "
                        f"failing after {deadline - started:.0f} s:\n{self.logs()}"
                    )
                time.sleep(poll)
        return time.monotonic() - started


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
