"""The deployments/ documents a kind cluster runs: the agent's DaemonSet, the probe pods, the kind
config; the names in them the cluster waits on; rendered with the image loaded into kind."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOYMENTS = REPO_ROOT / "deployments"
DOCKERFILE = DEPLOYMENTS / "Dockerfile"
KIND_CONFIG = DEPLOYMENTS / "kind" / "cluster.yaml"
KIND_CONFIGS = {
    "ipv4": KIND_CONFIG,
    "dual": DEPLOYMENTS / "kind" / "cluster-dual-stack.yaml",
    "ipv6": DEPLOYMENTS / "kind" / "cluster-ipv6.yaml",
}
"""The kind config of each IP family the e2e cluster can have (MINICNI_E2E_FAMILY)."""
AGENT_MANIFEST = DEPLOYMENTS / "manifests" / "minicni.yaml"
PROBE_MANIFEST = DEPLOYMENTS / "manifests" / "probes.yaml"

AGENT_NAMESPACE = "kube-system"
AGENT_DAEMONSET = "minicni"
AGENT_SELECTOR = "app.kubernetes.io/name=minicni,app.kubernetes.io/component=agent"
PROBE_NAMESPACE = "minicni-e2e"
PROBE_SELECTOR = "app.kubernetes.io/name=minicni-probe"
PROBE_DAEMONSETS = ("probe-a", "probe-b", "probe-host")
PROBE_SERVICES = ("probe-tcp", "probe-udp")  # ClusterIP Services in front of the probe-a pods
NETWORK_NAME = "minicni"  # the conflist's name: reservations live in <dataDir>/minicni/
IPAM_DATA_DIR = "/var/lib/cni/networks"


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def with_image(documents: Sequence[Mapping[str, Any]], image: str) -> list[dict[str, Any]]:
    """The documents with every workload container running `image` (the one loaded into kind)."""
    rendered: list[dict[str, Any]] = json.loads(json.dumps(list(documents)))  # deep copy
    for doc in rendered:
        pod_spec = doc.get("spec", {}).get("template", {}).get("spec")
        if not pod_spec:
            continue
        for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
            container["image"] = image
            container["imagePullPolicy"] = "IfNotPresent"
    return rendered


def kind_node_count(config_path: Path = KIND_CONFIG) -> int:
    config = yaml.safe_load(config_path.read_text())
    return len(config.get("nodes") or [{"role": "control-plane"}])


def pod_subnets(config_path: Path = KIND_CONFIG) -> list[str]:
    """The cluster's pod CIDRs (kind's `podSubnet`: one per family, comma separated)."""
    config = yaml.safe_load(config_path.read_text())
    text = str(config["networking"]["podSubnet"])
    return [part.strip() for part in text.split(",") if part.strip()]
