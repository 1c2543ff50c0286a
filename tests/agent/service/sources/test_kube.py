"""Kubernetes Node objects -> the same planning input as the static file (client model objects)."""

import datetime
import threading
from typing import Any

import pytest
from kubernetes.client import (
    V1ListMeta,
    V1Node,
    V1NodeAddress,
    V1NodeList,
    V1NodeSpec,
    V1NodeStatus,
    V1ObjectMeta,
)

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError
from minicni.agent.service.sources.kube import (
    KubeNodeSource,
    entry_from_node,
    network_available_patch,
)

# The generated models renamed podCIDRs' attribute: `pod_cid_rs` in older clients, `pod_cidrs` now.
CIDRS_FIELD = (
    "pod_cidrs" if "pod_cidrs" in getattr(V1NodeSpec, "model_fields", {}) else "pod_cid_rs"
)


def k8s_node(
    name: str,
    addresses: list[tuple[str, str]],
    pod_cidr: str | None = None,
    pod_cidrs: list[str] | None = None,
) -> V1Node:
    return V1Node(
        metadata=V1ObjectMeta(name=name, resource_version="7"),
        spec=V1NodeSpec(pod_cidr=pod_cidr, **{CIDRS_FIELD: pod_cidrs}),
        status=V1NodeStatus(addresses=[V1NodeAddress(address=a, type=t) for t, a in addresses]),
    )


def test_internal_ip_and_pod_cidr() -> None:
    node = k8s_node(
        "kind-worker",
        [("Hostname", "kind-worker"), ("InternalIP", "172.18.0.3")],
        pod_cidr="10.244.1.0/24",
        pod_cidrs=["10.244.1.0/24"],
    )
    assert entry_from_node(node) == NodeEntry("kind-worker", "172.18.0.3", ("10.244.1.0/24",))


def test_dual_stack_prefers_ipv4_address_and_keeps_all_cidrs() -> None:
    node = k8s_node(
        "n1",
        [("InternalIP", "fc00::3"), ("InternalIP", "172.18.0.3"), ("ExternalIP", "1.2.3.4")],
        pod_cidr="fd00:10:244:1::/64",
        pod_cidrs=["fd00:10:244:1::/64", "10.244.1.0/24"],
    )
    entry = entry_from_node(node)
    assert entry.internal_ip == "172.18.0.3"
    assert entry.pod_cidrs == ("fd00:10:244:1::/64", "10.244.1.0/24")


def test_node_without_internal_ip_or_cidr() -> None:
    node = k8s_node("n1", [("ExternalIP", "1.2.3.4")])
    assert entry_from_node(node) == NodeEntry("n1", None, ())


def test_node_with_empty_status() -> None:
    node = V1Node(metadata=V1ObjectMeta(name="n1"), spec=None, status=None)
    assert entry_from_node(node) == NodeEntry("n1", None, ())


def test_network_available_patch() -> None:
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    condition = network_available_patch(now)["status"]["conditions"][0]
    assert condition["type"] == "NetworkUnavailable"
    assert condition["status"] == "False"
    assert condition["lastTransitionTime"] == "2024-05-01T12:00:00Z"


class FakeApi:
    """Answers list_node with fixed nodes; a watch on it returns nothing (no events)."""

    def __init__(self, nodes: list[V1Node]) -> None:
        self.nodes = nodes
        self.patched: list[tuple[str, Any]] = []

    def list_node(self, **kwargs: Any) -> V1NodeList:
        if kwargs.get("watch"):
            raise RuntimeError("no watch in this fake")
        return V1NodeList(items=self.nodes, metadata=V1ListMeta(resource_version="7"))

    def patch_node_status(self, name: str, body: Any) -> None:
        self.patched.append((name, body))


def test_source_lists_nodes_and_reports_ready() -> None:
    api = FakeApi([k8s_node("n1", [("InternalIP", "172.18.0.2")], "10.244.0.0/24")])
    source = KubeNodeSource(None, relist_seconds=60, api=api)
    try:
        assert source.wait(5, threading.Event()) is True
        assert source.fetch() == [NodeEntry("n1", "172.18.0.2", ("10.244.0.0/24",))]
        source.report_ready("n1")
        assert api.patched[0][0] == "n1"
    finally:
        source.close()


def test_source_without_a_listing_raises() -> None:
    class Down(FakeApi):
        def list_node(self, **kwargs: Any) -> V1NodeList:
            raise ConnectionError("API down")

    source = KubeNodeSource(None, relist_seconds=60, api=Down([]))
    try:
        with pytest.raises(SourceError):
            source.fetch()
    finally:
        source.close()
