"""lab.kind and lab.kubectl, offline: the commands the kubectl executor builds, the prerequisite
report a user sees without Docker or kind, the inventory read from the probe pods, manifests
rendered with the e2e image."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest


def _stand_in_for_lab_executors() -> None:
    """Until branch `lab` (which owns lab/executors.py) is merged, register a copy of the agreed
    interface so these tests run; once it is merged, the real module is used and this does
    nothing."""
    import dataclasses
    import importlib.util
    import types

    if importlib.util.find_spec("lab.executors") is not None:
        return

    @dataclasses.dataclass(frozen=True)
    class Endpoint:
        name: str
        kind: str
        node: str
        ip: str
        handle: str

    @dataclasses.dataclass(frozen=True)
    class Inventory:
        endpoints: tuple[Endpoint, ...]
        name: str = ""

        @classmethod
        def build(cls, endpoints: Iterable[Endpoint], name: str = "") -> Inventory:
            return cls(tuple(endpoints), name)

    module = types.ModuleType("lab.executors")
    module.__dict__.update(POD="pod", NODE="node", Endpoint=Endpoint, Inventory=Inventory)
    sys.modules["lab.executors"] = module


_stand_in_for_lab_executors()

from lab.executors import Endpoint  # noqa: E402
from lab.kind import (  # noqa: E402
    AGENT_MANIFEST,
    PROBE_MANIFEST,
    KindSettings,
    Missing,
    PrerequisiteError,
    check_prerequisites,
    format_missing,
    inventory_from,
    load_documents,
    short_node_name,
    with_image,
)
from lab.kubectl import KubectlExecutor, split_handle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# --- the kubectl executor -----------------------------------------------------------------------

POD = Endpoint(name="worker/a", kind="pod", node="w", ip="10.244.1.5", handle="minicni-e2e/p-a")


def test_kubectl_executor_runs_the_probe_module_in_the_probe_container() -> None:
    argv = ["recv", "--proto", "tcp", "--port", "31000", "--token", "t1"]
    assert KubectlExecutor().command(POD, argv) == [
        "kubectl", "--request-timeout", "30s",
        "exec", "--namespace", "minicni-e2e", "p-a", "--container", "probe",
        "--", "python3", "-m", "lab.probes", *argv,
    ]  # fmt: skip


def test_kubectl_executor_passes_its_kubeconfig_and_binary(tmp_path: Path) -> None:
    executor = KubectlExecutor(kubeconfig=tmp_path / "kc", kubectl="/opt/kubectl", container=None)
    command = executor.command(POD, ["send", "--dst", "10.244.2.7"])
    assert command[:3] == ["/opt/kubectl", "--kubeconfig", str(tmp_path / "kc")]
    assert "--container" not in command
    assert command[-5:] == ["-m", "lab.probes", "send", "--dst", "10.244.2.7"]


def test_kubectl_executor_keeps_probe_arguments_as_separate_words() -> None:
    """No shell in between: an argument with spaces or quotes reaches the probe unchanged."""
    command = KubectlExecutor().command(POD, ["send", "--token", "a b'c"])
    assert command[-1] == "a b'c"


@pytest.mark.parametrize("handle", ["just-a-pod", "/pod", "ns/", "ns/pod/extra"])
def test_kubectl_executor_refuses_a_handle_that_is_not_namespace_slash_pod(handle: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        split_handle(handle)


# --- prerequisites ------------------------------------------------------------------------------


def _which(present: Sequence[str]) -> object:
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_nothing_missing_when_docker_answers_and_kind_and_kubectl_exist() -> None:
    missing = check_prerequisites(
        which=_which(["docker", "kind", "kubectl"]),  # type: ignore[arg-type]
        probe=lambda argv: (True, "28.2.2"),
    )
    assert missing == []


def test_a_docker_client_without_an_engine_is_reported_with_how_to_start_it() -> None:
    """This machine's situation: the docker CLI exists, no engine answers."""
    said = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    missing = check_prerequisites(
        which=_which(["docker", "kubectl"]),  # type: ignore[arg-type]
        probe=lambda argv: (False, said),
    )
    assert [m.what for m in missing] == ["a running Docker engine", "kind"]
    text = format_missing(missing)
    assert said in text
    assert "systemctl start docker" in text
    assert "sigs.k8s.io/kind" in text
    assert text.startswith("the kind e2e suite cannot run: missing a running Docker engine, kind")


