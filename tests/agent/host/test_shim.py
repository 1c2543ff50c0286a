"""The shim as the agent installs it (compiled, run `-I -S -B`), against a scripted agent on a unix
socket: what it sends, what it imports, and when it runs the plugin in-process instead. No root:
the commands used (VERSION, STATUS) need no pod namespace."""

from __future__ import annotations

import json
import marshal
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minicni.agent.host.launcher import compiled_shim, install_plugin, launcher_script, shim_script

Script = Callable[[socket.socket], None]


class ScriptedAgent:
    """Accepts one connection and runs `script` on it; keeps what the shim sent."""

    def __init__(self, path: Path, script: Script) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.script = script
        self.received = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            self.script(conn)

    def read_request(self, conn: socket.socket) -> None:
        data = conn.recv(16)
        env_size = int.from_bytes(data[8:12], "little")
        stdin_size = int.from_bytes(data[12:16], "little")
        while len(data) < 16 + env_size + stdin_size:
            data += conn.recv(65536)
        self.received = data

    @property
    def env(self) -> dict[str, str]:
        size = int.from_bytes(self.received[8:12], "little")
        items = self.received[16 : 16 + size].split(b"\0")
        return dict(item.decode().split("=", 1) for item in items if item)

    @property
    def stdin(self) -> bytes:
        return self.received[16 + int.from_bytes(self.received[8:12], "little") :]

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    path = tmp_path / "shim.pyc"
    path.write_bytes(compiled_shim(str(path)))
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Callable[[Script], ScriptedAgent]]:
    made: list[ScriptedAgent] = []

    def start(script: Script) -> ScriptedAgent:
        made.append(ScriptedAgent(tmp_path / "cni.sock", script))
        return made[-1]

    yield start
    for scripted in made:
        scripted.close()


def run_shim(
    shim: Path, socket_path: Path, command: str, stdin: bytes, **env: str
) -> subprocess.CompletedProcess[bytes]:
    variables = {"CNI_COMMAND": command, "PATH": "/usr/bin:/bin", "OTHER": "not sent", **env}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-X", "importtime", str(shim), str(socket_path), "site"],
        input=stdin,
        env=variables,
        capture_output=True,
        timeout=60,
        check=False,
    )


def imported(run: subprocess.CompletedProcess[bytes]) -> set[str]:
    """Modules imported after start-up, from `-X importtime`."""
    names = set()
    for line in run.stderr.decode().splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            names.add(line.split("|")[-1].strip())
    return names


def interpreter_startup() -> set[str]:
    """What `python -I -S -B` imports before running anything."""
    bare = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-X", "importtime", "-c", "pass"],
        capture_output=True,
        check=True,
    )
    return imported(bare)


def answering(agent: Callable[[Script], ScriptedAgent], code: int, answer: bytes) -> ScriptedAgent:
    """An agent that takes the request, waits for the go, and answers `code` and `answer`."""

    def serve(conn: socket.socket) -> None:
        scripted.read_request(conn)
        conn.sendall(b"A")
        assert conn.recv(1) == b"G"
        conn.sendall(code.to_bytes(4, "little") + len(answer).to_bytes(4, "little") + answer)

    scripted = agent(serve)
    return scripted


