"""The "bundle" plugin install, tried on a fresh root: the installed executable must work as a
runtime runs it on a node that has no Python and possibly another libc.

Every run happens inside `chroot <root>`, where the only files are what the installer wrote plus a
/bin/sh: the host's Python, its libc and its loader are out of reach. With busybox-static the
chroot holds no libc at all besides the bundled one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minicni.agent.host import bundle
from minicni.agent.host.bundle import RuntimeSource, install_bundle
from minicni.agent.host.launcher import install_plugin

pytestmark = pytest.mark.root

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
REPO = Path(__file__).resolve().parent.parent
HAS_PLUGIN_ENTRY = (REPO / "minicni" / "__main__.py").exists()


@dataclass(frozen=True)
class FreshRoot:
    root: Path
    cni_bin_dir: Path
    runtime_dir: Path

    @property
    def plugin(self) -> Path:
        return self.cni_bin_dir / "minicni"

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.runtime_dir.iterdir() if not p.name.startswith("."))

    def run(
        self, argv: list[str], *, env: dict[str, str], stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` (paths as the host sees them) inside the chroot, with exactly `env`."""
        return subprocess.run(
            [CHROOT, str(self.root), *argv],
            input=stdin,
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )


def _static_shell() -> Path | None:
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    out = subprocess.run(["file", "-L", busybox], capture_output=True, text=True, check=False)
    return Path(busybox) if "statically linked" in out.stdout or out.returncode != 0 else None


