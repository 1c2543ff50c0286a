"""Pods created as kubelet creates them: through containerd's CRI, on a node set up by the agent.

Each test gets a one-node lab (built by lab.cluster with the CRI runtime, its agent not started)
whose node runs its own containerd (Debian's 1.6, whose libcni is 1.1) pointed at the CNI conf and
bin dirs that `minicni-agent --once` writes into in bundle mode, as the DaemonSet does. What
kubelet would see is checked through the CRI itself: the runtime's NetworkReady condition,
RunPodSandbox, the sandbox's IP in PodSandboxStatus; and what the plugin did, in the kernel (the
pod's interface, pings) and in the address store (reservations made and released: containerd
deletes the pod's netns, and so its veth, even when DEL does nothing, so only the store proves the
release).

Everything is removed afterwards, also after a failure, and the fixture checks it: no containerd
or shim process, no mount, no cgroup, no libcni cache entry or shim socket of ours, no namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from lab.runtimes.cri import cleanup
from lab.runtimes.cri.client import CriClient, CriError, PodSandboxSpec, SandboxStatus
from lab.runtimes.cri.containerd import ContainerdNode, prerequisites
from netns_tests.lab_support import RuntimeNode, runtime_node

pytestmark = [pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

# A conflist as the agent wrote it before issue 8: the runtime asks the plugin for 1.1.0 and then
# refuses the 1.1.0 result, because containerd 1.6/1.7 vendor libcni 1.1.
OLD_CNI_VERSION = "1.1.0"
LIBCNI_1_1_REFUSAL = f'unsupported CNI result version "{OLD_CNI_VERSION}"'


def in_netns(path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=30
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class CriNode:
    """A node namespace with its containerd running; the agent has not run yet."""

    node: RuntimeNode
    containerd: ContainerdNode
    client: CriClient
    sandboxes: dict[str, SandboxStatus] = field(default_factory=dict)

    def network_ready(self) -> bool:
        return self.client.network_ready().status

    def run_pod(self, name: str) -> SandboxStatus:
        """RunPodSandbox then PodSandboxStatus, as kubelet calls them for a new pod."""
        uid = str(uuid.uuid4())
        spec = PodSandboxSpec(
            name=name,
            namespace="cri-test",
            uid=uid,
            cgroup_parent=self.containerd.pod_cgroup(uid),
            log_directory=str(self.node.home / "pods" / f"cri-test_{name}_{uid}"),
        )
        sandbox_id = self.client.run_pod_sandbox(spec)
        self.containerd.sandboxes.append(sandbox_id)
        status = self.client.pod_sandbox_status(sandbox_id, verbose=True)
        self.sandboxes[name] = status
        return status

    def remove_pod(self, name: str) -> None:
        """StopPodSandbox then RemovePodSandbox, as kubelet deletes a pod."""
        sandbox_id = self.sandboxes.pop(name).id
        self.client.stop_pod_sandbox(sandbox_id)
        self.client.remove_pod_sandbox(sandbox_id)

    def explain(self) -> str:
        return (
            f"plugin log:\n{self.node.plugin_log_tail()}\n"
            f"containerd log:\n{self.containerd.log_tail()}"
        )


def leftovers(containerd: ContainerdNode) -> list[str]:
    """What a stopped node must not leave behind on the host."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as stream:
                    argv = stream.read().decode(errors="replace")
            except OSError:
                continue
            if containerd.home in argv or containerd.address in argv:
                found.append(f"process {pid}: {argv.replace(chr(0), ' ')[:200]}")
    for directory in (containerd.home, containerd.socket_dir):
        found += [f"mount {point}" for point in cleanup.mounts_under(directory)]
        if os.path.lexists(directory):
            found.append(f"directory {directory}")
    found += [f"cgroup {path}" for path in cleanup.cgroup_dirs(containerd.cgroup_root)]
    for sandbox_id in containerd.sandboxes:
        if os.path.exists(cleanup.shim_socket(containerd.address, sandbox_id)):
            found.append(f"shim socket of {sandbox_id}")
        if os.path.isdir(cleanup.CNI_RESULTS_DIR):
            found += [
                f"libcni cache {name}"
                for name in os.listdir(cleanup.CNI_RESULTS_DIR)
                if sandbox_id in name
            ]
    return found


@pytest.fixture
def cri_node() -> Iterator[CriNode]:
    missing = prerequisites()
    if missing:
        pytest.skip(f"missing for a CRI node: {'; '.join(missing)}")
    with runtime_node("cri") as node:  # the lab removes the node, its containerd first
        containerd = node.lab.cri.nodes[node.name]
        with containerd.client() as client:
            yield CriNode(node, containerd, client)
    left = leftovers(containerd)
    assert not os.path.exists(node.path) and not node.home.exists()
    assert left == [], f"left behind: {left}"