def test_a_served_request_costs_only_the_socket_module(
    shim: Path, tmp_path: Path, agent: Callable[[Script], ScriptedAgent]
) -> None:
    answer = b'{"cniVersion": "1.1.0"}\n'
    scripted = answering(agent, 7, answer)
    config = b'{"cniVersion": "1.1.0", "name": "x"}'
    run = run_shim(shim, tmp_path / "cni.sock", "STATUS", config, CNI_PATH="/opt/cni/bin")
    assert (run.returncode, run.stdout) == (7, answer)  # exit code and stdout passed through
    assert scripted.received[:6] == b"MCNI\x02\x00"  # version 2, no descriptor
    assert scripted.env == {"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}  # CNI_* only
    assert scripted.stdin == config
    assert imported(run) - interpreter_startup() == {"_socket"}  # not json, not minicni


def test_a_shim_compiled_with_its_socket_is_served_with_no_argument(
    tmp_path: Path, agent: Callable[[Script], ScriptedAgent]
) -> None:
    """The bundle's launcher is a "#!" line: the kernel passes the .pyc and the launcher's own path
    only, so the socket is in the .pyc."""
    answer = b'{"cniVersion": "1.1.0"}\n'
    scripted = answering(agent, 0, answer)
    baked = tmp_path / "shim-baked.pyc"
    baked.write_bytes(compiled_shim(str(baked), str(tmp_path / "cni.sock")))
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(baked), "/opt/cni/bin/minicni"],
        input=b'{"cniVersion": "1.1.0", "name": "x"}',
        env={"CNI_COMMAND": "STATUS", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, answer), run.stderr[-2000:]
    assert scripted.env == {"CNI_COMMAND": "STATUS"}


def test_without_an_agent_the_plugin_runs_in_process(shim: Path, tmp_path: Path) -> None:
    run = run_shim(shim, tmp_path / "absent.sock", "VERSION", b'{"cniVersion": "1.0.0"}')
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1.1.0" in json.loads(run.stdout)["supportedVersions"]
    assert "minicni.plugin.main" in imported(run)


@pytest.mark.parametrize(
    "verdict", [b"Rversion: protocol version 1; this agent speaks 2", b"", b"?"]
)
def test_a_refusal_or_no_verdict_runs_the_plugin_in_process_with_stdin_intact(
    shim: Path, tmp_path: Path, agent: Callable[[Script], ScriptedAgent], verdict: bytes
) -> None:
    def refuse(conn: socket.socket) -> None:
        scripted.read_request(conn)
        if verdict:
            conn.sendall(verdict)

    scripted = agent(refuse)
    config = {"cniVersion": "1.1.0", "name": "n", "type": "minicni", "subnet": "10.9.0.0/24"}
    config["dataDir"] = str(tmp_path / "data")
    config["logFile"] = str(tmp_path / "minicni.log")
    run = run_shim(shim, tmp_path / "cni.sock", "STATUS", json.dumps(config).encode())
    # STATUS in-process read the whole config from the stdin the shim handed back
    assert (run.returncode, run.stdout) == (0, b""), run.stderr[-2000:]
    assert (tmp_path / "data" / "n" / "lock").exists()
    assert "fast path unavailable" in (tmp_path / "minicni.log").read_text()


def test_a_request_lost_after_the_go_is_a_cni_error_and_never_run_again(
    shim: Path, tmp_path: Path, agent: Callable[[Script], ScriptedAgent]
) -> None:
    def lose(conn: socket.socket) -> None:
        scripted.read_request(conn)
        conn.sendall(b"A")
        assert conn.recv(1) == b"G"  # then the agent dies

    scripted = agent(lose)
    config = {"cniVersion": "0.4.0", "name": "n", "type": "minicni", "subnet": "10.9.0.0/24"}
    config["dataDir"] = str(tmp_path / "data")
    run = run_shim(shim, tmp_path / "cni.sock", "STATUS", json.dumps(config).encode())
    assert run.returncode == 1
    error = json.loads(run.stdout)
    assert (error["cniVersion"], error["code"]) == ("0.4.0", 11)
    assert not (tmp_path / "data").exists()  # not run in-process after the go
    assert "minicni.plugin.main" not in imported(run)


def test_the_installed_launcher_runs_the_compiled_shim(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "cni.sock")
    assert install_plugin(tmp_path / "bin", mode="launcher", runtime_dir=tmp_path / "opt",
                          cni_socket=socket_path)  # fmt: skip
    script = (tmp_path / "bin" / "minicni").read_text()
    (shim_file,) = (tmp_path / "opt").glob("shim.*.pyc")
    # The kernel starts this very interpreter on the script: no /bin/sh in between.
    assert script.startswith(f"#!{sys.executable} -ISB\n")
    assert f"sys.argv[1:] = [{socket_path!r}, 'site']" in script
    assert f"with open({str(shim_file)!r}, 'rb')" in script
    assert install_plugin(tmp_path / "bin", mode="launcher", runtime_dir=tmp_path / "opt",
                          cni_socket=socket_path) is False  # fmt: skip
    run = subprocess.run(
        [str(tmp_path / "bin" / "minicni")],
        input=b'{"cniVersion": "1.0.0"}',
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
    )
    assert run.returncode == 0 and b"supportedVersions" in run.stdout, run.stderr
    assert os.access(tmp_path / "bin" / "minicni", os.X_OK)


