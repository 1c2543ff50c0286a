"""What the plugin imports per command: every pod start pays for each import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LEAN = (
    "pyroute2",  # its message classes: the plugin's requests are built with struct (net.codes)
    "typing",
    "dataclasses",  # and inspect, ast, dis with it
    "logging",  # and threading, traceback, string with it
    "json",  # and re, enum with it: minicni.fastjson uses _json directly
    "re",
    "enum",
    "hashlib",  # OpenSSL: minicni.digest uses _sha256
    "ctypes",  # _ctypes for setns before Python 3.12
    "socket",  # _socket
    "asyncio",
    "tempfile",
    "runpy",
)


def test_the_plugin_imports_only_what_a_pod_start_can_afford() -> None:
    """Every pod start through the in-process plugin (the fallback) pays for each import: what
    an ADD loads (run as the bundle runs it: -I -S) must not bring any of these back."""
    code = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "from minicni.plugin import main, commands, context\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        f"print(sorted(loaded & {set(LEAN)!r}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_status_loads_no_netlink_code(tmp_path: Path) -> None:
    """containerd calls STATUS every few seconds: it must not pay for the netlink modules."""
    config = {"cniVersion": "1.1.0", "name": "st", "type": "minicni", "subnet": "10.77.0.0/24"}
    config["dataDir"] = str(tmp_path)
    code = (
        "import json, sys\n"
        "from minicni.plugin import main\n"
        "from minicni.cni import skel\n"
        "stdin = sys.argv[1].encode()\n"
        "rc, out = skel.dispatch({'CNI_COMMAND': 'STATUS'}, stdin, main.load_plugin)\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith('pyroute2'))]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True, check=True
    )
    assert json.loads(run.stdout) == [0, []], run.stdout + run.stderr