def _install_shell(root: Path) -> None:
    """Give the chroot a /bin/sh: busybox-static when present (no libc at all), else the host's
    shell with only the libraries it links (still no Python)."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    static = _static_shell()
    if static is not None:
        shutil.copy2(static, root / "bin" / "sh")
        return
    shell = Path(os.path.realpath("/bin/sh"))
    shutil.copy2(shell, root / "bin" / "sh")
    loader = bundle._elf_interpreter(shell)
    assert loader is not None
    for path in [*bundle.shared_libraries(shell, loader).values(), Path(loader)]:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)


def _mirror_host_path(root: Path) -> None:
    """The launcher names the runtime by the absolute path it was installed at (on a node, the
    agent's mount and the host's path are the same). Here that path is `<root>/opt/minicni`; a
    symlink `<root>/<root> -> /` makes the same path resolve inside the chroot."""
    inside = root / str(root).lstrip("/")
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.symlink_to("/")


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshRoot]:
    root = tmp_path_factory.mktemp("node") / "root"
    root.mkdir()
    _install_shell(root)
    _mirror_host_path(root)
    fresh = FreshRoot(root, root / "opt" / "cni" / "bin", root / "opt" / "minicni")
    assert install_plugin(fresh.cni_bin_dir, mode="bundle", runtime_dir=fresh.runtime_dir) is True
    yield fresh


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshRoot]:
    """A fresh root with no shell and no libc at all: only what the agent installs when it serves
    CNI requests (the launcher runs the shim). No agent serves this socket: the shim falls back."""
    root = tmp_path_factory.mktemp("served") / "root"
    root.mkdir()
    _mirror_host_path(root)
    fresh = FreshRoot(root, root / "opt" / "cni" / "bin", root / "opt" / "minicni")
    socket_path = str(root / "run" / "minicni" / "cni.sock")
    assert install_plugin(fresh.cni_bin_dir, mode="bundle", runtime_dir=fresh.runtime_dir,
                          cni_socket=socket_path)  # fmt: skip
    yield fresh


def test_the_served_launcher_needs_no_shell_and_no_libc_but_the_bundles(
    served_root: FreshRoot,
) -> None:
    """The kernel starts the bundled interpreter on the shim compiled with the socket in it (the
    launcher is that "#!" line): it names the bundled loader and libraries itself, so a root with
    neither /bin/sh nor any other libc runs the plugin."""
    version_dir = served_root.runtime_dir / served_root.versions()[0]
    socket_path = str(served_root.root / "run" / "minicni" / "cni.sock")
    baked = bundle.baked_shim(version_dir, socket_path)
    first_line = served_root.plugin.read_text().splitlines()[0]
    assert first_line == f"#!{version_dir}/bin/python3 {baked}" and baked.is_file()
    assert not (served_root.root / "bin").exists() and not (served_root.root / "lib").exists()
    proc = served_root.run(
        [str(served_root.plugin)],
        env={"CNI_COMMAND": "VERSION", "PATH": "/nowhere"},
        stdin=b'{"cniVersion":"1.1.0"}',
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["cniVersion"] == "1.1.0"
    # A second install with the same socket finds everything in place.
    again = install_plugin(served_root.cni_bin_dir, mode="bundle",
                           runtime_dir=served_root.runtime_dir, cni_socket=socket_path)  # fmt: skip
    assert again is False


class ListeningAgent:
    """A stand-in for the agent on the served root's socket: takes each connection in a thread and
    runs `script` on it with the peer's pid; keeps what the shim sent and what the script saw."""

    def __init__(self, root: FreshRoot, script: Callable[[socket.socket, int], None]) -> None:
        self.path = root.root / "run" / "minicni" / "cni.sock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(4)
        self.listener.settimeout(1.0)
        self.script = script
        self.connections = 0
        self.received = b""
        self.seen: dict[str, int] = {}
        self.failure: BaseException | None = None
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """The first connection goes to the script; any later one is counted and closed (the
        shim then falls back), until the listener closes."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                if self.closing:
                    return
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                if self.connections > 1:
                    continue
                conn.settimeout(10)
                pid, _, _ = struct.unpack(
                    "=iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                )
                try:
                    self.script(conn, pid)
                except BaseException as error:  # reported by the test, not lost in the thread
                    self.failure = error

    def read_request(self, conn: socket.socket) -> None:
        data = conn.recv(16)
        size = 16 + int.from_bytes(data[8:12], "little") + int.from_bytes(data[12:16], "little")
        while len(data) < size:
            data += conn.recv(65536)
        self.received = data

    def close(self) -> None:
        self.closing = True
        self.thread.join(15)
        self.listener.close()
        self.path.unlink(missing_ok=True)
        assert self.failure is None, self.failure


def signal_masks(pid: int) -> dict[str, int]:
    """SigIgn and SigCgt of a process: which signals it ignores, and which it has handlers for."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigCgt"):
            masks[key] = int(value, 16)
    return masks


def test_the_served_shim_forwards_the_request_before_the_interpreter_finishes_starting(
    served_root: FreshRoot,
) -> None:
    """The bundle runs the shim from the first file the interpreter imports (the boot copy of
    encodings), so a served request skips the rest of its start-up. Seen from the agent's side:
    when the request comes, the shim has not yet set up what Python's start-up sets up after that
    import (SIGPIPE ignored, a SIGINT handler), and it never does: it exits with the answer."""
    answer = b'{"cniVersion": "1.1.0", "served": "early"}\n'

    def serve(conn: socket.socket, pid: int) -> None:
        agent.seen = signal_masks(pid)
        agent.read_request(conn)
        conn.sendall(b"A")
        assert conn.recv(1) == b"G"
        conn.sendall((3).to_bytes(4, "little") + len(answer).to_bytes(4, "little") + answer)

    agent = ListeningAgent(served_root, serve)
    try:
        proc = served_root.run(
            [str(served_root.plugin)],
            env={"CNI_COMMAND": "VERSION", "PATH": "/nowhere"},
            stdin=b'{"cniVersion":"1.1.0"}',
        )
    finally:
        agent.close()
    assert (proc.returncode, proc.stdout) == (3, answer), proc.stderr.decode()
    assert agent.received[:4] == b"MCNI" and agent.received.endswith(b'{"cniVersion":"1.1.0"}')
    sigint, sigpipe = 1 << (signal.SIGINT - 1), 1 << (signal.SIGPIPE - 1)
    assert not agent.seen["SigCgt"] & sigint, agent.seen
    assert not agent.seen["SigIgn"] & sigpipe, agent.seen


