"""`minicni-lab --runtime cri`: pods are sandboxes created through each node's containerd CRI, on
what the node's agent installed in bundle mode; the matrix probes the sandboxes' namespaces; down
removes every daemon, shim, mount and cgroup. And lab nodes ship `loopback`, as kind's do."""

from __future__ import annotations

import filecmp
import ipaddress
import os
from pathlib import Path

import pytest

from lab.matrix.executors import POD
from lab.runtimes.cri import cleanup
from lab.runtimes.cri.containerd import ContainerdNode, prerequisites
from lab.topology import Topology
from netns_tests.lab_support import assert_matrix, run_matrix, running_lab

pytestmark = [pytest.mark.runtime, pytest.mark.slow]

LOOPBACK = "/usr/lib/cni/loopback"


def all_ok(_proto: str, _src: object, _dst: object) -> str:
    return "."


def processes_naming(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                argv = stream.read().decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            found.append(argv.replace("\0", " "))
    return found


def test_cri_pods_are_sandboxes_on_the_agents_bundle_and_down_removes_everything(
    tmp_path: Path,
) -> None:
    missing = prerequisites()
    if missing:
        pytest.skip(f"missing for a CRI node: {'; '.join(missing)}")
    topology = Topology(nodes=2, pods_per_node=2, runtime="cri")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        nodes = {name: ContainerdNode.from_mapping(m) for name, m in lab.state.cri_nodes.items()}
        assert sorted(nodes) == ["n1", "n2"]
        for plan in lab.lab.nodes:
            node = nodes[plan.name]
            # containerd runs what the agent installed: its conflist, the bundle's launcher
            assert node.cni_conf_dir == lab.node_dir(plan, "net.d")
            assert node.cni_bin_dir == lab.node_dir(plan, "bin")
            assert os.listdir(node.cni_conf_dir) == ["10-minicni.conflist"]
            launcher = Path(node.cni_bin_dir, "minicni").read_text()
            assert lab.node_dir(plan, "opt") in launcher  # bundle mode: its own Python runtime
            with node.client() as client:
                assert client.network_ready().status is True
                sandboxes = set(client.list_pod_sandboxes())
            pods = [e for e in inventory.endpoints if e.kind == POD and e.node == plan.name]
            assert {lab.state.pods[p.name]["sandbox"] for p in pods} == sandboxes
            for pod in pods:
                # the probes run in the sandbox's own network namespace, under containerd's state
                assert pod.handle.startswith(os.path.join(node.home, "state") + "/"), pod
                assert os.path.exists(pod.handle)
                assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(plan.pod_cidr), pod
        assert_matrix(run_matrix(inventory, protocols=("icmp", "tcp")), all_ok)
    # down: no daemon, shim or sandbox process, no mount, no cgroup, no socket dir is left
    for node in nodes.values():
        assert processes_naming(node.address) == []
        assert processes_naming(node.home) == []
        assert cleanup.cgroup_dirs(node.cgroup_root) == []
        assert not os.path.exists(node.socket_dir)
    assert cleanup.mounts_under(str(tmp_path)) == []
    assert not (tmp_path / lab.lab.lab_id).exists()


def test_lab_nodes_ship_loopback_as_kind_nodes_do(tmp_path: Path) -> None:
    if not os.access(LOOPBACK, os.X_OK):
        pytest.skip(f"{LOOPBACK} is missing: apt-get install containernetworking-plugins")
    with running_lab(Topology(nodes=1, pods_per_node=0), str(tmp_path)) as (lab, _inventory):
        installed = lab.node_dir(lab.lab.nodes[0], "bin", "loopback")
        assert os.access(installed, os.X_OK)
        assert filecmp.cmp(installed, LOOPBACK, shallow=False)
