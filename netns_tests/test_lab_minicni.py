"""The default lab: minicni-agent in every node namespace writes the conflist and installs the
plugin (launcher), lab.runtimes.libcni adds the pods with it. All `.` on both CI topologies, and the
gate still sees faults injected into a running minicni lab."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cluster.build import lab_namespaces, pod_attachment
from lab.cluster.fabric import ipr_in
from lab.cluster.processes import processes_in
from lab.cluster.state import known_labs
from lab.matrix.executors import POD, Endpoint
from lab.topology import Topology
from netns_tests.lab_support import (
    assert_matrix,
    masquerade_pods_of,
    run_matrix,
    running_lab,
)


def _agent_installed() -> bool:
    beside = os.path.join(os.path.dirname(sys.executable), "minicni-agent")
    script = beside if os.access(beside, os.X_OK) else shutil.which("minicni-agent")
    return script is not None and importlib.util.find_spec("minicni.agent") is not None


pytestmark = [
    pytest.mark.skipif(not _agent_installed(), reason="minicni-agent is not installed"),
]

# long resync: nothing repairs an injected fault while the matrix runs
QUIET_AGENT = {"agent_resync_seconds": 600}


def all_ok(_proto: str, _src: object, _dst: object) -> str:
    return "."


def test_host_gw_on_one_l2_segment_is_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=3, pods_per_node=2, backend="host-gw", underlay="l2")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        conflist = Path(lab.node_dir(lab.lab.nodes[0], "net.d", "10-minicni.conflist"))
        assert conflist.exists()
        assert_matrix(run_matrix(inventory), all_ok)


def test_vxlan_on_routed_subnets_with_forward_drop_is_all_ok(tmp_path: Path) -> None:
    topology = Topology(
        nodes=3, pods_per_node=2, backend="vxlan", underlay="routed", forward_drop=True
    )
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert_matrix(run_matrix(inventory), all_ok)


def test_auto_backend_on_routed_subnets_is_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, backend="auto", underlay="routed")
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert_matrix(run_matrix(inventory), all_ok)


def test_dual_stack_vxlan_on_routed_subnets_with_forward_drop_is_all_ok(tmp_path: Path) -> None:
    topology = Topology(
        nodes=3,
        pods_per_node=1,
        family="dual",
        backend="vxlan",
        underlay="routed",
        forward_drop=True,
    )
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        report = run_matrix(inventory)
        assert report.families == ("ipv4", "ipv6")
        pairs = [c for c in report.cells if c.case.service is None]
        assert len([c for c in pairs if c.case.family == "ipv6"]) == len(pairs) // 2
        # the lab's Services are IPv4 (a ClusterIP of the first family): 6 clients x 3 endpoints
        through_services = [c for c in report.cells if c.case.service is not None]
        assert len(through_services) == 2 * 6 * 3
        assert {c.case.family for c in through_services} == {"ipv4"}
        assert_matrix(report, all_ok)


def test_ipv6_only_auto_on_routed_subnets_is_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, family="ipv6", backend="auto", underlay="routed")
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        report = run_matrix(inventory)
        assert {cell.case.grid for cell in report.cells} == {"icmp6", "tcp6", "udp6"}
        assert_matrix(report, all_ok)


def test_dual_stack_pods_over_an_ipv4_underlay_are_all_ok(tmp_path: Path) -> None:
    topology = Topology(
        nodes=2, pods_per_node=1, family="dual", underlay_family="ipv4", backend="auto"
    )
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        report = run_matrix(inventory)
        # the nodes have no IPv6 address: IPv6 cells are pod -> pod only, through VXLAN
        six = [cell.case for cell in report.cells if cell.case.family == "ipv6"]
        assert six and all(case.kind == "pod->pod other node" for case in six)
        assert_matrix(report, all_ok)


def test_ip6tables_masquerade_injected_into_a_dual_stack_node_shows_as_n(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, family="dual", **QUIET_AGENT)  # type: ignore[arg-type]
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        expected = masquerade_pods_of(lab.lab, "n1", family="ipv6")

        assert_matrix(run_matrix(inventory, retries=0), expected)


@pytest.mark.parametrize(("libcni", "version"), [("1.1", "1.0.0"), ("1.2", "1.1.0")])
def test_each_libcni_generation_runs_the_agents_conflist_at_its_version(
    tmp_path: Path, libcni: str, version: str
) -> None:
    """containerd 1.6/1.7 and podman 4 (libcni 1.1) run it at 1.0.0, containerd 2.x at 1.1.0."""
    topology = Topology(nodes=2, pods_per_node=1, libcni=libcni)
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        pod = lab.lab.pods[0]
        runtime = lab.runtime_for(lab.lab.node(pod.node))
        cached = runtime.cached_result(pod_attachment(pod))
        assert cached is not None and cached["cniVersion"] == version
        if version == "1.1.0":
            runtime.status()  # STATUS exists from 1.1.0 on, and the agent made the node ready
        assert_matrix(run_matrix(inventory, protocols=("icmp",)), all_ok)


def test_masquerade_injected_into_a_minicni_node_shows_as_n(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, **QUIET_AGENT)  # type: ignore[arg-type]
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        expected = masquerade_pods_of(lab.lab, "n1")

        assert_matrix(run_matrix(inventory, retries=0), expected)


def test_a_route_deleted_behind_the_agents_back_shows_as_x(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, **QUIET_AGENT)  # type: ignore[arg-type]
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        with ipr_in(lab.lab.node("n1").netns) as ipr:
            ipr.route("del", dst=lab.lab.node("n2").pod_cidr)

        def expected(_proto: str, src: Endpoint, dst: Endpoint) -> str:
            n2_pod = dst.kind == POD and dst.node == "n2"
            if (src.node == "n1" and n2_pod) or (
                src.kind == POD and src.node == "n2" and dst.node == "n1"
            ):
                return "X"
            return "."

        assert_matrix(run_matrix(inventory, retries=0, timeout=1.0), expected)


def test_down_stops_the_agents_of_a_lab_left_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cli = [sys.executable, "-m", "lab.cli", "--state-dir", str(state)]
    up = subprocess.run(
        [*cli, "up", "--nodes", "2", "--pods-per-node", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    (lab_id,) = known_labs(str(state))
    try:
        nodes = [f"/run/netns/{lab_id}-n1", f"/run/netns/{lab_id}-n2"]
        agents = processes_in(nodes)
        assert len(agents) == 2, "one agent per node keeps running after `up` returned"
    finally:
        down = subprocess.run(
            [*cli, "down", "--id", lab_id], capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in agents if _running(pid)]
    assert lab_namespaces(lab_id) == [] and known_labs(str(state)) == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            return stream.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
