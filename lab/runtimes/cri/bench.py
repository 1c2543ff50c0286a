"""Pod start through containerd's CRI: minicni (as the agent installs it) beside bridge+host-local.

    sudo .venv/bin/python -m lab.runtimes.cri.bench [--pods 20]

One node namespace (an underlay address, `lo` up) hosts two containerds: one pointed at the CNI
dirs that `minicni-agent --once` wrote in bundle mode, one at a bridge + host-local conflist using
Debian's reference plugins. Pods are created alternately on each, as kubelet creates them
(RunPodSandbox, then PodSandboxStatus), so both see the same machine load; then deleted
(StopPodSandbox + RemovePodSandbox). Prints p50/p90/min/max per runtime, and the node's start-up:
containerd up with its pause image, the agent's first pass, NetworkReady.

Figures are end to end through containerd (runc, the shim, the pause process, loopback, the
plugin), so they are what a kubelet waits for. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lab.runtimes.cni_plugins import REFERENCE_BIN_DIR, install_loopback
from lab.runtimes.cri import cleanup, pause
from lab.runtimes.cri.client import CriClient, PodSandboxSpec
from lab.runtimes.cri.containerd import ContainerdNode, prerequisites
from minicni.net import netns

NODE_IP, POD_CIDR, REFERENCE_CIDR = "192.168.77.11", "10.244.1.0/24", "10.244.201.0/24"


def _run(*argv: str, timeout: float = 120) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _figures(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (
        f"{name:<34} p50 {statistics.median(ms):6.0f} ms  p90 {p90:6.0f} ms  "
        f"min {ms[0]:6.0f} ms  max {ms[-1]:6.0f} ms  (n={len(ms)})"
    )


def _wait_network_ready(client: CriClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.network_ready().status:
        if time.monotonic() > deadline:
            raise RuntimeError("NetworkReady stayed false")
        time.sleep(0.01)


def _reference_conflist(data_dir: str) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "bench-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": REFERENCE_CIDR}]],
                    "dataDir": data_dir,
                },
            }
        ],
    }


def bench(pods: int) -> None:
    missing = prerequisites()
    if missing:
        sys.exit(f"missing: {'; '.join(missing)}")
    home = Path(tempfile.mkdtemp(prefix="minicni-bench-cri-"))
    ns = f"mlbc{secrets.token_hex(3)}"
    made_by_us = cleanup.absent()
    nodes: list[ContainerdNode] = []
    try:
        path = netns.create(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        _run("ip", "-n", ns, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "eth0p", "up")
        for part in ("net.d", "bin", "ref.d"):
            (home / part).mkdir()
        install_loopback(str(home / "bin"))
        (home / "nodes.json").write_text(
            json.dumps({"nodes": [{"name": "n1", "internalIP": NODE_IP, "podCIDR": POD_CIDR}]})
        )
        (home / "ref.d" / "10-bench-bridge.conflist").write_text(
            json.dumps(_reference_conflist(str(home / "ref-ipam")))
        )
        image = pause.write_image_tarball(str(home / "pause.tar"))

        minicni = ContainerdNode(
            "minicni", path, str(home / "cd-minicni"), str(home / "net.d"), str(home / "bin"),
            f"/{ns}-minicni-kubepods",
        )  # fmt: skip
        reference = ContainerdNode(
            "reference", path, str(home / "cd-ref"), str(home / "ref.d"), REFERENCE_BIN_DIR,
            f"/{ns}-ref-kubepods",
        )  # fmt: skip
        nodes += [minicni, reference]
        started = time.perf_counter()
        minicni.start(image)
        containerd_up = time.perf_counter() - started
        agent = str(Path(sys.executable).with_name("minicni-agent"))
        agent_seconds = _timed(
            lambda: _run(
                "nsenter", f"--net={path}", agent, "--once", "--node-name", "n1",
                "--nodes-file", str(home / "nodes.json"),
                "--cni-conf-dir", str(home / "net.d"), "--cni-bin-dir", str(home / "bin"),
                "--plugin-install", "bundle", "--plugin-dir", str(home / "opt"),
                "--ipam-data-dir", str(home / "ipam"), "--state-dir", str(home / "state"),
                "--plugin-log-file", str(home / "minicni.log"), "--health-addr", "",
            )
        )  # fmt: skip
        clients = {"minicni": minicni.client()}
        _wait_network_ready(clients["minicni"])
        node_ready = time.perf_counter() - started
        reference.start(image)
        clients["reference"] = reference.client()
        _wait_network_ready(clients["reference"])

        run: dict[str, list[float]] = {"minicni": [], "reference": []}
        delete: dict[str, list[float]] = {"minicni": [], "reference": []}
        sandboxes: dict[str, list[str]] = {"minicni": [], "reference": []}
        by_name = {"minicni": minicni, "reference": reference}
        for index in range(pods):
            for name, client in clients.items():
                uid = str(uuid.uuid4())
                spec = PodSandboxSpec(
                    f"bench-{index}", "bench", uid, by_name[name].pod_cgroup(uid),
                    str(home / "logs" / f"bench_{index}_{uid}"),
                )  # fmt: skip
                begin = time.perf_counter()
                sandbox_id = client.run_pod_sandbox(spec)
                status = client.pod_sandbox_status(sandbox_id)
                run[name].append(time.perf_counter() - begin)
                by_name[name].sandboxes.append(sandbox_id)
                sandboxes[name].append(sandbox_id)
                if not status.ip:
                    raise RuntimeError(f"{name}: sandbox {sandbox_id[:12]} has no IP")
        for name, client in clients.items():
            for sandbox_id in sandboxes[name]:
                begin = time.perf_counter()
                client.stop_pod_sandbox(sandbox_id)
                client.remove_pod_sandbox(sandbox_id)
                delete[name].append(time.perf_counter() - begin)
        for client in clients.values():
            client.close()

        print(f"node start: containerd + pause image {containerd_up * 1000:.0f} ms, ", end="")
        print(f"minicni-agent --once (bundle) {agent_seconds * 1000:.0f} ms, ", end="")
        print(f"NetworkReady after {node_ready * 1000:.0f} ms")
        for name in ("minicni", "reference"):
            label = "minicni (bundle)" if name == "minicni" else "bridge + host-local"
            print(_figures(f"RunPodSandbox+Status {label}", run[name]))
        for name in ("minicni", "reference"):
            label = "minicni (bundle)" if name == "minicni" else "bridge + host-local"
            print(_figures(f"Stop+RemovePodSandbox {label}", delete[name]))
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    finally:
        for node in nodes:
            for problem in node.stop():
                print(f"warning: {problem}", file=sys.stderr)
        netns.remove(ns)
        cleanup.remove_tree(str(home))
        cleanup.remove_if_empty(made_by_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20, help="pods per runtime (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: creates a network namespace and runs containerd")
    bench(args.pods)


if __name__ == "__main__":
    main()
