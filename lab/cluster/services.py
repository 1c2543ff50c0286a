"""The lab's ClusterIP Services on its nodes: kube-proxy's rules (`lab.cluster.kubeproxy`) from
the plan's Services and the pods' addresses, applied to every node as one iptables-restore, in
the iptables backend the node uses (detected as the agent detects it, inside the node).

No route is added for the Service CIDR. Like kube-proxy, the lab relies on each node's default
route: a node's own packet to a ClusterIP needs some route before OUTPUT's DNAT picks the
endpoint, and a pod's packet reaches its node's PREROUTING through the pod's default route. The
nodes' default route points at the lab's switch or router namespace, so a packet no rule DNATs
ends there (dropped, or answered "unreachable") and never leaves the lab.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from lab.cluster.kubeproxy import ServiceEndpoint, ServicePort, render_ruleset
from lab.matrix.executors import Service
from lab.topology import LabPlan, NodePlan, ServicePlan
from minicni.agent.apply import xtables
from minicni.agent.apply.xtables import Detector


class KubeProxyError(RuntimeError):
    pass


def service_ports(
    services: Sequence[ServicePlan], pod_ips: Mapping[str, str]
) -> list[tuple[ServicePort, list[ServiceEndpoint]]]:
    """kube-proxy's view of the lab's Services: each port with its endpoints' addresses."""
    return [
        (
            ServicePort(
                service.namespace,
                service.name,
                service.port_name,
                service.protocol,
                service.cluster_ip,
                service.port,
            ),
            [ServiceEndpoint(pod_ips[pod], service.target_port) for pod in service.endpoints],
        )
        for service in services
    ]


def matrix_services(services: Sequence[ServicePlan]) -> tuple[Service, ...]:
    """The matrix's view: what to probe, and which pods of the inventory answer."""
    return tuple(
        Service(s.name, s.protocol, s.cluster_ip, s.port, s.target_port, s.endpoints)
        for s in services
    )


class NodeDetector(Detector):
    """The agent's backend detection, run inside a node's namespace."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        super().__init__(runner=self.run)

    def run(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return xtables.run(["ip", "netns", "exec", self.netns, *argv], stdin)

    def legacy_tables(self, version: int = 4) -> set[str]:
        names = "ip6_tables_names" if version == 6 else "ip_tables_names"
        done = self.run(["cat", f"/proc/net/{names}"])  # per namespace
        return set(done.stdout.split()) if done.returncode == 0 else set()


def install(lab: LabPlan, pod_ips: Mapping[str, str]) -> dict[str, str]:
    """kube-proxy's rules on every node; returns the backend each node got them in."""
    ports = service_ports(lab.services, pod_ips)
    return {node.name: install_on(node, ports, lab.topology.cluster_cidr) for node in lab.nodes}


def install_on(
    node: NodePlan,
    ports: Sequence[tuple[ServicePort, Sequence[ServiceEndpoint]]],
    cluster_cidr: str,
) -> str:
    detector = NodeDetector(node.netns)
    backend = detector.detect().backend
    saved = detector.run([backend.binary("iptables-save"), "-t", "nat"])
    if saved.returncode != 0:
        raise KubeProxyError(f"{node.name}: iptables-save failed: {saved.stderr.strip()}")
    present = {line for line in saved.stdout.splitlines() if line.startswith("-A ")}
    ruleset = render_ruleset(ports, cluster_cidr, present)
    restore = [backend.binary("iptables-restore"), "--noflush", "--wait", "5"]
    done = detector.run(restore, ruleset)
    if done.returncode != 0:
        raise KubeProxyError(f"{node.name}: {restore[0]} failed: {done.stderr.strip()}")
    return backend.value