def test_the_shim_hands_back_as_much_stdin_as_the_plugin_reads() -> None:
    """The shim cannot import the plugin's limit: the number is restated, and checked here."""
    import importlib.util

    from minicni.agent.host import launcher
    from minicni.cni import skel

    spec = importlib.util.spec_from_file_location("shim_under_test", launcher.SHIM_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its main() runs only as __main__
    assert module.PLUGIN_STDIN_LIMIT == skel.MAX_CONFIG_BYTES + 1
    assert module.MAX_STDIN < skel.MAX_CONFIG_BYTES  # larger requests run in-process


def test_an_interpreter_no_shebang_can_name_gets_the_shell_launcher(tmp_path: Path) -> None:
    """A blank in the path, or a "#!" line longer than every kernel reads: /bin/sh runs it."""
    shim = tmp_path / "shim.pyc"
    for python in ("/opt/my python/bin/python3", "/" + "p" * 130 + "/python3"):
        script = launcher_script(python, shim, "/run/minicni/cni.sock").decode()
        assert script.startswith("#!/bin/sh\n"), python
        assert f"-I -S -B {shim} /run/minicni/cni.sock site" in script
        check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_the_python_launcher_quotes_whatever_the_paths_hold(tmp_path: Path) -> None:
    """The socket and shim paths reach the script as Python literals, never as code."""
    odd = tmp_path / 'it\'s a "dir" \\ here'
    odd.mkdir()
    shim = odd / "shim.pyc"
    shim.write_bytes(
        b"\0" * 16 + marshal.dumps(compile("import sys; print(sys.argv[1:])", "s", "exec"))
    )
    launcher = tmp_path / "minicni"
    launcher.write_bytes(
        shim_script(sys.executable, shim, str(odd / "cni.sock"), site=False, about="x")
    )
    launcher.chmod(0o755)
    run = subprocess.run([str(launcher)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == repr([str(odd / "cni.sock")])


def test_a_del_passes_its_namespace_file_enters_nothing_and_sends_no_go(
    shim: Path, tmp_path: Path, agent: Callable[[Script], ScriptedAgent]
) -> None:
    """A DEL configures nothing inside the pod: the shim opens CNI_NETNS and passes that file,
    with no setns (and no _ctypes import for it on Python 3.11); and, idempotent, it is its own
    go: the agent's b"A" comes with the answer, no round trip in between."""
    passed: list[os.stat_result] = []

    def serve(conn: socket.socket) -> None:
        data, ancillary, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4))
        scripted.received = data
        for _, _, payload in ancillary:
            fd = int.from_bytes(payload[:4], "little")
            passed.append(os.fstat(fd))
            os.close(fd)
        conn.sendall(b"A" + bytes(8))  # no go to wait for: taken, exit code 0, no output

    scripted = agent(serve)
    netns_file = "/proc/self/ns/net"  # the shim's own: what matters is that it is a namespace
    run = run_shim(shim, tmp_path / "cni.sock", "DEL", b"{}", CNI_NETNS=netns_file)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert scripted.received[5] == 2 | 8  # the namespace's file; the request is its own go
    mine = os.stat(netns_file)
    assert [(info.st_dev, info.st_ino) for info in passed] == [(mine.st_dev, mine.st_ino)]
    assert "_ctypes" not in imported(run)


def test_an_add_sends_its_request_first_and_the_pod_socket_with_the_go(
    shim: Path, tmp_path: Path, agent: Callable[[Script], ScriptedAgent]
) -> None:
    """v2: the request goes out with no descriptor (flags bit 2); the shim makes the pod's socket
    while the agent checks the request, and sends it with the go, or the errno of making it
    (entering a namespace needs root: a test run as another user sees EPERM)."""
    go: list[tuple[bytes, int]] = []

    def serve(conn: socket.socket) -> None:
        data, ancillary, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4))
        scripted.received = data
        assert ancillary == []
        conn.sendall(b"A")
        message, ancillary, _, _ = conn.recvmsg(3, socket.CMSG_SPACE(4))
        for _, _, payload in ancillary:
            fd = int.from_bytes(payload[:4], "little")
            go.append((message, socket.socket(fileno=fd).getsockopt(socket.SOL_SOCKET, 39)))
        if not ancillary:
            go.append((message, -1))
        conn.sendall(bytes(8))

    scripted = agent(serve)
    run = run_shim(shim, tmp_path / "cni.sock", "ADD", b"{}", CNI_NETNS="/proc/self/ns/net")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert scripted.received[:6] == b"MCNI\x02\x04"
    ((message, domain),) = go
    if os.geteuid() == 0:
        assert (message, domain) == (b"G\0\0", socket.AF_NETLINK)  # errno 0, the socket
    else:
        assert message[:1] == b"G" and message[1:] != bytes(2) and domain == -1


