"""The matrix's endpoints on a kind cluster, read from the probe pods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.matrix.executors import NODE, POD, Endpoint, Inventory, Service

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # what ties an EndpointSlice to its Service


def short_node_name(node: str, cluster_name: str) -> str:
    """`minicni-e2e-worker2` -> `worker2`: grids stay narrow."""
    prefix = f"{cluster_name}-"
    return node[len(prefix) :] if node.startswith(prefix) else node


def inventory_from(
    pods: Mapping[str, Any],
    cluster_name: str = "",
    name: str = "kind",
    services: Mapping[str, Any] | None = None,
    slices: Mapping[str, Any] | None = None,
) -> Inventory:
    """The matrix's endpoints from `kubectl get pods -o json` of the probe pods.

    Per node, in node-name order: its pod-network probe pods (probe-a, probe-b), then the node
    itself (its hostNetwork probe pod, whose pod IP is the node's address). Every address of a
    pod (`status.podIPs`: one per family in a dual-stack cluster) is kept, IPv4 first, so the
    matrix probes each family. Pods not running or without an address (a node with no kubelet, a
    pod being replaced) are left out.
    """

    by_node: dict[str, list[Endpoint]] = {}
    for pod in pods.get("items", []):
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        node, ip = spec.get("nodeName"), status.get("podIP")
        if not node or not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels", {})
        role = labels.get("minicni.dev/probe-role")
        short = short_node_name(node, cluster_name)
        handle = f"{meta['namespace']}/{meta['name']}"
        ips = pod_ips(status)
        if role == NODE:
            endpoint = Endpoint(short, NODE, node, ips[0], handle, ips=ips)
        elif role == POD:
            slot = labels.get("minicni.dev/probe", "probe").removeprefix("probe-")
            endpoint = Endpoint(f"{short}/{slot}", POD, node, ips[0], handle, ips=ips)
        else:
            continue
        by_node.setdefault(node, []).append(endpoint)
    ordered = []
    for node in sorted(by_node):
        ordered += sorted(by_node[node], key=lambda e: (e.kind == NODE, e.name))
    found = services_from(services or {}, slices or {}, ordered)
    return Inventory.build(ordered, name=name, services=found)


def services_from(
    services: Mapping[str, Any], slices: Mapping[str, Any], endpoints: Sequence[Endpoint]
) -> list[Service]:
    """The matrix's Services from `kubectl get services,endpointslices -o json`: one per port of
    a ClusterIP Service (TCP or UDP, a numeric target port), its endpoints the ready pods the
    EndpointSlices name -- what kube-proxy programs -- that are in the inventory."""
    by_handle = {e.handle: e.name for e in endpoints if e.kind == POD}
    ready: dict[str, list[str]] = {}
    for endpoint_slice in slices.get("items", []):
        service = endpoint_slice["metadata"].get("labels", {}).get(SERVICE_NAME_LABEL)
        for endpoint in endpoint_slice.get("endpoints") or []:
            target = endpoint.get("targetRef") or {}
            handle = f"{target.get('namespace')}/{target.get('name')}"
            if endpoint.get("conditions", {}).get("ready") and handle in by_handle:
                ready.setdefault(service, []).append(by_handle[handle])
    found = []
    for item in services.get("items", []):
        spec, name = item.get("spec", {}), item["metadata"]["name"]
        if spec.get("type", "ClusterIP") != "ClusterIP" or spec.get("clusterIP") in (None, "None"):
            continue
        if ":" in spec["clusterIP"]:
            continue  # the Service probes speak IPv4 (an IPv6-only cluster has no Service cells)
        for port in spec.get("ports", []):
            proto, target = str(port.get("protocol", "TCP")).lower(), port.get("targetPort")
            if proto not in ("tcp", "udp") or not isinstance(target, int):
                continue
            members = tuple(sorted(dict.fromkeys(ready.get(name, []))))
            if members:
                found.append(
                    Service(name, proto, spec["clusterIP"], int(port["port"]), target, members)
                )
    return found


def pod_ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    """A pod's addresses from its status: `podIPs` (every family), else `podIP`; IPv4 first."""
    listed = [entry.get("ip") for entry in status.get("podIPs") or [] if isinstance(entry, dict)]
    found = [ip for ip in listed if isinstance(ip, str) and ip] or [status["podIP"]]
    return tuple(sorted(dict.fromkeys(found), key=lambda address: ":" in address))