def test_every_missing_tool_is_named_with_how_to_get_it() -> None:
    missing = check_prerequisites(which=_which([]), probe=lambda argv: (True, ""))  # type: ignore[arg-type]
    assert [m.what for m in missing] == ["docker", "kind", "kubectl"]
    assert all(m.how_to_get for m in missing)
    error = PrerequisiteError(missing)
    assert "kubectl" in str(error) and error.missing == tuple(missing)


def test_missing_renders_as_a_readable_item() -> None:
    item = Missing("kind", "not on PATH", "go install sigs.k8s.io/kind@v0.27.0")
    expected = "- kind: not on PATH\n    how to get it: go install sigs.k8s.io/kind@v0.27.0"
    assert str(item) == expected


def test_this_machine_reports_what_it_lacks_without_a_traceback() -> None:
    """The real check, as `tox -e e2e` runs it: it must finish quickly and name things."""
    code = "from lab.kind import check_prerequisites, format_missing; m = check_prerequisites(); "
    code += "print(format_missing(m) if m else 'ALL PRESENT')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.startswith(("the kind e2e suite cannot run: missing", "ALL PRESENT"))


# --- inventory ----------------------------------------------------------------------------------


def _pod(
    name: str, node: str, ip: str | None, probe: str, role: str, phase: str = "Running"
) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "minicni-e2e",
            "labels": {"minicni.dev/probe": probe, "minicni.dev/probe-role": role},
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, "podIP": ip},
    }


def test_inventory_has_two_pods_and_the_node_per_node_in_order() -> None:
    pods = {
        "items": [
            _pod("probe-host-x", "mc-worker", "172.18.0.3", "probe-host", "node"),
            _pod("probe-b-1", "mc-worker", "10.244.1.3", "probe-b", "pod"),
            _pod("probe-a-1", "mc-worker", "10.244.1.2", "probe-a", "pod"),
            _pod("probe-a-0", "mc-control-plane", "10.244.0.2", "probe-a", "pod"),
            _pod("probe-a-9", "mc-ghost", None, "probe-a", "pod", phase="Pending"),
        ]
    }
    inventory = inventory_from(pods, cluster_name="mc")
    assert [(e.name, e.kind, e.ip) for e in inventory.endpoints] == [
        ("control-plane/a", "pod", "10.244.0.2"),
        ("worker/a", "pod", "10.244.1.2"),
        ("worker/b", "pod", "10.244.1.3"),
        ("worker", "node", "172.18.0.3"),
    ]
    assert inventory.endpoints[-1].handle == "minicni-e2e/probe-host-x"
    assert inventory.endpoints[-1].node == "mc-worker"


def test_short_node_name_drops_the_cluster_prefix_only() -> None:
    assert short_node_name("minicni-e2e-worker2", "minicni-e2e") == "worker2"
    assert short_node_name("node-1", "minicni-e2e") == "node-1"


# --- manifests and settings ---------------------------------------------------------------------


def test_every_container_runs_the_e2e_image_and_the_source_is_untouched() -> None:
    documents = load_documents(AGENT_MANIFEST) + load_documents(PROBE_MANIFEST)
    rendered = with_image(documents, "minicni:e2e")
    images = [
        c["image"]
        for doc in rendered
        if "template" in doc.get("spec", {})
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert len(images) == 4 and set(images) == {"minicni:e2e"}
    assert "minicni:e2e" not in str(documents)


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


def test_e2e_run_without_docker_or_kind_stops_at_once_naming_them() -> None:
    """What `tox -e e2e` does on a machine like this one: no test runs, no traceback, exit 2."""
    from lab.kind import check_prerequisites

    if not check_prerequisites():
        pytest.skip("Docker, kind and kubectl are all here: the e2e suite would really run")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "e2e", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "the kind e2e suite cannot run: missing" in output
    assert "how to get it" in output
    assert "Traceback" not in output
    assert not re.search(r"\d+ (passed|failed|error)", output), "tests ran"


def test_deploy_applies_then_waits_step_by_step_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bring-up order a kind cluster with no CNI needs: agent first, then nodes Ready, then
    CoreDNS (the first pods on the pod network), then the probe pods."""
    from lab.kind import KindLab

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
    assert applied[0] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    assert applied[1] == ["Namespace", "DaemonSet", "DaemonSet", "DaemonSet"]


def test_the_image_reaches_kind_through_an_archive_of_this_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not `kind load docker-image`, which fails under Docker 29's containerd image store
    (kind#3795): `docker save --platform` of the host's platform, then `kind load image-archive`."""
    from lab.kind import load_image_archive

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