def test_network_ready_is_false_until_the_agent_wrote_the_conflist(cri_node: CriNode) -> None:
    condition = cri_node.client.network_ready()
    assert condition.status is False
    assert condition.reason == "NetworkPluginNotReady"
    assert "cni plugin not initialized" in condition.message

    cri_node.node.run_agent()

    # containerd notices the conflist renamed into place within milliseconds
    wait_for(cri_node.network_ready, "NetworkReady=true after the agent ran")
    assert cri_node.client.conditions()["RuntimeReady"].status is True


def test_pods_get_addresses_of_the_pod_cidr_reach_each_other_and_release_them(
    cri_node: CriNode,
) -> None:
    node = cri_node.node
    node.run_agent()
    wait_for(cri_node.network_ready, "NetworkReady=true")

    pods = [cri_node.run_pod(name) for name in ("web", "db", "cache")]

    addresses = [pod.ip for pod in pods]
    assert all(pod.ready for pod in pods), pods
    assert len(set(addresses)) == len(pods), addresses
    for pod in pods:
        assert pod.ip and pod.ip in [str(a) for a in node.subnet.hosts()], (pod, node.pod_cidr)
        assert pod.ip != node.gateway
    # the store holds one reservation per pod, owned by the sandbox's id
    assert node.reservations() == {pod.ip: pod.id for pod in pods}, cri_node.explain()

    # what the pod itself sees: its address on eth0, the default route via the bridge
    for pod in pods:
        address = in_netns(pod.netns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
        assert f"inet {pod.ip}/{node.subnet.prefixlen}" in address.stdout, address
        routes = in_netns(pod.netns, "ip", "-4", "route", "show", "default")
        assert f"default via {node.gateway} dev eth0" in routes.stdout, routes
        loopback = in_netns(pod.netns, "ip", "-o", "link", "show", "dev", "lo")
        assert "<LOOPBACK,UP," in loopback.stdout, loopback  # containerd ran `loopback`
        for target in [node.gateway, *(p.ip for p in pods if p is not pod)]:
            ping = in_netns(pod.netns, "ping", "-c", "1", "-W", "2", "-q", target)
            assert ping.returncode == 0, f"{pod.ip} -> {target}: {ping.stdout}{ping.stderr}"

    # kubelet deletes a pod: its reservation and the runtime's cached result go
    cri_node.remove_pod("web")
    assert node.reservations() == {pods[1].ip: pods[1].id, pods[2].ip: pods[2].id}
    assert not any(p.name.startswith(f"owner-{pods[0].id}") for p in node.store.iterdir())
    assert not os.path.exists(pods[0].netns)
    assert not [n for n in os.listdir(cleanup.CNI_RESULTS_DIR) if pods[0].id in n]
    with pytest.raises(CriError) as gone:
        cri_node.client.pod_sandbox_status(pods[0].id)
    assert gone.value.code == "NOT_FOUND"

    cri_node.remove_pod("db")
    cri_node.remove_pod("cache")
    assert node.reservations() == {}, cri_node.explain()
    assert cri_node.client.list_pod_sandboxes() == []


def test_a_conflist_the_runtime_cannot_use_fails_the_pod_loudly(cri_node: CriNode) -> None:
    """The old conflist (`cniVersion` 1.1.0, no `cniVersions`) under containerd 1.6: the node
    looks Ready, and every RunPodSandbox fails naming libcni's refusal; nothing stays reserved."""
    node = cri_node.node
    node.run_agent()
    wait_for(cri_node.network_ready, "NetworkReady=true")
    conflist_path = node.conflist_path()
    old = node.conflist()
    old["cniVersion"] = OLD_CNI_VERSION
    del old["cniVersions"]
    # Out of the dir, then back in by rename, so each change is visible through Status.
    conflist_path.unlink()
    wait_for(lambda: not cri_node.network_ready(), "NetworkReady=false without a conflist")
    staged = node.conf_dir / ".old-conflist.tmp"
    staged.write_text(json.dumps(old))
    staged.rename(conflist_path)

    # The trap the issue describes: containerd 1.6 calls the node ready with this conflist...
    wait_for(cri_node.network_ready, "NetworkReady=true with the old conflist")

    # ...and every sandbox fails, loudly, within the call's deadline
    started = time.monotonic()
    with pytest.raises(CriError) as failed:
        cri_node.run_pod("doomed")
    elapsed = time.monotonic() - started
    assert failed.value.method == "RunPodSandbox"
    assert LIBCNI_1_1_REFUSAL in failed.value.details, failed.value.details
    assert elapsed < 60, f"RunPodSandbox took {elapsed:.0f} s to fail"
    # containerd undid the sandbox (CNI DEL ran: the plugin released the address)
    assert node.reservations() == {}, cri_node.explain()
    assert cri_node.client.list_pod_sandboxes() == []
