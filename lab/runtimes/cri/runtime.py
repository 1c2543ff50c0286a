"""The pods of a network-namespace lab as CRI sandboxes (`minicni-lab --runtime cri`).

Each node namespace runs its own containerd, pointed at the CNI conf and bin dirs the node's
agent writes into (or, with the reference plugins, at the lab's bridge + host-local conflist and
Debian's plugins). Pods are created as kubelet creates them: the lab waits for the node's
NetworkReady, then RunPodSandbox and PodSandboxStatus; the sandbox's IP and network namespace are
what the matrix probes. On `down`, every sandbox is stopped and removed through the CRI (so the
plugin's DEL runs as on a real node), then the daemon, and whatever it left on the host.

Everything needed to remove a node is recorded in the lab's state file before it is created, so a
`down` from another process (or after a killed run) finds it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from lab.runtimes.cri import cleanup, pause
from lab.runtimes.cri.client import CriError, PodSandboxSpec
from lab.runtimes.cri.containerd import ContainerdNode, prerequisites
from lab.topology import NodePlan, PodPlan

POD_NAMESPACE = "lab"  # the Kubernetes namespace of the lab's pods
NETWORK_READY_TIMEOUT = 60.0


class CriLabError(RuntimeError):
    pass


class CriRecord(Protocol):
    """Where a lab records its CRI nodes, so that a later `down` finds them: the lab's state
    (lab.cluster.state.LabState, a layer above this one)."""

    work_dir: str
    cri_nodes: dict[str, dict[str, Any]]  # node name -> ContainerdNode.to_mapping()
    cri_host_dirs: list[str]  # the runtime's host dirs that did not exist before the lab


class CriLabRuntime:
    def __init__(self, state: CriRecord, save_state: Callable[[], None]) -> None:
        self.state = state
        self.save_state = save_state
        self._lock = threading.Lock()
        self.nodes = {
            name: ContainerdNode.from_mapping(mapping) for name, mapping in state.cri_nodes.items()
        }

    def _record(self, node: ContainerdNode) -> None:
        with self._lock:
            self.state.cri_nodes[node.name] = node.to_mapping()
        self.save_state()

    # ------------------------------------------------------------ up

    def start_nodes(
        self,
        nodes: list[tuple[NodePlan, str, str]],
        lab_id: str,
        views: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Start a containerd in each node (plan, CNI conf dir, CNI bin dir), all at once; a
        node's `views` entry is the argv prefix under which its containerd sees that node's own
        files (ContainerdNode.view)."""
        missing = prerequisites()
        if missing:
            raise CriLabError(f"the CRI runtime needs: {'; '.join(missing)}")
        if not self.state.cri_nodes:
            self.state.cri_host_dirs = cleanup.absent()
        image = pause.write_image_tarball(os.path.join(self.state.work_dir, "pause.tar"))
        for plan, conf_dir, bin_dir in nodes:
            node = ContainerdNode(
                name=plan.name,
                netns=os.path.join("/run/netns", plan.netns),
                home=os.path.join(self.state.work_dir, plan.name, "containerd"),
                cni_conf_dir=conf_dir,
                cni_bin_dir=bin_dir,
                cgroup_root=f"/{lab_id}-{plan.name}-kubepods",
                view=list((views or {}).get(plan.name, ())),
            )
            node.prepare()  # its dirs and socket dir exist: recorded before the daemon starts
            self.nodes[node.name] = node
            self._record(node)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for node, _ in zip(
                self.nodes.values(),
                pool.map(lambda n: n.start(image), self.nodes.values()),
                strict=True,
            ):
                self._record(node)

    def wait_network_ready(self, timeout: float = NETWORK_READY_TIMEOUT) -> None:
        """As kubelet does before it starts pods on a node: NetworkReady=true on every node."""
        for node in self.nodes.values():
            deadline = time.monotonic() + timeout
            with node.client() as client:
                while not (condition := client.network_ready()).status:
                    if time.monotonic() > deadline:
                        raise CriLabError(
                            f"{node.name}: NetworkReady still false after {timeout:.0f} s: "
                            f"{condition.reason}: {condition.message}"
                        )
                    time.sleep(0.02)

    def run_pod(self, pod: PodPlan) -> tuple[tuple[str, ...], str, str]:
        """RunPodSandbox + PodSandboxStatus for `pod`: (its IPs, one per family, as the CRI
        lists them; netns path; sandbox id)."""
        node = self.nodes[pod.node]
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"minicni-lab/{pod.container_id}"))
        name = pod.name.replace("/", "-")
        log_directory = os.path.join(node.home, "pods", f"{POD_NAMESPACE}_{name}_{uid}")
        os.makedirs(log_directory, exist_ok=True)  # kubelet makes it before asking
        spec = PodSandboxSpec(name, POD_NAMESPACE, uid, node.pod_cgroup(uid), log_directory)
        with node.client() as client:
            try:
                sandbox_id = client.run_pod_sandbox(spec)
            except CriError as err:
                raise CriLabError(f"pod {pod.name} on {node.name}: {err}") from None
            with self._lock:
                node.sandboxes.append(sandbox_id)
            self._record(node)
            status = client.pod_sandbox_status(sandbox_id, verbose=True)
        if not status.ready or not status.ip:
            raise CriLabError(f"pod {pod.name}: sandbox {sandbox_id[:12]} is not ready: {status}")
        return status.ips, node.reachable(status.netns), sandbox_id

    # ------------------------------------------------------------ down

    def stop(self) -> list[str]:
        """Stop and remove every sandbox through the CRI, then each daemon and what it left."""
        return stop_cri_nodes(self.state, self.save_state, list(self.nodes.values()))


def stop_cri_nodes(
    state: CriRecord,
    save_state: Callable[[], None] = lambda: None,
    nodes: list[ContainerdNode] | None = None,
) -> list[str]:
    """Remove the lab's containerd nodes (also from a state file alone), then the runtime's host
    dirs the lab created, if nothing else uses them now."""
    if nodes is None:
        nodes = [ContainerdNode.from_mapping(m) for m in state.cri_nodes.values()]
    problems: list[str] = []
    if nodes:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for found in pool.map(ContainerdNode.stop, nodes):
                problems += found
    cleanup.remove_if_empty(state.cri_host_dirs)
    state.cri_nodes.clear()
    state.cri_host_dirs = []
    save_state()
    return problems
