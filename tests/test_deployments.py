"""deployments/, checked offline: the manifests validate against the Kubernetes schemas and say
what the issue asks (least privilege, host paths, probes), the kind config has the fields the e2e
relies on, the Dockerfile is pinned, and the image and manifests agree with the agent's flags."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from minicni.agent.service import cli

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deployments"
AGENT = DEPLOY / "manifests" / "minicni.yaml"
PROBES = DEPLOY / "manifests" / "probes.yaml"
KIND = DEPLOY / "kind" / "cluster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# kind v0.27's default node (1.32) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
AGENT_FLAGS = {
    "node-name", "cluster-cidr", "backend", "nodes-file", "kubeconfig", "cni-conf-dir",
    "cni-bin-dir", "state-dir", "health-addr", "resync-seconds", "once", "ipam-data-dir",
    "plugin-install", "plugin-dir", "plugin-log-file", "cni-exclusive", "install-only",
    "cni-socket",
}  # fmt: skip


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents(path) if doc["kind"] == kind]


def agent_daemonset() -> dict[str, Any]:
    (daemonset,) = by_kind(AGENT, "DaemonSet")
    return daemonset


def agent_container() -> dict[str, Any]:
    (container,) = agent_daemonset()["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [AGENT, PROBES], ids=lambda p: p.name)
def test_manifests_validate_strictly_against_kubernetes_schemas(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_role_grants_only_reading_the_two_config_maps_that_say_the_pod_cidr() -> None:
    (role,) = by_kind(AGENT, "Role")
    assert role["metadata"]["namespace"] == "kube-system"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["kubeadm-config", "kube-proxy"],
            "verbs": ["get"],
        }
    ]
    (binding,) = by_kind(AGENT, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "minicni"}  # fmt: skip
    assert binding["subjects"][0]["name"] == "minicni"


def test_cluster_role_grants_only_reading_nodes_and_patching_their_status() -> None:
    (role,) = by_kind(AGENT, "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "nodes/status", "patch"),
    }
    (binding,) = by_kind(AGENT, "ClusterRoleBinding")
    (account,) = by_kind(AGENT, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kube-system"}
    ]
    assert agent_daemonset()["spec"]["template"]["spec"]["serviceAccountName"] == "minicni"


def test_agent_runs_on_every_linux_node_in_the_host_network_as_a_critical_pod() -> None:
    daemonset = agent_daemonset()
    spec = daemonset["spec"]["template"]["spec"]
    assert daemonset["metadata"]["namespace"] == "kube-system"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}  # not on Windows nodes
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]  # every taint, every effect


def test_agent_has_only_the_capabilities_it_needs() -> None:
    security = agent_container()["securityContext"]
    assert security.get("privileged", False) is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert sorted(security["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]


def test_host_paths_are_mounted_where_the_host_has_them() -> None:
    """The launcher names the runtime by its path, and the conflist names the IPAM dir: both must
    mean the same thing inside the agent's container and on the node."""
    spec = agent_daemonset()["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in agent_container()["volumeMounts"]}
    required = {
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/lib/cni/networks",
        "/opt/minicni",
        "/run/xtables.lock",
        "/run/minicni",  # the CNI socket's directory: the shim on the host connects there
    }
    assert required <= set(host_paths.values())
    for name, host_path in host_paths.items():
        assert mounts[name] == host_path
    lock = next(v for v in spec["volumes"] if v["name"] == "xtables-lock")
    assert lock["hostPath"]["type"] == "FileOrCreate"  # iptables creates it if nobody has yet


def test_agent_environment_names_real_flags_and_matches_the_mounts() -> None:
    env = {item["name"]: item for item in agent_container()["env"]}
    for name in env:
        assert name.startswith("MINICNI_")
        flag = name.removeprefix("MINICNI_").lower().replace("_", "-")
        assert flag in AGENT_FLAGS, f"{name} is not a minicni-agent flag"
    assert env["MINICNI_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["MINICNI_PLUGIN_INSTALL"]["value"] == "bundle"
    mounts = {m["mountPath"] for m in agent_container()["volumeMounts"]}
    for key in ("CNI_BIN_DIR", "CNI_CONF_DIR", "IPAM_DATA_DIR", "PLUGIN_DIR", "STATE_DIR"):
        assert env[f"MINICNI_{key}"]["value"] in mounts
    assert os.path.dirname(env["MINICNI_CNI_SOCKET"]["value"]) in mounts


def test_agent_environment_matches_the_agent_parser() -> None:
    """Cross-check with the agent's own command line."""
    parser = cli.build_parser({})
    known = {option for action in parser._actions for option in action.option_strings}
    for item in agent_container()["env"]:
        flag = "--" + item["name"].removeprefix("MINICNI_").lower().replace("_", "-")
        assert flag in known, f"{item['name']} has no {flag} in minicni-agent"


def test_health_probes_hit_the_loopback_address_the_agent_serves() -> None:
    container = agent_container()
    env = {item["name"]: item.get("value") for item in container["env"]}
    host, _, port = env["MINICNI_HEALTH_ADDR"].rpartition(":")
    assert host == "127.0.0.1"  # /metrics is not open on the node's interfaces
    assert "ports" not in container  # nothing listens on the node's addresses
    probe = {"host": "127.0.0.1", "port": int(port)}
    assert container["livenessProbe"]["httpGet"] == {**probe, "path": "/healthz"}
    assert container["readinessProbe"]["httpGet"] == {**probe, "path": "/readyz"}
    assert container["startupProbe"]["httpGet"] == {**probe, "path": "/healthz"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_an_init_container_installs_with_only_the_capability_writing_needs() -> None:
    spec = agent_daemonset()["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["args"] == ["--install-only"]
    assert init["image"] == agent_container()["image"]
    assert init["env"] == agent_container()["env"]  # the same settings: the same conflist
    security = init["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert {"/opt/cni/bin", "/etc/cni/net.d", "/opt/minicni"} <= mounts


def test_an_image_that_is_not_there_fails_at_once_and_the_manifest_says_how_to_load_it() -> None:
    """The image is not published: Never gives ErrImageNeverPull instead of a pull retried in
    ImagePullBackOff, and the header says what to build and load."""
    spec = agent_daemonset()["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["imagePullPolicy"] == "Never"
    header = AGENT.read_text().split("apiVersion:", 1)[0]
    assert "make image" in header and "kind load image-archive" in header
    assert "ctr -n k8s.io images import" in header


def test_kind_config_has_no_cni_one_control_plane_two_workers_and_a_pod_subnet() -> None:
    config = yaml.safe_load(KIND.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"]["disableDefaultCNI"] is True
    pod_subnet = ipaddress.IPv4Network(config["networking"]["podSubnet"])
    assert pod_subnet.prefixlen <= 16  # room for a /24 per node
    roles = [node["role"] for node in config["nodes"]]
    assert sorted(roles) == ["control-plane", "worker", "worker"]
    env = {item["name"]: item.get("value") for item in agent_container()["env"]}
    assert env["MINICNI_CLUSTER_CIDR"] == "auto"  # read from the cluster, cannot disagree


@pytest.mark.parametrize(
    ("name", "family", "versions"),
    [("cluster-dual-stack.yaml", "dual", (4, 6)), ("cluster-ipv6.yaml", "ipv6", (6,))],
)
def test_the_dual_stack_and_ipv6_kind_configs_have_a_subnet_per_family(
    name: str, family: str, versions: tuple[int, ...]
) -> None:
    """kind's ipFamily, a pod and a service subnet per family; the agent's `auto` reads the
    podSubnet as kubeadm writes it (kubeadm-config) and finds a cluster CIDR of each family."""
    from minicni.agent.service.sources.kube import cluster_cidrs_in

    config = yaml.safe_load((DEPLOY / "kind" / name).read_text())
    base = yaml.safe_load(KIND.read_text())
    networking = config["networking"]
    assert networking["ipFamily"] == family and networking["disableDefaultCNI"] is True
    pods = [ipaddress.ip_network(c) for c in networking["podSubnet"].split(",")]
    services = [ipaddress.ip_network(c) for c in networking["serviceSubnet"].split(",")]
    assert tuple(n.version for n in pods) == tuple(n.version for n in services) == versions
    for network in pods:  # room for kube-controller-manager's /24 or /64 per node
        assert network.prefixlen <= (16 if network.version == 4 else 56)
    cluster = cluster_cidrs_in(networking["podSubnet"])
    assert cluster is not None and cluster.versions == versions
    assert config["nodes"] == base["nodes"]


def test_probe_workloads_put_two_pods_and_a_host_network_pod_on_every_node() -> None:
    daemonsets = by_kind(PROBES, "DaemonSet")
    roles = {}
    for daemonset in daemonsets:
        spec = daemonset["spec"]["template"]["spec"]
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        assert {"operator": "Exists"} in spec["tolerations"]  # the control plane too
        (container,) = spec["containers"]
        assert container["name"] == "probe"  # the kubectl executor's default container
        assert container["command"] == ["sleep", "infinity"]
        assert "NET_RAW" in container["securityContext"]["capabilities"]["add"]
        roles[daemonset["metadata"]["name"]] = (labels["minicni.dev/probe-role"], spec)
    assert {name: role for name, (role, _) in roles.items()} == {
        "probe-a": "pod",
        "probe-b": "pod",
        "probe-host": "node",
    }
    assert roles["probe-host"][1]["hostNetwork"] is True
    assert not roles["probe-a"][1].get("hostNetwork")


def test_dockerfile_is_built_from_a_pinned_base_and_runs_the_agent() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    for line in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
        assert line == "${PYTHON_IMAGE}"
    assert ":latest" not in text
    assert 'ENTRYPOINT ["minicni-agent"]' in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"]  # context is the repo, only what is needed


def test_a_service_per_protocol_fronts_the_probe_a_pods() -> None:
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(PROBES, "Service")}
    assert sorted(services) == ["probe-tcp", "probe-udp"]
    (probe_a,) = [d for d in by_kind(PROBES, "DaemonSet") if d["metadata"]["name"] == "probe-a"]
    pod_labels = probe_a["spec"]["template"]["metadata"]["labels"]
    for spec in services.values():
        assert spec["type"] == "ClusterIP"
        assert spec["selector"].items() <= pod_labels.items()  # one endpoint per node
        (port,) = spec["ports"]
        assert port["targetPort"] == 30080  # where the runner's probe server listens
    assert [p["protocol"] for s in services.values() for p in s["ports"]] == ["TCP", "UDP"]
