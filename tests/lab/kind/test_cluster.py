"""KindLab offline: its settings from the environment, the order it deploys and waits in, and how
the image reaches the nodes."""

from __future__ import annotations

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
    CoreDNS (the first pods on the pod network), then the probe pods."""
    calls: list[tuple[str, ...]] = []
    applied: list[list[str]] = []

    def kubectl(self: KindLab, *args: str, stdin: str | None = None, check: bool = True) -> str:
        calls.append(args)
        if stdin is not None:
            import yaml

            applied.append([doc["kind"] for doc in yaml.safe_load_all(stdin)])
        if args[:2] == ("get", "nodes"):
            return '{"items": [{}, {}, {}]}'
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
    assert applied[1] == ["Namespace", "DaemonSet", "DaemonSet", "DaemonSet"]


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
