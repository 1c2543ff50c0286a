"""Services through kube-proxy's rules (the lab's stand-in): each guarantee proved by the fault
that breaks it.

- The node's `net.bridge.bridge-nf-call-iptables` at 0 (kubeadm no longer checks it): on minicni
  every cell stays `.`, because minicni's bridge sends its own traffic through iptables; on the
  reference plugins exactly the cells of a pod calling a Service whose endpoint sits beside it on
  the bridge break -- TCP never connects (`X`), UDP answers come from the endpoint's address (`N`).
- Hairpin off on one pod's bridge port: exactly that pod's cells through its own Service break.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab.cluster import services
from lab.cluster.build import NetnsLab
from lab.cluster.fabric import write_sysctls
from lab.cluster.kubeproxy import SERVICES_CHAIN
from lab.matrix.cases import POD_SVC_SAME, POD_SVC_SELF, SERVICE_KINDS, Case
from lab.topology import Topology
from minicni.net.links import host_veth_name
from netns_tests.lab_support import assert_cells, run_matrix, running_lab

BRIDGE_NF_OFF = {"net/bridge/bridge-nf-call-iptables": "0"}


def in_node(lab: NetnsLab, node: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", lab.lab.node(node).netns, *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def bridge_nf_call_iptables(lab: NetnsLab, node: str, bridge: str) -> int:
    (link,) = json.loads(in_node(lab, node, "ip", "-j", "-d", "link", "show", bridge))
    return int(link["linkinfo"]["info_data"]["nf_call_iptables"])


def all_ok(_case: Case) -> str:
    return "."


def test_kube_proxys_rules_are_on_every_node_in_the_backend_it_uses(tmp_path: Path) -> None:
    topology = Topology(nodes=2, pods_per_node=1, plugin="reference", forward_drop=True)
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        assert [s.name for s in inventory.services] == ["probe-tcp", "probe-udp"]
        # applied once more: the same rules, no second jump
        assert services.install(lab.lab, lab.pod_ips(inventory)) == {"n1": "nft", "n2": "nft"}
        for node in ("n1", "n2"):
            rules = in_node(lab, node, "iptables-nft-save", "-t", "nat")
            # one jump from each hook, a Service chain per Service, an endpoint chain per pod
            assert rules.count(f"-j {SERVICES_CHAIN}") == 2  # from PREROUTING and OUTPUT
            assert rules.count(f"-A {SERVICES_CHAIN}") == 2  # a ClusterIP each
            assert rules.count("-j KUBE-POSTROUTING") == 1
            assert rules.count("-j DNAT --to-destination") == 2 * 2
            assert rules.count("--probability 0.5000000000") == 2
            legacy = subprocess.run(
                ["ip", "netns", "exec", lab.lab.node(node).netns, "iptables-legacy-save"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert "KUBE-" not in legacy.stdout  # the node uses nft (its FORWARD DROP is there)


def test_without_the_sysctl_services_still_work_on_minicni(tmp_path: Path) -> None:
    with running_lab(Topology(nodes=2, pods_per_node=2), str(tmp_path)) as (lab, inventory):
        for node in lab.lab.nodes:
            write_sysctls(node.netns, BRIDGE_NF_OFF)
            assert bridge_nf_call_iptables(lab, node.name, "minicni0") == 1  # why they do
        report = run_matrix(inventory, ("tcp", "udp"))
        assert sum(c.case.kind == POD_SVC_SAME for c in report.cells) == 2 * 2 * 1  # n1/p1, n2/p1
        assert_cells(report, all_ok)


def test_without_the_sysctl_the_reference_plugins_break_same_node_services(
    tmp_path: Path,
) -> None:
    topology = Topology(nodes=2, pods_per_node=2, plugin="reference")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        assert_cells(run_matrix(inventory, ("tcp", "udp"), kinds=SERVICE_KINDS), all_ok)
        for node in lab.lab.nodes:
            write_sysctls(node.netns, BRIDGE_NF_OFF)
            assert bridge_nf_call_iptables(lab, node.name, "cni0") == 0

        def expected(case: Case) -> str:
            # the endpoint answers the client straight over the bridge: conntrack never sees
            # the answer, so the client gets it from the endpoint's own address. A pod reaching
            # itself is routed both ways through the node (and masqueraded), so it still works
            if case.kind == POD_SVC_SAME:
                return "X" if case.proto == "tcp" else "N"
            return "."

        assert_cells(run_matrix(inventory, ("tcp", "udp"), retries=0), expected)


def test_hairpin_off_on_a_pods_port_breaks_exactly_its_cells_through_its_own_service(
    tmp_path: Path,
) -> None:
    with running_lab(Topology(nodes=2, pods_per_node=2), str(tmp_path)) as (lab, inventory):
        pod = lab.lab.pod("n1", "p0")
        port = host_veth_name(pod.container_id, pod.ifname)
        in_node(lab, "n1", "bridge", "link", "set", "dev", port, "hairpin", "off")

        def expected(case: Case) -> str:
            return "X" if case.kind == POD_SVC_SELF and case.src.name == pod.name else "."

        report = run_matrix(inventory, ("icmp", "tcp", "udp"), retries=0)
        assert sum(expected(cell.case) == "X" for cell in report.cells) == 2  # TCP, UDP
        assert_cells(report, expected)


def test_on_a_node_whose_kubelet_uses_legacy_iptables_the_rules_go_there(tmp_path: Path) -> None:
    topology = Topology(nodes=1, pods_per_node=1, plugin="reference")
    with running_lab(topology, str(tmp_path)) as (lab, inventory):
        # kubelet marks the backend it uses with this chain; iptables-wrappers follows it
        in_node(lab, "n1", "iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
        assert services.install(lab.lab, lab.pod_ips(inventory)) == {"n1": "legacy"}
        legacy = in_node(lab, "n1", "iptables-legacy-save", "-t", "nat")
        assert legacy.count("-j DNAT --to-destination") == 2
        assert legacy.count("-j KUBE-SERVICES") == 2
