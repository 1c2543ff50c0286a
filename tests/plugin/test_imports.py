"""What the plugin imports per command: every pod start pays for each import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_plugin_loads_without_iproute_or_asyncio() -> None:
    """What the plugin gains from this client: none of IPRoute's import chain on every ADD."""
    code = (
        "import sys\n"
        "from minicni.plugin import main\n"
        "main._plugin()\n"
        "heavy = {'asyncio', 'ssl', 'pyroute2.iproute', 'pyroute2.iproute.linux'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
