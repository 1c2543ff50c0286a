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


def test_a_dual_stack_pods_work_brings_no_import_back(tmp_path: Path) -> None:
    """What a dual-stack ADD runs besides the kernel calls -- its config parsed, an address of
    each family reserved and released, the IPv6 requests built (address without DAD, default
    route), the result of each family -- loads nothing more than an IPv4 one."""
    config = {
        "cniVersion": "1.0.0",
        "name": "ds",
        "type": "minicni",
        "ipam": {"ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]},
        "dataDir": str(tmp_path),
    }
    code = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "from minicni.plugin import main, commands, context\n"
        "from minicni.plugin.config import parse_netconf\n"
        "from minicni.ipam.store import AddressStore\n"
        "from minicni.net import addresses, routes\n"
        "from minicni.cni.version import convert_result\n"
        f"conf = parse_netconf({config!r})\n"
        "store = AddressStore(conf.store_dir)\n"
        "with store.locked():\n"
        "    got = [store.reserve(r, 'c1', 'eth0', '/x') for r in conf.ranges]\n"
        "    assert len(store.find_all('c1', 'eth0')) == 2\n"
        "    assert len(store.release('c1', 'eth0')) == 2\n"
        "addresses.address_request(2, str(got[1].address), 64)\n"
        "routes.default_route_request(str(conf.ranges[1].gateway), 2, 4)\n"
        "result = {'ips': [{'address': f'{r.address}/64', 'interface': 0} for r in got]}\n"
        "assert [ip['version'] for ip in convert_result(result, '0.4.0')['ips']] == ['4', '6']\n"
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