def test_a_request_the_agent_refuses_early_runs_in_process_with_stdin_intact(
    served_root: FreshRoot,
) -> None:
    """The shim read stdin before the refusal, at start-up: the plugin, run once the interpreter
    is up, gets all of it."""

    def refuse(conn: socket.socket, pid: int) -> None:
        agent.read_request(conn)
        conn.sendall(b"Rversion: protocol version 1; this agent speaks 2")

    data = served_root.root / "refused-data"
    config = {"cniVersion": "1.1.0", "name": "early", "type": "minicni", "subnet": "10.9.0.0/24",
              "dataDir": str(data), "logFile": str(served_root.root / "refused.log")}  # fmt: skip
    agent = ListeningAgent(served_root, refuse)
    try:
        proc = served_root.run(
            [str(served_root.plugin)],
            env={"CNI_COMMAND": "STATUS", "PATH": "/nowhere"},
            stdin=json.dumps(config).encode(),
        )
        assert (proc.returncode, proc.stdout) == (0, b""), proc.stderr.decode()
        assert (data / "early" / "lock").exists()  # STATUS read the whole config, dataDir too
        log = (served_root.root / "refused.log").read_text()
        assert "fast path unavailable (refused: version: protocol version 1" in log
    finally:
        agent.close()
        shutil.rmtree(data, ignore_errors=True)
        (served_root.root / "refused.log").unlink(missing_ok=True)
    assert agent.connections == 1  # refused once: main did not ask again


def test_an_answer_the_shim_cannot_write_ends_it_with_an_error_and_is_never_asked_again(
    served_root: FreshRoot,
) -> None:
    """After the go the agent may have run the request: a shim whose stdout refuses the answer
    exits non-zero, and neither forwards the request again nor runs it in-process."""

    def serve(conn: socket.socket, pid: int) -> None:
        agent.read_request(conn)
        conn.sendall(b"A")
        assert conn.recv(1) == b"G"
        conn.sendall(bytes(4) + (3).to_bytes(4, "little") + b"{}\n")

    agent = ListeningAgent(served_root, serve)
    try:
        with open(os.devnull, "rb") as read_only:  # writing to it fails: EBADF
            proc = subprocess.run(
                [CHROOT, str(served_root.root), str(served_root.plugin)],
                input=b'{"cniVersion":"1.1.0"}',
                stdout=read_only,
                stderr=subprocess.PIPE,
                env={"CNI_COMMAND": "VERSION", "PATH": "/nowhere"},
                check=False,
                timeout=60,
            )
    finally:
        agent.close()
    assert proc.returncode == 1, proc.stderr.decode()
    assert agent.connections == 1


def test_the_bundled_interpreter_run_on_anything_else_never_calls_the_agent(
    served_root: FreshRoot,
) -> None:
    version_dir = served_root.runtime_dir / served_root.versions()[0]
    agent = ListeningAgent(served_root, lambda conn, pid: None)
    try:
        for argv in (["-c", "print(7)"], [str(version_dir / "shim.pyc"), "/nowhere.sock"]):
            proc = served_root.run(
                [str(version_dir / "bin" / "python3"), *argv],
                env={"CNI_COMMAND": "VERSION", "PATH": "/nowhere"},
                stdin=b'{"cniVersion":"1.1.0"}',
            )
            assert proc.returncode == 0, proc.stderr.decode()
            assert proc.stdout.startswith((b"7", b'{"cniVersion": "1.1.0", "supportedVersions"'))
    finally:
        agent.close()
    assert agent.connections == 0


