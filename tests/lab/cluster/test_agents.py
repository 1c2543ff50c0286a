"""The agent's command line as the lab writes it: each node's own files, one value per flag."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lab.cluster.agents import (
    BUNDLE_READY_TIMEOUT,
    AgentError,
    NodeFiles,
    agent_argv,
    agent_flags,
    nodes_document,
    ready_timeout,
    require_served,
)
from lab.topology import Topology, plan

LAB = plan(Topology(nodes=2, backend="vxlan", underlay="routed"), "ml1")


def test_the_flags_name_the_nodes_own_files(tmp_path: Path) -> None:
    node = LAB.nodes[1]
    flags = agent_flags(LAB.topology, node, NodeFiles(tmp_path / "n2"), tmp_path / "nodes.json")
    assert (flags["--node-name"], flags["--backend"]) == ("n2", "vxlan")
    assert flags["--nodes-file"] == str(tmp_path / "nodes.json")
    for flag in ("--cni-conf-dir", "--cni-bin-dir", "--state-dir", "--ipam-data-dir"):
        assert Path(flags[flag]).parent == tmp_path / "n2", flag
    assert flags["--plugin-log-file"].startswith(str(tmp_path / "n2"))


def test_a_flag_the_caller_gives_replaces_the_labs_and_the_agent_runs_in_the_node() -> None:
    node = LAB.nodes[0]
    flags = agent_flags(LAB.topology, node, NodeFiles(Path("/w/n1")), Path("/w/nodes.json"))
    argv = agent_argv(node, flags, ("--once", "--backend", "host-gw"))
    assert argv[:4] == ["ip", "netns", "exec", "ml1-n1"]
    assert argv[4].endswith("minicni-agent")
    assert argv.count("--backend") == 1
    assert argv[-3:] == ["--once", "--backend", "host-gw"]
    assert all(argv.count(flag) == 1 for flag in flags)


def test_the_nodes_file_lists_every_node_as_kubernetes_names_it() -> None:
    assert nodes_document(LAB) == {
        "nodes": [
            {"name": "n1", "internalIP": "172.30.1.2", "podCIDR": "10.244.1.0/24"},
            {"name": "n2", "internalIP": "172.30.2.2", "podCIDR": "10.244.2.0/24"},
        ]
    }


def test_a_dual_stack_lab_lists_both_families_and_gives_a_cluster_cidr_of_each() -> None:
    dual = plan(Topology(nodes=1, family="dual"), "ml1")
    assert nodes_document(dual)["nodes"] == [
        {
            "name": "n1",
            "internalIP": "172.30.0.11",
            "podCIDR": "10.244.1.0/24",
            "internalIPs": ["172.30.0.11", "fd00:172:30::11"],
            "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        }
    ]
    flags = agent_flags(dual.topology, dual.nodes[0], NodeFiles(Path("/w/n1")), Path("/w/n"))
    assert flags["--cluster-cidr"] == "10.244.0.0/16,fd00:10:244::/56"
    six = plan(Topology(nodes=1, family="ipv6"), "ml1")
    assert nodes_document(six)["nodes"][0]["internalIP"] == "fd00:172:30::11"
    flags = agent_flags(six.topology, six.nodes[0], NodeFiles(Path("/w/n1")), Path("/w/n"))
    assert flags["--cluster-cidr"] == "fd00:10:244::/56"


def test_the_agents_serve_cni_requests_on_a_socket_of_their_node_unless_told_not_to(
    tmp_path: Path,
) -> None:
    node = LAB.nodes[0]
    files = NodeFiles(tmp_path / "n1")
    served = agent_flags(LAB.topology, node, files, tmp_path / "nodes.json")
    assert served["--cni-socket"] == str(files.cni_socket)
    assert files.cni_socket.is_relative_to(tmp_path / "n1")
    topology = replace(LAB.topology, fast_path=False)
    assert agent_flags(topology, node, files, tmp_path / "nodes.json")["--cni-socket"] == ""


def test_a_real_runtime_runs_the_plugin_as_the_daemonset_installs_it() -> None:
    files, nodes_file = NodeFiles(Path("/w/n1")), Path("/w/nodes.json")
    libcni = agent_flags(LAB.topology, LAB.nodes[0], files, nodes_file)
    assert libcni["--plugin-install"] == "launcher"  # the lab's own runtime: quicker to install
    assert ready_timeout(LAB.topology, 30.0) == 30.0
    cri = Topology(nodes=2, runtime="cri")
    flags = agent_flags(cri, plan(cri, "ml1").nodes[0], files, nodes_file)
    assert flags["--plugin-install"] == "bundle"  # its own Python: the node needs none
    assert flags["--plugin-dir"] == "/w/n1/opt"
    assert ready_timeout(cri, 30.0) == BUNDLE_READY_TIMEOUT  # ~70 MB copied per node


def test_a_cni_call_the_shim_ran_in_process_fails_a_lab_whose_agents_serve(tmp_path: Path) -> None:
    served, fell_back, quiet = (NodeFiles(tmp_path / name) for name in ("n1", "n2", "n3"))
    for files in (served, fell_back):
        files.plugin_log.parent.mkdir(parents=True, exist_ok=True)
    served.plugin_log.write_text("2026-12-01 minicni[7] ADD c1 INFO ADD c1/eth0: 10.244.1.2\n")
    require_served([served, quiet])  # a log without fallbacks, or none at all: served
    fell_back.plugin_log.write_text(
        "minicni[8] ADD c2 WARNING fast path unavailable (refused: dataDir): in-process\n"
    )
    with pytest.raises(AgentError, match=r"(?s)1 CNI call ran in-process.*refused: dataDir"):
        require_served([served, fell_back, quiet])
