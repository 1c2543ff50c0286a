"""minicni on a real multi-node cluster: kind with no CNI, the minicni image, the DaemonSet.

    lab = KindLab(KindSettings.from_env())
    lab.up()        # check prerequisites, build + load the image, create the cluster, deploy, wait
    lab.inventory() # the matrix's endpoints: probe pods and hostNetwork probe pods, per node
    lab.down()

The cluster is created by pytest-kind's `KindCluster` from deployments/kind/cluster.yaml, without
`kind create --wait` (with no CNI the nodes only become Ready once minicni runs). Readiness is then
awaited step by step: nodes registered, the minicni DaemonSet rolled out, nodes Ready, CoreDNS
available (its pods are the first that need the pod network), probe pods running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lab.kind.inventory import inventory_from
from lab.kind.manifests import (
    AGENT_DAEMONSET,
    AGENT_MANIFEST,
    AGENT_NAMESPACE,
    AGENT_SELECTOR,
    DOCKERFILE,
    KIND_CONFIGS,
    PROBE_DAEMONSETS,
    PROBE_MANIFEST,
    PROBE_NAMESPACE,
    PROBE_SELECTOR,
    PROBE_SERVICES,
    REPO_ROOT,
    kind_node_count,
    load_documents,
    with_image,
)
from lab.kind.prereqs import PrerequisiteError, check_prerequisites

if TYPE_CHECKING:
    from lab.matrix.executors import Inventory


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class KindSettings:
    cluster_name: str = "minicni-e2e"
    image: str = "minicni:e2e"  # not `latest`: kind-loaded images are then used, never pulled
    build_image: bool = True
    keep_cluster: bool = False
    node_image: str | None = None  # kindest/node:<version>; default: the one of the kind binary
    timeout_s: int = 300
    workdir: Path = field(default_factory=lambda: REPO_ROOT / ".pytest-kind")
    family: str = "ipv4"  # ipv4, dual or ipv6: which kind config (deployments/kind/) to create

    def __post_init__(self) -> None:
        if self.family not in KIND_CONFIGS:
            raise ValueError(
                f"MINICNI_E2E_FAMILY must be one of {', '.join(KIND_CONFIGS)}, got {self.family!r}"
            )

    @property
    def kind_config(self) -> Path:
        return KIND_CONFIGS[self.family]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> KindSettings:
        """MINICNI_E2E_CLUSTER, MINICNI_E2E_IMAGE, MINICNI_E2E_BUILD=0 (use an image already
        built), MINICNI_E2E_KEEP=1 (keep and reuse the cluster), MINICNI_E2E_NODE_IMAGE,
        MINICNI_E2E_TIMEOUT (seconds per wait), MINICNI_E2E_FAMILY (ipv4, dual or ipv6)."""
        return cls(
            cluster_name=environ.get("MINICNI_E2E_CLUSTER", cls.cluster_name),
            image=environ.get("MINICNI_E2E_IMAGE", cls.image),
            build_image=_env_flag(environ, "MINICNI_E2E_BUILD", True),
            keep_cluster=_env_flag(environ, "MINICNI_E2E_KEEP", False),
            node_image=environ.get("MINICNI_E2E_NODE_IMAGE") or None,
            timeout_s=int(environ.get("MINICNI_E2E_TIMEOUT", cls.timeout_s)),
            family=environ.get("MINICNI_E2E_FAMILY") or cls.family,
        )


class KindLab:
    """A kind cluster running minicni and the probe pods."""

    def __init__(self, settings: KindSettings) -> None:
        self.settings = settings
        self.kubeconfig = settings.workdir / settings.cluster_name / "kubeconfig"
        self._cluster: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> None:
        missing = check_prerequisites()
        if missing:
            raise PrerequisiteError(missing)
        if self.settings.build_image:
            self.build_image()
        self.create_cluster()
        load_image_archive(self.settings.cluster_name, self.settings.image, self.settings.workdir)
        self.deploy()

    def down(self) -> None:
        if self._cluster is not None and not self.settings.keep_cluster:
            self._cluster.delete()

    def delete(self) -> None:
        """Delete the cluster whether or not this process created it (`make kind-down`)."""
        _run_visible(["kind", "delete", "cluster", f"--name={self.settings.cluster_name}"])

    def build_image(self) -> None:
        _run_visible(
            ["docker", "build", "-f", str(DOCKERFILE), "-t", self.settings.image, str(REPO_ROOT)]
        )

    def create_cluster(self) -> None:
        from pytest_kind import KindCluster

        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        kind, kubectl = shutil.which("kind"), shutil.which("kubectl")
        assert kind is not None and kubectl is not None  # checked by up()
        self._cluster = KindCluster(
            self.settings.cluster_name,
            kubeconfig=self.kubeconfig,
            image=self.settings.node_image,
            kind_path=Path(kind),
            kubectl_path=Path(kubectl),
        )
        # `kind create cluster` without --wait; re-uses a cluster of that name if one exists.
        self._cluster.create(config_file=self.settings.kind_config)

    def deploy(self) -> None:
        timeout = f"{self.settings.timeout_s}s"
        image = self.settings.image
        self.apply(with_image(load_documents(AGENT_MANIFEST), image))
        self.wait_for_node_count(kind_node_count(self.settings.kind_config))
        self.rollout(AGENT_NAMESPACE, f"daemonset/{AGENT_DAEMONSET}")
        self.kubectl("wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={timeout}")
        self.rollout("kube-system", "deployment/coredns")
        self.apply(with_image(load_documents(PROBE_MANIFEST), image))
        for daemonset in PROBE_DAEMONSETS:
            self.rollout(PROBE_NAMESPACE, f"daemonset/{daemonset}")
        self.wait_for_service_endpoints(kind_node_count())

    def wait_for_service_endpoints(self, count: int) -> None:
        """Until every probe Service has a ready endpoint on each node (one probe-a pod each):
        what kube-proxy then programs."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            services = self.inventory().services
            ready = {s.name: len(s.endpoints) for s in services}
            if all(ready.get(name, 0) >= count for name in PROBE_SERVICES):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe Services' ready endpoints: {ready}, want {count} each")
            time.sleep(2)

    # -- kubectl -----------------------------------------------------------------------------
    def kubectl_argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            self.kubectl_argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=self.settings.timeout_s + 60,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, documents: Sequence[Mapping[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents, sort_keys=False))

    def rollout(self, namespace: str, target: str) -> None:
        self.kubectl(
            "rollout", "status", "--namespace", namespace, target,
            f"--timeout={self.settings.timeout_s}s",
        )  # fmt: skip

    def wait_for_node_count(self, count: int) -> None:
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            nodes = self.kubectl_json("get", "nodes")["items"]
            if len(nodes) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(nodes)} of {count} kind nodes registered")
            time.sleep(2)

    # -- looking at the cluster --------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return list(self.kubectl_json("get", "nodes")["items"])

    def inventory(self) -> Inventory:
        """The probe pods, and the probe Services with the endpoints kube-proxy knows."""
        pods = self.kubectl_json("get", "pods", "-n", PROBE_NAMESPACE, "-l", PROBE_SELECTOR)
        services = self.kubectl_json("get", "services", "-n", PROBE_NAMESPACE, "-l", PROBE_SELECTOR)
        slices = self.kubectl_json("get", "endpointslices", "-n", PROBE_NAMESPACE)
        return inventory_from(
            pods, self.settings.cluster_name, self.settings.cluster_name, services, slices
        )

    def pod_exec(self, handle: str, argv: Sequence[str], container: str = "probe") -> str:
        """Run a command in a pod ("<namespace>/<pod>"), e.g. `ip route` in a hostNetwork probe
        pod to look at its node's routes."""
        namespace, _, pod = handle.partition("/")
        return self.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *argv)

    def node_exec(self, node: str, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a command on a kind node (a Docker container named after the node)."""
        done = subprocess.run(
            ["docker", "exec", "-i", node, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"on {node}: {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def diagnostics(self) -> str:
        """What a person needs to see when the cluster did not come up right."""
        sections = []
        for title, args in (
            ("nodes", ("get", "nodes", "-o", "wide")),
            ("pods", ("get", "pods", "--all-namespaces", "-o", "wide")),
            ("minicni DaemonSet", ("describe", "daemonset", "-n", AGENT_NAMESPACE, "minicni")),
            (
                "minicni agent logs",
                ("logs", "-n", AGENT_NAMESPACE, "-l", AGENT_SELECTOR, "--tail=80", "--prefix"),
            ),
            ("events", ("get", "events", "--all-namespaces", "--sort-by=.lastTimestamp")),
        ):
            try:
                text = self.kubectl(*args, check=False)
            except (OSError, subprocess.TimeoutExpired) as error:
                text = f"({error})"
            sections.append(f"===== {title}\n{text}")
        return "\n".join(sections)


def load_image_archive(cluster: str, image: str, workdir: Path) -> None:
    """Load `image` into the kind nodes through an archive of this host's platform only.

    `kind load docker-image` fails under Docker's containerd image store, the default of Docker 29
    (kind#3795): its `docker save` keeps the whole multi-platform index while only this platform's
    layers are present, and the nodes' `ctr import --all-platforms` stops at the first missing one.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / f"{cluster}-image.tar"
    save = ["docker", "save", "-o", str(archive), image]
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    supports = subprocess.run(
        ["docker", "save", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    if inspected.returncode == 0 and "--platform" in supports.stdout:  # Docker >= 28
        save[2:2] = ["--platform", inspected.stdout.strip()]
    try:
        _run_visible(save)
        _run_visible(["kind", "load", "image-archive", "--name", cluster, str(archive)])
    finally:
        archive.unlink(missing_ok=True)


def _run_visible(argv: Sequence[str]) -> None:
    """Run a long build step with its output shown (pytest -s) and a clear error if it fails."""
    done = subprocess.run(list(argv), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {done.returncode}")
