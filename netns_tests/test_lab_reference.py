"""The harness judges packets, not minicni: pods wired by the reference bridge + host-local
plugins, with routes added by the lab, must come out all `.`, on both underlays, Service cells
included (the node's bridge-nf-call-iptables is 1, as a new namespace has it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.cluster.build import lab_namespaces
from lab.cluster.state import known_labs
from lab.runtimes.libcni import CniPluginError
from lab.topology import Topology
from netns_tests.lab_support import assert_matrix, run_matrix, running_lab


def all_ok(_proto: str, _src: object, _dst: object) -> str:
    return "."


def test_reference_plugins_on_one_l2_segment_are_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=3, pods_per_node=2, plugin="reference", underlay="l2")
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert len(inventory.pods) == 6 and len(inventory.nodes) == 3
        report = run_matrix(inventory)
        # 66 pair cells a protocol; 9 clients x 3 endpoints through each Service (TCP, UDP)
        assert len(report.cells) == 3 * 66 + 2 * 9 * 3
        assert_matrix(report, all_ok)


def test_reference_plugins_behind_a_router_are_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=3, pods_per_node=1, plugin="reference", underlay="routed")
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert_matrix(run_matrix(inventory), all_ok)


def test_reference_plugins_dual_stack_on_one_l2_segment_are_all_ok(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=2, plugin="reference", family="dual")
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert inventory.families == ("ipv4", "ipv6")
        for pod in inventory.pods:
            assert [":" in ip for ip in pod.addresses] == [False, True], pod
        report = run_matrix(inventory)
        # per family and protocol: 4 pods (12 pod->pod, 8 pod->node), 2 nodes x 4 pods; then
        # 6 clients x 2 endpoints through each Service (TCP, UDP), which are IPv4
        assert len(report.cells) == 2 * 3 * (12 + 8 + 8) + 2 * 6 * 2
        assert {c.case.family for c in report.cells if c.case.service} == {"ipv4"}
        assert_matrix(report, all_ok)


def test_reference_plugins_ipv6_only_behind_a_router_are_all_ok(tmp_path: Path) -> None:
    topology = Topology(
        nodes=2, pods_per_node=1, plugin="reference", family="ipv6", underlay="routed"
    )
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):
        assert inventory.families == ("ipv6",)
        assert all(":" in e.ip and len(e.addresses) == 1 for e in inventory.endpoints)
        report = run_matrix(inventory)
        assert {cell.case.grid for cell in report.cells} == {"icmp6", "tcp6", "udp6"}
        assert_matrix(report, all_ok)


def test_nodes_are_set_up_as_kind_sets_them(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, plugin="reference", forward_drop=True)
    with running_lab(topology, str(tmp_path)) as (lab, _inventory):
        node = lab.lab.nodes[0].netns
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "1")):
            shown = subprocess.run(
                ["ip", "netns", "exec", node, "sysctl", "-n", key],
                capture_output=True,
                text=True,
                check=True,
            )
            assert shown.stdout.strip() == value
        rules = subprocess.run(
            ["ip", "netns", "exec", node, "iptables", "-S", "FORWARD"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "-P FORWARD DROP" in rules.stdout


def test_dual_stack_nodes_forward_ipv6_and_their_underlay_addresses_are_usable_at_once(
    tmp_path: Path,
) -> None:
    topology = Topology(nodes=2, pods_per_node=0, plugin="reference", family="dual")
    with running_lab(topology, str(tmp_path)) as (lab, _inventory):
        node = lab.lab.nodes[0]
        shown = subprocess.run(
            ["ip", "netns", "exec", node.netns, "sysctl", "-n", "net.ipv6.conf.all.forwarding"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout.strip() == "1"
        listed = subprocess.run(
            ["ip", "-n", node.netns, "-j", "addr", "show", node.uplink],
            capture_output=True,
            text=True,
            check=True,
        )
        found = {
            a["local"]: a for a in json.loads(listed.stdout)[0]["addr_info"] if a["scope"] != "link"
        }
        assert set(found) == {node.ip, node.ip6}
        assert not found[node.ip6].get("tentative")  # no duplicate address detection delay
        routes = subprocess.run(
            ["ip", "-n", node.netns, "-6", "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"via {node.gateway6}" in routes.stdout


def test_pods_get_the_address_the_runtime_reports_and_check_sees_damage(tmp_path: Path) -> None:
    topology = Topology(nodes=1, pods_per_node=1, plugin="reference")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        (pod,) = inventory.pods
        shown = subprocess.run(
            ["ip", "-n", pod.handle, "-j", "-4", "addr", "show", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        )
        addresses = [a["local"] for a in json.loads(shown.stdout)[0]["addr_info"]]
        assert addresses == [pod.ip]
        from lab.cluster.build import pod_attachment

        runtime = lab.runtime_for(lab.lab.nodes[0])
        runtime.check(pod_attachment(lab.lab.pods[0]))  # intact: passes
        subprocess.run(["ip", "-n", pod.handle, "addr", "flush", "dev", "eth0"], check=True)
        with pytest.raises(CniPluginError):
            runtime.check(pod_attachment(lab.lab.pods[0]))


def test_down_removes_namespaces_files_and_reservations(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=2, plugin="reference")
    with running_lab(topology, str(tmp_path)) as (lab, _inventory):
        lab_id, work_dir = lab.lab.lab_id, lab.work_dir
        reservations = list(Path(work_dir, "n1", "ipam", "lab-bridge").glob("10.*"))
        assert len(reservations) == 2
    assert lab_namespaces(lab_id) == []
    assert not os.path.exists(work_dir)
    assert known_labs(str(tmp_path)) == []


def test_a_failed_up_removes_what_it_built(tmp_path: Path) -> None:
    from lab.cluster.build import NetnsLab
    from lab.topology import new_lab_id, plan

    lab = NetnsLab(plan(Topology(nodes=2, plugin="reference"), new_lab_id()), str(tmp_path))
    lab.runtime_for = None  # type: ignore[assignment,method-assign]  # pods cannot be added
    with pytest.raises(TypeError):
        lab.up()
    assert lab_namespaces(lab.lab.lab_id) == []
    assert known_labs(str(tmp_path)) == []