def test_the_bundled_interpreter_keeps_its_libraries_whatever_ld_library_path_says(
    served_root: FreshRoot,
) -> None:
    """DT_RPATH is searched before LD_LIBRARY_PATH: a runtime's environment that names the host's
    libraries changes nothing (the shell launcher's --library-path gives the same guarantee)."""
    version_dir = served_root.runtime_dir / served_root.versions()[0]
    proc = subprocess.run(
        [str(version_dir / "bin" / "python3"), "-I", "-S", "-c",
         "print(open('/proc/self/maps').read())"],
        env={"LD_LIBRARY_PATH": "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib:/usr/lib"},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mapped = {line.split()[-1] for line in proc.stdout.splitlines() if ".so" in line}
    assert any("libc.so" in path for path in mapped), mapped
    assert all(path.startswith(f"{version_dir}/") for path in mapped), mapped


def test_the_fresh_root_has_no_python_outside_the_bundle(fresh_root: FreshRoot) -> None:
    strays = [
        path
        for path in fresh_root.root.rglob("python*")
        if fresh_root.runtime_dir not in path.parents
    ]
    assert strays == []
    assert fresh_root.plugin.stat().st_mode & 0o111


@pytest.mark.skipif(not HAS_PLUGIN_ENTRY, reason="minicni/__main__.py (plugin core) not merged")
def test_installed_plugin_answers_version_as_a_runtime_calls_it(fresh_root: FreshRoot) -> None:
    proc = fresh_root.run(
        [str(fresh_root.plugin)],
        env={"CNI_COMMAND": "VERSION", "PATH": "/bin"},
        stdin=b'{"cniVersion":"1.1.0"}',
    )
    assert proc.returncode == 0, proc.stderr.decode()
    answer = json.loads(proc.stdout)
    assert answer["cniVersion"] == "1.1.0"
    assert set(answer["supportedVersions"]) >= {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}


def test_bundled_runtime_imports_what_the_plugin_needs(fresh_root: FreshRoot) -> None:
    """Import the plugin's dependencies with the bundled interpreter, the way the launcher starts
    it (its loader, its libraries, isolated mode), and check every module came from the bundle."""
    version_dir = fresh_root.runtime_dir / fresh_root.versions()[0]
    loader = next((version_dir / "lib").glob("ld-*"))
    code = (
        "import json, sys, ctypes, fcntl, hashlib, ipaddress, sqlite3, pyroute2, minicni\n"
        "from pyroute2 import IPRoute\n"
        "ctypes.CDLL(None).getpid()\n"
        # the codecs, from the start-up directory, and one that needs an extension module
        "for name in ('idna', 'latin-1', 'cp437', 'shift_jis'): 'pod'.encode(name)\n"
        "mods = {n: getattr(m, '__file__', None) for n, m in sys.modules.items()}\n"
        "print(json.dumps({'path': sys.path, 'files': [f for f in mods.values() if f]}))\n"
    )
    proc = fresh_root.run(
        [
            str(loader),
            "--library-path",
            str(version_dir / "lib"),
            str(version_dir / "bin/python3"),
            "-I",
            "-S",
            "-B",
            "-c",
            code,
        ],
        env={"PATH": "/bin", "PYTHONPATH": "/nowhere", "PYTHONHOME": "/nowhere"},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert all(entry.startswith(str(version_dir)) for entry in report["path"]), report["path"]
    assert report["files"] and all(f.startswith(str(version_dir)) for f in report["files"])
    # start-up's imports first, then the extension modules, then the rest of the stdlib
    relative = [os.path.relpath(entry, version_dir) for entry in report["path"]]
    stdlib = next(entry for entry in relative if re.fullmatch(r"lib/python3\.\d+", entry))
    assert relative == ["lib/boot", f"{stdlib}/lib-dynload", stdlib, "site"]
    assert any(f.startswith(f"{version_dir}/lib/boot/encodings/") for f in report["files"])


def test_second_install_changes_nothing(fresh_root: FreshRoot) -> None:
    before = fresh_root.plugin.stat()
    versions = fresh_root.versions()
    again = install_plugin(
        fresh_root.cni_bin_dir, mode="bundle", runtime_dir=fresh_root.runtime_dir
    )
    assert again is False
    after = fresh_root.plugin.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert fresh_root.versions() == versions


def test_upgrade_swaps_the_launcher_and_keeps_one_previous_version(
    fresh_root: FreshRoot, tmp_path: Path
) -> None:
    """A changed plugin package makes a new version; the launcher moves to it in one rename and
    the version before stays for plugin processes still running from it."""
    here = RuntimeSource.of_this_process()
    package = tmp_path / "minicni"
    shutil.copytree(here.packages[0], package, ignore=shutil.ignore_patterns("__pycache__"))
    first = fresh_root.versions()
    seen = [first]
    for generation in (1, 2):
        (package / "_generation.py").write_text(f"GENERATION = {generation}\n")
        source = RuntimeSource(
            executable=here.executable,
            stdlib=here.stdlib,
            dynload=here.dynload,
            packages=(package, *here.packages[1:]),
            version=here.version,
        )
        old_inode = fresh_root.plugin.stat().st_ino
        assert install_bundle(fresh_root.cni_bin_dir, fresh_root.runtime_dir, source=source)
        assert fresh_root.plugin.stat().st_ino != old_inode
        seen.append(fresh_root.versions())
        current = _launcher_home(fresh_root.plugin)
        assert (current / "site" / "minicni" / "_generation.py").exists()
    # after two upgrades: the newest and the one before it; the very first one is gone
    assert len(seen[-1]) == 2
    assert first[0] not in seen[-1]
    assert not list(fresh_root.runtime_dir.glob(".v*")), "a staging directory was left behind"


def _launcher_home(launcher: Path) -> Path:
    for line in launcher.read_text().splitlines():
        if line.startswith("home='"):
            return Path(line.removeprefix("home='").removesuffix("'"))
    raise AssertionError(f"no home= line in {launcher}")


def test_bundled_plugin_adds_and_deletes_a_pod(fresh_root: FreshRoot, tmp_path: Path) -> None:
    """ADD and DEL through the installed launcher, run as a runtime runs it from the node's
    network namespace: the bundled runtime loads pyroute2, ctypes (setns) and the address store."""
    suffix = f"{os.getpid() % 100000}"
    node_ns, pod_ns = f"mcbn{suffix}", f"mcbp{suffix}"
    config = {
        "cniVersion": "1.1.0",
        "name": "bundle-test",
        "type": "minicni",
        "subnet": "10.250.7.0/24",
        "dataDir": str(tmp_path / "ipam"),
        "logFile": str(tmp_path / "minicni.log"),
    }
    env = {
        "CNI_CONTAINERID": "bundle-test-1",
        "CNI_NETNS": f"/run/netns/{pod_ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(fresh_root.cni_bin_dir),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }

    def plugin(command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", node_ns, str(fresh_root.plugin)],
            input=json.dumps(config).encode(),
            env={**env, "CNI_COMMAND": command},
            capture_output=True,
            check=False,
            timeout=60,
        )

    subprocess.run(["ip", "netns", "add", node_ns], check=True)
    try:
        subprocess.run(["ip", "netns", "add", pod_ns], check=True)
        added = plugin("ADD")
        assert added.returncode == 0, (added.stdout, added.stderr)
        result = json.loads(added.stdout)
        assert result["ips"][0]["address"].startswith("10.250.7.")
        seen = subprocess.run(
            ["ip", "-n", pod_ns, "-o", "-4", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert result["ips"][0]["address"] in seen.stdout
        deleted = plugin("DEL")
        assert deleted.returncode == 0, (deleted.stdout, deleted.stderr)
    finally:
        for name in (pod_ns, node_ns):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
