"""minicni on a three-node kind cluster (one control plane, two workers, no other CNI).

The tests run in file order against one cluster: first that it came up (DaemonSet, nodes, plugin
on the nodes), then the full connectivity matrix (the same runner and probes as the namespace
lab, through `kubectl exec`), then the disruptive ones (a pod deleted, the agent restarted, a
node joining and leaving). The cluster is IPv4, dual-stack or IPv6 (MINICNI_E2E_FAMILY, kind's
`ipFamily`); every check covers each family the cluster has, and the matrix probes each.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lab.kind.cluster import KindLab
from lab.kind.manifests import (
    AGENT_DAEMONSET,
    AGENT_NAMESPACE,
    AGENT_SELECTOR,
    IPAM_DATA_DIR,
    NETWORK_NAME,
    PROBE_NAMESPACE,
    kind_node_count,
    pod_subnets,
)
from lab.matrix import report as reports
from lab.matrix.cases import (
    NODE_POD_OTHER,
    NODE_POD_SAME,
    POD_POD_OTHER,
    POD_POD_SAME,
    SERVICE_KINDS,
    MatrixReport,
    build_cases,
)
from lab.matrix.executors import Inventory, KubectlExecutor
from lab.matrix.runner import MatrixRunner

# kubectl exec costs ~0.5 s per probe process: wider timeouts than in network namespaces.
SENDER_TIMEOUT_S = 3.0
LAUNCH_TIMEOUT_S = 20.0
ROUTE_DEADLINE_S = 60.0  # resync is 10 s; a watch event should be far quicker
CONFLIST = "/etc/cni/net.d/10-minicni.conflist"


# --- helpers ------------------------------------------------------------------------------------


def run_matrix(
    kind_lab: KindLab, inventory: Inventory, name: str, results_dir: Path, **case_filter: Any
) -> MatrixReport:
    """Run (a part of) the matrix, save JSON + JUnit under results/e2e/, print the grids."""
    cases = build_cases(inventory, **case_filter)
    runner = MatrixRunner(
        KubectlExecutor(kubeconfig=kind_lab.kubeconfig),
        timeout=SENDER_TIMEOUT_S,
        launch_timeout=LAUNCH_TIMEOUT_S,
        retries=2,
        workers=8,
    )
    result = runner.run(inventory, cases)
    reports.write_json(result, str(results_dir / f"matrix-{name}.json"), {"cluster": "kind"})
    reports.write_junit(result, str(results_dir / f"matrix-{name}.xml"))
    print(reports.render(result))
    return result


def wrong_cells(result: MatrixReport) -> str:
    return "\n".join(
        f"{c.verdict} {c.case.label}: {c.detail}\n  {c.reproduce}" for c in result.wrong()
    )


def pod_subnet(kind_lab: KindLab) -> list[str]:
    """The cluster's pod CIDRs, one per family (kind's podSubnet)."""
    return pod_subnets(kind_lab.settings.kind_config)


def family_of(text: str) -> int:
    return 6 if ":" in text else 4


def node_facts(kind_lab: KindLab) -> dict[str, list[tuple[str, str]]]:
    """node name -> [(InternalIP, podCIDR)] of each family, as the agent reads them from the
    API (spec.podCIDRs; a dual-stack node has an InternalIP of each family)."""
    facts = {}
    for node in kind_lab.nodes():
        internal = [a["address"] for a in node["status"].get("addresses", [])
                    if a["type"] == "InternalIP"]  # fmt: skip
        cidrs = node["spec"].get("podCIDRs") or [node["spec"]["podCIDR"]]
        by_family = {family_of(ip): ip for ip in reversed(internal)}
        facts[node["metadata"]["name"]] = [
            (by_family[family_of(cidr)], cidr) for cidr in cidrs if family_of(cidr) in by_family
        ]
    return facts


def routes_to(kind_lab: KindLab, probe_host: str, cidr: str) -> str:
    """The routes to `cidr` on the node of hostNetwork probe pod `probe_host`, as the node shows
    them (the image carries no iproute2: the agent programs routes through netlink)."""
    namespace, _, pod = probe_host.partition("/")
    node = kind_lab.kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.spec.nodeName}")
    family = f"-{family_of(cidr)}"
    return kind_lab.node_exec(node.strip(), ["ip", family, "route", "show", "exact", cidr]).strip()


def wait_until(what: str, check: Callable[[], bool], deadline_s: float = ROUTE_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:.0f} s: {what}")
        time.sleep(2)


def subset(inventory: Inventory, nodes: Iterable[str]) -> Inventory:
    keep = set(nodes)
    return Inventory.build([e for e in inventory.endpoints if e.node in keep], name=inventory.name)


def pod_manifest(name: str, node: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": PROBE_NAMESPACE, "labels": {"e2e": "ipam"}},
        "spec": {
            "nodeName": node,  # pinned: the reservation to look at is on this node
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                }
            ],
        },
    }


# --- the cluster came up ------------------------------------------------------------------------


def test_agent_daemonset_is_ready_on_every_node(kind_lab: KindLab) -> None:
    expected = kind_node_count()
    daemonset = kind_lab.kubectl_json("get", "daemonset", "-n", AGENT_NAMESPACE, AGENT_DAEMONSET)
    status = daemonset["status"]
    assert status["desiredNumberScheduled"] == expected
    assert status["numberReady"] == expected
    assert status.get("numberUnavailable", 0) == 0
    pods = kind_lab.kubectl_json("get", "pods", "-n", AGENT_NAMESPACE, "-l", AGENT_SELECTOR)
    on_nodes = sorted(pod["spec"]["nodeName"] for pod in pods["items"])
    assert on_nodes == sorted(node_facts(kind_lab)), "one agent per node"


def test_every_node_is_ready_and_reports_its_network_available(kind_lab: KindLab) -> None:
    for node in kind_lab.nodes():
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        name = node["metadata"]["name"]
        assert conditions["Ready"] == "True", name
        assert conditions.get("NetworkUnavailable") == "False", f"{name}: {conditions}"


def test_coredns_runs_on_the_pod_network(kind_lab: KindLab) -> None:
    coredns = kind_lab.kubectl_json("get", "deployment", "-n", "kube-system", "coredns")
    assert coredns["status"].get("availableReplicas", 0) == coredns["spec"]["replicas"]
    pods = kind_lab.kubectl_json("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")
    clusters = [ipaddress.ip_network(cidr) for cidr in pod_subnet(kind_lab)]
    for pod in pods["items"]:
        addresses = [entry["ip"] for entry in pod["status"].get("podIPs", [])]
        # an address in each of the cluster's pod CIDRs: one per family
        assert len(addresses) == len(clusters), pod["status"]
        for address, cluster in zip(sorted(addresses, key=family_of), clusters, strict=True):
            assert ipaddress.ip_address(address) in cluster


def test_each_node_runs_the_plugin_from_its_bundled_runtime(kind_lab: KindLab) -> None:
    """kind's node image has no Python: the installed launcher runs the runtime the agent copied
    to /opt/minicni and answers as a runtime calls it; the conflist carries the node's podCIDR
    (a list of both on a dual-stack node)."""
    for node, facts in node_facts(kind_lab).items():
        cidrs = [cidr for _ip, cidr in facts]
        launcher = kind_lab.node_exec(node, ["cat", "/opt/cni/bin/minicni"])
        assert launcher.startswith("#!/bin/sh") and "home='/opt/minicni/" in launcher, node
        answer = kind_lab.node_exec(
            node,
            ["env", "CNI_COMMAND=VERSION", "/opt/cni/bin/minicni"],
            stdin='{"cniVersion": "1.1.0"}',
        )
        assert "1.1.0" in json.loads(answer)["supportedVersions"], node
        conflist = json.loads(
            kind_lab.node_exec(node, ["cat", "/etc/cni/net.d/10-minicni.conflist"])
        )
        # kind's containerd 1.7 (libcni 1.1) runs 1.0.0; containerd 2.x picks 1.1.0
        assert (conflist["cniVersion"], conflist["cniVersions"][-1]) == ("1.0.0", "1.1.0")
        plugin = conflist["plugins"][0]  # portmap may follow it
        subnet = cidrs[0] if len(cidrs) == 1 else sorted(cidrs, key=family_of)
        assert (plugin["type"], plugin["subnet"]) == ("minicni", subnet), node


def test_every_node_routes_to_every_other_nodes_pods(
    kind_lab: KindLab, probe_host_pods: dict[str, str]
) -> None:
    facts = node_facts(kind_lab)
    assert set(probe_host_pods) == set(facts)
    for node, probe_host in probe_host_pods.items():
        for other, families in facts.items():
            if other == node:
                continue
            for other_ip, other_cidr in families:  # a route per family
                route = routes_to(kind_lab, probe_host, other_cidr)
                # kind's nodes share one L2 network, so `auto` picks host-gw: via the node's
                # address of the same family
                assert route, f"{node} has no route to {other}'s pods ({other_cidr})"
                assert f"via {other_ip}" in route or "onlink" in route, f"{node}: {route}"


# --- the matrix ---------------------------------------------------------------------------------


def test_full_matrix_is_all_ok(kind_lab: KindLab, results_dir: Path) -> None:
    inventory = kind_lab.inventory()
    nodes = kind_node_count(kind_lab.settings.kind_config)
    assert len(inventory.nodes) == nodes and len(inventory.pods) == 2 * nodes, inventory
    families = tuple(f"ipv{family_of(cidr)}" for cidr in pod_subnet(kind_lab))
    assert inventory.families == families, inventory  # every pod has an address of each family
    result = run_matrix(kind_lab, inventory, "kind", results_dir)
    assert result.families == families
    for family in families:
        kinds = {cell.case.kind for cell in result.cells if cell.case.family == family}
        assert {POD_POD_SAME, POD_POD_OTHER, NODE_POD_SAME, NODE_POD_OTHER} <= kinds, family
    # the real kube-proxy in front of one probe-a pod per node: every Service cell kind, probed
    # with the same probes as in the lab (a server in each endpoint, a client per Service)
    # (IPv4 Services: the Service probes speak IPv4; an IPv6-only cluster has no Service cells)
    kinds = {cell.case.kind for cell in result.cells}
    if "ipv4" in families:
        assert [s.name for s in inventory.services] == ["probe-tcp", "probe-udp"]
        assert all(len(s.endpoints) == nodes for s in inventory.services)
        assert set(SERVICE_KINDS) <= kinds
    assert result.ok, f"cells not ok:\n{wrong_cells(result)}"


# --- disruptions --------------------------------------------------------------------------------


def test_a_deleted_pods_address_is_released_and_reused(kind_lab: KindLab) -> None:
    """Delete a pod: its reservation disappears from the node's store; point the store's
    round-robin cursor just before that address and the next pod on the node gets it again
    (a leaked reservation would make it skip the address)."""
    node = sorted(node_facts(kind_lab))[-1]
    store = f"{IPAM_DATA_DIR}/{NETWORK_NAME}"
    image = kind_lab.settings.image
    names = ("ipam-reuse-1", "ipam-reuse-2")
    try:
        kind_lab.apply([pod_manifest(names[0], node, image)])
        kind_lab.kubectl("wait", "-n", PROBE_NAMESPACE, "--for=condition=Ready", f"pod/{names[0]}",
                         "--timeout=120s")  # fmt: skip
        first = kind_lab.kubectl_json("get", "pod", "-n", PROBE_NAMESPACE, names[0])
        address = first["status"]["podIP"]
        addresses = [entry["ip"] for entry in first["status"].get("podIPs", [])] or [address]
        listed = kind_lab.node_exec(node, ["ls", store]).split()
        assert set(addresses) <= set(listed)  # a reservation of each family

        kind_lab.kubectl("delete", "pod", "-n", PROBE_NAMESPACE, names[0], "--wait=true")
        wait_until(
            f"{', '.join(addresses)} released on {node}",
            lambda: not set(addresses) & set(kind_lab.node_exec(node, ["ls", store]).split()),
        )

        # each family has its round-robin cursor: .0 for IPv4, .1 for IPv6
        cursor = "last_reserved_ip.1" if family_of(address) == 6 else "last_reserved_ip.0"
        before = str(ipaddress.ip_address(address) - 1)
        kind_lab.node_exec(node, ["tee", f"{store}/{cursor}"], stdin=before)
        kind_lab.apply([pod_manifest(names[1], node, image)])
        kind_lab.kubectl("wait", "-n", PROBE_NAMESPACE, "--for=condition=Ready", f"pod/{names[1]}",
                         "--timeout=120s")  # fmt: skip
        second = kind_lab.kubectl_json("get", "pod", "-n", PROBE_NAMESPACE, names[1])
        assert second["status"]["podIP"] == address
    finally:
        kind_lab.kubectl("delete", "pod", "-n", PROBE_NAMESPACE, *names, "--ignore-not-found",
                         "--wait=false", check=False)  # fmt: skip


def test_traffic_keeps_flowing_while_the_agent_restarts(
    kind_lab: KindLab, results_dir: Path, probe_host_pods: dict[str, str]
) -> None:
    """Delete one node's agent pod: its routes and rules stay, so pod traffic to and from that
    node keeps flowing while the DaemonSet replaces the agent, and after."""
    facts = node_facts(kind_lab)
    node, other = sorted(facts)[1], sorted(facts)[0]
    cidr = facts[node][0][1]
    inventory = subset(kind_lab.inventory(), [node, other])
    kinds = (POD_POD_OTHER, NODE_POD_OTHER, POD_POD_SAME)
    kind_lab.kubectl("delete", "pod", "-n", AGENT_NAMESPACE, "-l", AGENT_SELECTOR,
                     f"--field-selector=spec.nodeName={node}", "--wait=false")  # fmt: skip
    assert routes_to(kind_lab, probe_host_pods[other], cidr), "route gone with the agent"
    during = run_matrix(
        kind_lab, inventory, "agent-restart-during", results_dir,
        protocols=("icmp", "tcp"), kinds=kinds,
    )  # fmt: skip
    kind_lab.rollout(AGENT_NAMESPACE, f"daemonset/{AGENT_DAEMONSET}")
    after = run_matrix(
        kind_lab, inventory, "agent-restart-after", results_dir,
        protocols=("icmp", "tcp"), kinds=kinds,
    )  # fmt: skip
    assert during.ok, f"while the agent restarted:\n{wrong_cells(during)}"
    assert after.ok, f"after the agent restarted:\n{wrong_cells(after)}"
    assert routes_to(kind_lab, probe_host_pods[other], cidr)


def test_a_joining_node_is_routed_everywhere_and_a_leaving_one_forgotten(
    kind_lab: KindLab, probe_host_pods: dict[str, str]
) -> None:
    """A Node object appears (no kubelet behind it: only the API matters to the agents) with a
    podCIDR and an address on the nodes' network of each family the cluster has; every agent
    routes to each, through the watch. Deleted, its routes go away everywhere."""
    facts = node_facts(kind_lab)
    taken = {item for families in facts.values() for pair in families for item in pair}
    phantom = []  # (address, pod CIDR) of each family
    for some_ip, _cidr in next(iter(facts.values())):
        address = ipaddress.ip_address(some_ip)
        phantom_ip = str(type(address)((int(address) & ~0xFF) | 0xFA))
        cluster = next(c for c in pod_subnet(kind_lab) if family_of(c) == address.version)
        per_node = 24 if address.version == 4 else 64
        network = ipaddress.ip_network(cluster)
        start = int(network.network_address) + 250 * 2 ** (network.max_prefixlen - per_node)
        phantom_cidr = f"{ipaddress.ip_address(start)}/{per_node}"
        assert phantom_ip not in taken and phantom_cidr not in taken
        phantom.append((phantom_ip, phantom_cidr))
    name = f"{kind_lab.settings.cluster_name}-phantom"
    addresses = [{"type": "InternalIP", "address": ip} for ip, _cidr in phantom]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"minicni.dev/e2e": "phantom"}},
        "spec": {
            "podCIDR": phantom[0][1],
            "podCIDRs": [cidr for _ip, cidr in phantom],
            "taints": [{"key": "minicni.dev/phantom", "effect": "NoSchedule"}],
        },
        "status": {"addresses": addresses},
    }
    status = {"status": {"addresses": addresses}}

    def routed_via(handle: str, cidr: str, gateway: str) -> bool:
        return f"via {gateway}" in routes_to(kind_lab, handle, cidr)

    try:
        kind_lab.apply([node])
        kind_lab.kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                         "-p", json.dumps(status))  # fmt: skip
        for real, probe_host in probe_host_pods.items():
            for phantom_ip, phantom_cidr in phantom:
                wait_until(
                    f"{real} routes {phantom_cidr} via {phantom_ip}",
                    functools.partial(routed_via, probe_host, phantom_cidr, phantom_ip),
                )
    finally:
        kind_lab.kubectl("delete", "node", name, "--ignore-not-found", check=False)
    for real, probe_host in probe_host_pods.items():
        for _ip, phantom_cidr in phantom:
            wait_until(
                f"{real} forgets {phantom_cidr}",
                functools.partial(
                    lambda handle, cidr: not routes_to(kind_lab, handle, cidr),
                    probe_host,
                    phantom_cidr,
                ),
            )