def _probe_setns_function(tmp_path: Path, path_first: str = "") -> dict[str, Any]:
    """What setns_function() did in a fresh interpreter (-I -S), `path_first` put first on its
    module path."""
    from minicni.agent.host import launcher

    probe = (
        "import importlib.util, json, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('shim', {str(launcher.SHIM_SOURCE)!r})\n"
        "shim = importlib.util.module_from_spec(spec); spec.loader.exec_module(shim)\n"
        f"if {path_first!r}: sys.path.insert(0, {path_first!r})\n"
        "before, seen, real = sys.getdlopenflags(), [], sys.setdlopenflags\n"
        "sys.path_importer_cache.clear(); searched = set()  # as at start-up: nothing read\n"
        "sys.setdlopenflags = lambda flags: (seen.append(flags), real(flags))[1]\n"
        "setns = shim.setns_function()\n"
        "restored = sys.getdlopenflags() == before\n"
        "loaded = sys.modules.get('_ctypes')\n"
        "print(json.dumps({'callable': callable(setns), 'restored': restored,\n"
        "    'first': seen[:1], 'lazy': os.RTLD_LAZY, 'native': hasattr(os, 'setns'),\n"
        "    'modules': [m for m in ('_ctypes', 'ctypes') if m in sys.modules],\n"
        "    'file': getattr(loaded, '__file__', None),\n"
        "    'origin': getattr(getattr(loaded, '__spec__', None), 'origin', None),\n"
        "    'searched': sorted(set(sys.path_importer_cache) - searched)}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def test_setns_on_python_3_11_loads_ctypes_alone_bound_lazily_without_a_search(
    tmp_path: Path,
) -> None:
    """Python < 3.12 has no os.setns: the shim loads _ctypes alone, with RTLD_LAZY (the few
    functions one setns needs are looked up, not all ~170 it calls), straight from lib-dynload
    (no finder scans the module path), and puts Python's flags back for whatever the process
    imports next (the plugin, in a fallback)."""
    seen = _probe_setns_function(tmp_path)
    assert seen["callable"] and seen["restored"]
    if seen["native"]:
        return
    assert (seen["first"], seen["modules"]) == ([seen["lazy"]], ["_ctypes"])
    assert "/lib-dynload/_ctypes." in seen["file"] and seen["origin"] == seen["file"]
    assert seen["searched"] == []  # not one directory of the module path read


def test_ctypes_elsewhere_than_the_first_lib_dynload_is_found_by_the_search(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "lib-dynload"
    empty.mkdir()
    seen = _probe_setns_function(tmp_path, str(empty))
    assert seen["callable"] and seen["restored"]
    if not seen["native"]:
        assert seen["modules"] == ["_ctypes"] and str(empty) not in seen["file"]
        assert str(empty) in seen["searched"]  # the search ran, and went past it
