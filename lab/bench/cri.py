"""Pod start through containerd's CRI: minicni (as the agent installs it) beside bridge+host-local.

    .venv/bin/python -m lab.bench.cri [--pods 20]      (as root; `make bench-cri`)

One lab node, built by the lab's cluster builder with the CRI runtime and no agent started, hosts
two containerds: the lab's own, pointed at the CNI dirs that `minicni-agent --once` writes in
bundle mode, and a second one at a bridge + host-local conflist using Debian's reference plugins.
Pods are created alternately on each, as kubelet creates them (RunPodSandbox, then
PodSandboxStatus), so both see the same machine load; then deleted (StopPodSandbox +
RemovePodSandbox). Prints p50/p90/min/max per runtime, and the node's start-up: the lab node up
with its containerd and pause image, the agent's first pass, NetworkReady.

Figures are end to end through containerd (runc, the shim, the pause process, loopback, the
plugin), so they are what a kubelet waits for. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid

from lab.cluster.build import NetnsLab, reference_conflist
from lab.cluster.state import STATE_ROOT
from lab.runtimes.cni_plugins import REFERENCE_BIN_DIR
from lab.runtimes.cri.client import CriClient, PodSandboxSpec
from lab.runtimes.cri.containerd import ContainerdNode, prerequisites
from lab.topology import Topology, new_lab_id, plan
from minicni.net import netns

REFERENCE_CIDR = "10.244.201.0/24"  # beside the node's pod CIDR, on a bridge of its own


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


def bench(pods: int) -> None:
    missing = prerequisites()
    if missing:
        sys.exit(f"missing: {'; '.join(missing)}")
    topology = Topology(nodes=1, pods_per_node=0, runtime="cri")
    lab = NetnsLab(plan(topology, new_lab_id()), STATE_ROOT, start_agents=False)
    node = lab.lab.nodes[0]
    reference: ContainerdNode | None = None
    clients: dict[str, CriClient] = {}
    started = time.perf_counter()
    lab.up()  # a failed up removes what it built
    try:
        node_up = time.perf_counter() - started
        agent_started = time.perf_counter()
        once = lab.run_agent_once(node)
        agent_seconds = time.perf_counter() - agent_started
        if once.returncode != 0:
            raise RuntimeError(f"minicni-agent --once failed:\n{once.stdout}{once.stderr}")
        minicni = lab.cri.nodes[node.name]
        clients["minicni"] = minicni.client()
        _wait_network_ready(clients["minicni"])
        node_ready = time.perf_counter() - started

        ref_dir = lab.node_dir(node, "ref.d")
        os.makedirs(ref_dir)
        ref_node = dataclasses.replace(node, pod_cidr=REFERENCE_CIDR)
        conflist = reference_conflist(ref_node, lab.node_dir(node, "ref-ipam"), topology.mtu)
        with open(os.path.join(ref_dir, "10-bench-bridge.conflist"), "w") as stream:
            json.dump(conflist, stream)
        reference = ContainerdNode(
            "reference", netns.path_of(node.netns), lab.node_dir(node, "cd-ref"), ref_dir,
            REFERENCE_BIN_DIR, f"/{lab.lab.lab_id}-ref-kubepods",
        )  # fmt: skip
        reference.start(os.path.join(lab.work_dir, "pause.tar"))
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
                    lab.node_dir(node, "logs", f"bench_{index}_{uid}"),
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

        print(f"node start: lab node, containerd, pause image {node_up * 1000:.0f} ms, ", end="")
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
        for client in clients.values():
            client.close()
        problems = reference.stop() if reference else []
        problems += lab.down()  # the lab's containerd too, and whatever it left on the host
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20, help="pods per runtime (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: creates a network namespace and runs containerd")
    bench(args.pods)


if __name__ == "__main__":
    main()
