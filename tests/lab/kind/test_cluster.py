"""KindLab offline: its settings from the environment, the order it deploys and waits in, and how
the image reaches the nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.kind.cluster import KindLab, KindSettings, load_image_archive


def test_settings_from_the_environment() -> None:
    settings = KindSettings.from_env(
        {
            "MINICNI_E2E_CLUSTER": "c1",
            "MINICNI_E2E_IMAGE": "minicni:pr-7",
            "MINICNI_E2E_BUILD": "0",
            "MINICNI_E2E_KEEP": "yes",
            "MINICNI_E2E_NODE_IMAGE": "kindest/node:v1.32.2",
        }
    )
    assert (settings.cluster_name, settings.image) == ("c1", "minicni:pr-7")
    assert (settings.build_image, settings.keep_cluster) == (False, True)
    assert settings.node_image == "kindest/node:v1.32.2"
    defaults = KindSettings.from_env({})
    assert defaults.build_image and not defaults.keep_cluster and defaults.node_image is None
    assert not defaults.image.endswith(":latest")


def test_deploy_applies_then_waits_step_by_step_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bring-up order a kind cluster with no CNI needs: agent first, then nodes Ready, then
    CoreDNS (the first pods on the pod network), then the probe pods, then the probe Services'
    endpoints (what kube-proxy programs)."""
    calls: list[tuple[str, ...]] = []
    applied: list[list[str]] = []
    nodes = ("mc-control-plane", "mc-worker", "mc-worker2")
    probes = [
        {
            "metadata": {
                "name": f"probe-a-{i}",
                "namespace": "minicni-e2e",
                "labels": {"minicni.dev/probe": "probe-a", "minicni.dev/probe-role": "pod"},
            },
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": f"10.244.{i}.2"},
        }
        for i, node in enumerate(nodes)
    ]
    services = [
        {
            "metadata": {"name": name},
            "spec": {"clusterIP": f"10.96.0.{20 + i}", "ports": [{"protocol": proto, "port": 80,
                                                                   "targetPort": 30080}]},
        }
        for i, (name, proto) in enumerate((("probe-tcp", "TCP"), ("probe-udp", "UDP")))
    ]  # fmt: skip
    slices = [
        {
            "metadata": {"labels": {"kubernetes.io/service-name": name}},
            "endpoints": [
                {"conditions": {"ready": True}, "targetRef": {"namespace": "minicni-e2e",
                                                              "name": f"probe-a-{i}"}}
                for i in range(3)
            ],
        }
        for name in ("probe-tcp", "probe-udp")
    ]  # fmt: skip
    answers = {"nodes": [{}, {}, {}], "pods": probes, "services": services,
               "endpointslices": slices}  # fmt: skip

    def kubectl(self: KindLab, *args: str, stdin: str | None = None, check: bool = True) -> str:
        calls.append(args)
        if stdin is not None:
            import yaml

            applied.append([doc["kind"] for doc in yaml.safe_load_all(stdin)])
        if args[0] == "get":
            return json.dumps({"items": answers[args[1]]})
        return ""

    monkeypatch.setattr(KindLab, "kubectl", kubectl)
    KindLab(KindSettings(image="minicni:t", timeout_s=5)).deploy()
    steps = [" ".join(c[:4]) for c in calls]
    assert steps == [
        "apply -f -",
        "get nodes -o json",
        "rollout status --namespace kube-system",
        "wait --for=condition=Ready nodes --all",
        "rollout status --namespace kube-system",
        "apply -f -",
        "rollout status --namespace minicni-e2e",
        "rollout status --namespace minicni-e2e",
        "rollout status --namespace minicni-e2e",
        "get pods -n minicni-e2e",
        "get services -n minicni-e2e",
        "get endpointslices -n minicni-e2e",
    ]
    assert calls[2][4] == "daemonset/minicni" and calls[4][4] == "deployment/coredns"
    assert applied[0] == [
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "RoleBinding",
        "ClusterRoleBinding",
        "DaemonSet",
    ]
    assert applied[1] == ["Namespace", "DaemonSet", "DaemonSet", "DaemonSet", "Service", "Service"]


def test_the_image_reaches_kind_through_an_archive_of_this_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not `kind load docker-image`, which fails under Docker 29's containerd image store
    (kind#3795): `docker save --platform` of the host's platform, then `kind load image-archive`."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = {
        "docker": 'case "$1 $2" in\n'
        '  "image inspect") echo linux/amd64 ;;\n'
        '  "save --help") echo "  --platform string   Save only the given platform" ;;\n'
        '  save*) while [ "$1" != -o ]; do shift; done; echo archive > "$2" ;;\n'
        "esac\n",
        "kind": 'test -s "$5" || exit 9\n',
    }
    for name, body in fake.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    load_image_archive("c1", "minicni:e2e", tmp_path / "work")
    archive = tmp_path / "work" / "c1-image.tar"
    lines = calls.read_text().splitlines()
    assert f"docker save --platform linux/amd64 -o {archive} minicni:e2e" in lines
    assert lines[-1] == f"kind load image-archive --name c1 {archive}"
    assert not any("docker-image" in line for line in lines)
    assert not archive.exists()  # the archive goes once loaded


def test_the_family_picks_the_kind_config_and_a_wrong_one_is_named() -> None:
    from lab.kind.manifests import pod_subnets

    assert KindSettings.from_env({}).kind_config.name == "cluster.yaml"
    dual = KindSettings.from_env({"MINICNI_E2E_FAMILY": "dual"})
    assert dual.kind_config.name == "cluster-dual-stack.yaml"
    assert pod_subnets(dual.kind_config) == ["10.244.0.0/16", "fd00:10:244::/56"]
    six = KindSettings.from_env({"MINICNI_E2E_FAMILY": "ipv6"})
    assert pod_subnets(six.kind_config) == ["fd00:10:244::/56"]
    with pytest.raises(ValueError, match="MINICNI_E2E_FAMILY"):
        KindSettings.from_env({"MINICNI_E2E_FAMILY": "ipv5"})
