"""Proving the gate can fail: faults injected into a running lab turn exactly the affected cells
into `N` (masquerade) or `X` (a deleted route, forwarding off, FORWARD policy DROP), and every
other cell stays `.`, the Service cells included (a Service cell's destination is the endpoint
reached through the Service). The lab is wired with the reference plugins so that nothing
repairs the fault behind the test's back. The faults that only Services feel are in
test_lab_services."""

from __future__ import annotations

from pathlib import Path

from lab.cluster.fabric import ipr_in, write_sysctls
from lab.matrix.cases import Case
from lab.matrix.executors import NODE, POD, Endpoint
from lab.topology import Topology
from minicni.net import netns
from netns_tests.conftest import ping
from netns_tests.lab_support import (
    assert_cells,
    assert_matrix,
    is_ipv6,
    masquerade_pods_of,
    run_matrix,
    running_lab,
    wait_for,
)

TOPOLOGY = Topology(nodes=2, pods_per_node=2, plugin="reference")
DUAL = Topology(nodes=2, pods_per_node=1, plugin="reference", family="dual")


def is_pod_on(endpoint: Endpoint, node: str) -> bool:
    return endpoint.kind == POD and endpoint.node == node


def test_masquerade_on_a_node_turns_its_pods_outbound_cells_into_n(tmp_path: Path) -> None:
    with running_lab(TOPOLOGY, str(tmp_path)) as (lab, inventory):
        expected = masquerade_pods_of(lab.lab, "n1")

        assert_matrix(run_matrix(inventory, retries=0), expected)


def test_ip6tables_masquerade_turns_only_the_ipv6_cells_of_its_pods_into_n(tmp_path: Path) -> None:
    with running_lab(DUAL, str(tmp_path)) as (lab, inventory):
        expected = masquerade_pods_of(lab.lab, "n1", family="ipv6")

        report = run_matrix(inventory, retries=0)
        assert {cell.case.grid for cell in report.cells} == {
            "icmp", "tcp", "udp", "icmp6", "tcp6", "udp6"
        }  # fmt: skip
        assert_matrix(report, expected)


def test_ipv6_forwarding_off_cuts_the_ipv6_cells_routed_through_the_node(tmp_path: Path) -> None:
    with running_lab(DUAL, str(tmp_path)) as (lab, inventory):
        n1 = lab.lab.node("n1")
        write_sysctls(n1.netns, {"net/ipv6/conf/all/forwarding": "0"})
        # the switch takes the kernel a moment (the first echo to n1's own pod right after it is
        # lost): probe only once n1 reaches its pod again, as it must
        (pod,) = (e for e in inventory.pods if e.node == "n1")
        wait_for(
            lambda: ping(netns.path_of(n1.netns), pod.address("ipv6") or ""),
            what="n1 reaching its own pod over IPv6 again",
        )

        def expected(grid: str, src: Endpoint, dst: Endpoint) -> str:
            # IPv4 keeps flowing; over IPv6, n1 routes nothing between its pods and the
            # underlay any more
            routed = (is_pod_on(src, "n1") and dst.node != "n1") or (
                is_pod_on(dst, "n1") and src.node != "n1"
            )
            return "X" if routed and is_ipv6(grid) else "."

        assert_matrix(run_matrix(inventory, retries=0, timeout=1.0), expected)


def test_a_deleted_route_turns_the_cells_that_need_it_into_x(tmp_path: Path) -> None:
    with running_lab(TOPOLOGY, str(tmp_path)) as (lab, inventory):
        n2 = lab.lab.node("n2")
        with ipr_in(lab.lab.node("n1").netns) as ipr:
            ipr.route("del", dst=n2.pod_cidr)

        def expected(_proto: str, src: Endpoint, dst: Endpoint) -> str:
            # n1 cannot send to n2's pods: requests from n1 to them, and replies from n1 to
            # n2's pods, are lost. n2 (the node) to n1's pods still works: its replies go to
            # n2's underlay address, which n1 reaches directly
            if src.node == "n1" and is_pod_on(dst, "n2"):
                return "X"
            if is_pod_on(src, "n2") and dst.node == "n1":
                return "X"
            return "."

        assert_matrix(run_matrix(inventory, retries=0, timeout=1.0), expected)


def test_forwarding_off_on_a_node_turns_its_routed_cells_into_x(tmp_path: Path) -> None:
    with running_lab(TOPOLOGY, str(tmp_path)) as (lab, inventory):
        write_sysctls(lab.lab.node("n1").netns, {"net/ipv4/ip_forward": "0"})

        def expected(case: Case) -> str:
            # whatever n1 must route between its pods and the underlay is dropped; n1's own
            # traffic with its pods, and its pods between themselves (bridged), still flow --
            # but not through a Service: its DNAT makes n1 route even a packet between two of
            # its pods, so those go too
            src, dst = case.src, case.dst
            if is_pod_on(src, "n1") and (dst.node != "n1" or case.service is not None):
                return "X"
            if is_pod_on(dst, "n1") and src.node != "n1":
                return "X"
            return "."

        assert_cells(run_matrix(inventory, retries=0, timeout=1.0), expected)


def test_forward_policy_drop_without_accept_rules_cuts_forwarded_cells(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, plugin="reference", forward_drop=True)
    with running_lab(topology, str(tmp_path)) as (_lab, inventory):

        def expected(_proto: str, src: Endpoint, dst: Endpoint) -> str:
            # the reference plugins add no FORWARD accept rules: only a node talking to its own
            # pods (and back) avoids the FORWARD chain
            local = src.node == dst.node and NODE in (src.kind, dst.kind)
            return "." if local else "X"

        assert_matrix(run_matrix(inventory, retries=0, timeout=1.0), expected)


def test_the_scapy_engine_sees_the_same_masquerade_off_the_wire(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, plugin="reference")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        expected = masquerade_pods_of(lab.lab, "n1")

        # each scapy process imports for ~0.5 s of CPU: few at a time, or they starve each other
        report = run_matrix(inventory, retries=1, timeout=3.0, engine="scapy", workers=4)
        assert_matrix(report, expected)
