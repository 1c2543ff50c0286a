"""A real CNI consumer: podman (CNI backend) starts a container on a minicni network.

podman itself runs inside the fake host namespace, so the bridge and host veths land there; its
storage, config and network dirs are all in the test's tmp dir. The image is a local busybox
imported from a tarball (no registry needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netns_tests.conftest import FakeNode, links_in, plugin_executable

pytestmark = [pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
IMAGE = "localhost/minicni-pt-busybox:latest"


def _missing() -> str | None:
    for tool in ("podman", "runc", "conmon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc)"
    if not os.path.exists(BUSYBOX):
        return "busybox is not installed (apt-get install busybox-static)"
    return None


@dataclass
class Podman:
    node: FakeNode
    base: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [
            "nsenter",
            f"--net={self.node.host}",
            "podman",
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "runroot"),
            "--tmpdir",
            str(self.base / "tmp"),
            *args,
        ]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture
def podman(node: FakeNode) -> Iterator[Podman]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    base = Path(tempfile.mkdtemp(prefix="ptpod-", dir="/tmp"))  # podman: runroot < 50 chars
    runner = Podman(node, base, {})
    try:
        netd = base / "net.d"
        netd.mkdir(parents=True)
        exe = Path(plugin_executable())
        # podman 4.3 vendors libcni 1.1, which knows config versions up to 1.0.0.
        plugin = {k: v for k, v in node.config().items() if k not in ("cniVersion", "name")}
        plugin["type"] = exe.name
        conflist = {"cniVersion": "1.0.0", "name": node.network, "plugins": [plugin]}
        (netd / f"10-{node.network}.conflist").write_text(json.dumps(conflist))
        conf = base / "containers.conf"
        conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{exe.parent}"]\n'
            f'network_config_dir = "{netd}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            'runtime = "runc"\n'
        )
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"), "CONTAINERS_CONF": str(conf)}
        runner.env = env
        rootfs = base / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(base / "rootfs.tar"), "."], check=True)
        imported = runner("import", "-q", str(base / "rootfs.tar"), IMAGE)
        assert imported.returncode == 0, imported.stderr
        yield runner
    finally:
        runner("rm", "--all", "--force", "--time", "0")
        # A container killed half-way may leave its namespace: the store knows its path.
        for reservation in node.reservations().values():
            netns_path = reservation.get("netns", "")
            if netns_path.startswith("/run/netns/cni-"):
                subprocess.run(["ip", "netns", "delete", Path(netns_path).name], check=False)
        runner("system", "reset", "--force")
        shutil.rmtree(base, ignore_errors=True)


def test_podman_runs_a_container_on_a_minicni_network(node: FakeNode, podman: Podman) -> None:
    script = "/bin/busybox ip -4 -o addr show dev eth0; /bin/busybox ping -c 1 -W 2 10.99.0.1"
    ran = podman(
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        node.network,
        IMAGE,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    )
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{node.log_file.read_text()}"
    assert "inet 10.99.0." in ran.stdout
    assert "1 packets received" in ran.stdout
    log = node.log_file.read_text()
    assert "ADD" in log and "DEL" in log
    # --rm ran DEL: nothing is left on the node.
    assert node.reservations() == {}
    assert not {name for name in links_in(node.host) if name.startswith("veth")}
