"""The agent DaemonSet's pod spec as a lab node's container engine runs it: what kubelet does.

Reads the DaemonSet in deployments/manifests/minicni.yaml (the manifest users apply, never a copy
of it) and turns each of its containers — the init containers, run to completion one after the
other, then the agent — into `podman run` arguments for one lab node:

- env (values, and `fieldRef`s resolved as the API server would for a hostNetwork pod) and the
  container's command and args;
- securityContext: capabilities dropped and added as written, read-only root file system,
  no privilege escalation, user and group when given; a privileged container is refused;
- hostPath volumes: each `<path>` is `<node root><path>` on the lab host (a per-node directory
  standing in for that node's file system), bind-mounted at the container's mountPath;
  emptyDir volumes are tmpfs (of their sizeLimit);
- hostNetwork: the node's network namespace (`--network ns:/run/netns/<node>`);
- resources: the memory limit and the CPU request (as kubelet sets cpu shares);
- the probes, as HTTP GETs the lab polls as kubelet would.

Only the node source differs, since no API server runs in the lab: the nodes file is mounted
read-only (its directory, so that a file replaced by rename is seen) and named by
`MINICNI_NODES_FILE`. Anything in the pod spec this module cannot honour is an error, never
silently dropped. Pure: no process is started and nothing is written here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "deployments" / "manifests" / "minicni.yaml"
DAEMONSET_NAME = "minicni"
CONTAINER_NAME = "agent"
# Where the lab's nodes file is mounted in the container, and the variable that names it.
NODES_DIR_IN_CONTAINER = "/etc/minicni-lab"
NODES_FILE_ENV = "MINICNI_NODES_FILE"
POD_NAMESPACE = "kube-system"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>[a-zA-Z]*)$")
_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
# hostPath types this translation can stand in for (the lab creates what "OrCreate" asks for).
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File")


class DaemonSetError(ValueError):
    """The manifest says something the lab cannot run as written."""


@dataclass(frozen=True)
class HttpProbe:
    """One of the container's probes: an HTTP GET, as kubelet sends it."""

    kind: str  # startup, liveness, readiness
    path: str
    port: int
    host: str | None  # None: the pod's IP, which for a hostNetwork pod is the node's
    scheme: str
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    initial_delay_seconds: int

    def url(self, node_ip: str) -> str:
        return f"{self.scheme.lower()}://{self.host or node_ip}:{self.port}{self.path}"

    @property
    def deadline_seconds(self) -> int:
        """How long kubelet lets it fail before it gives up (a startup probe: before it kills)."""
        return self.initial_delay_seconds + self.period_seconds * self.failure_threshold


@dataclass(frozen=True)
class HostPathMount:
    name: str
    host_path: str
    mount_path: str
    type: str
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    """The parts of one of the pod's containers that decide how it runs."""

    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str | dict[str, Any]], ...]  # name -> value, or its valueFrom
    host_paths: tuple[HostPathMount, ...]
    tmpfs: tuple[tuple[str, int | None], ...]  # mountPath, size limit in bytes
    cap_drop: tuple[str, ...]
    cap_add: tuple[str, ...]
    read_only_root: bool
    no_new_privileges: bool
    run_as_user: int | None
    run_as_group: int | None
    memory_limit: int | None  # bytes
    cpu_request_milli: int | None
    probes: dict[str, HttpProbe] = field(default_factory=dict)

    def env_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.env)


@dataclass(frozen=True)
class AgentPodSpec(ContainerSpec):
    """The agent container, with what the pod decides for all its containers."""

    host_network: bool = False
    termination_grace_seconds: int = 30
    init_containers: tuple[ContainerSpec, ...] = ()


@dataclass(frozen=True)
class LabNode:
    """What differs between the lab's nodes: the rest comes from the manifest."""

    name: str
    ip: str
    netns_path: str  # /run/netns/<node namespace>
    root: str  # the directory standing in for the node's file system ("/")
    nodes_dir: str  # the directory holding the nodes file (mounted read-only)
    nodes_file_name: str = "nodes.json"


# --- reading the manifest ---------------------------------------------------------------------


def load(path: Path = MANIFEST) -> AgentPodSpec:
    with path.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc]
    return parse(documents)


def parse(documents: Sequence[Mapping[str, Any]]) -> AgentPodSpec:
    daemonsets = [
        doc
        for doc in documents
        if doc.get("kind") == "DaemonSet" and doc.get("metadata", {}).get("name") == DAEMONSET_NAME
    ]
    if len(daemonsets) != 1:
        raise DaemonSetError(f"expected one DaemonSet {DAEMONSET_NAME!r}, found {len(daemonsets)}")
    pod = daemonsets[0]["spec"]["template"]["spec"]
    containers = [c for c in pod.get("containers", []) if c.get("name") == CONTAINER_NAME]
    if len(containers) != 1:
        raise DaemonSetError(f"expected one container {CONTAINER_NAME!r} in the DaemonSet")
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    agent = _container(containers[0], pod, volumes)
    init = tuple(_container(c, pod, volumes) for c in pod.get("initContainers", []))
    for container in init:
        if container.probes:
            raise DaemonSetError(f"init container {container.name!r} has probes: not allowed")
    return AgentPodSpec(
        **{f.name: getattr(agent, f.name) for f in fields(ContainerSpec)},
        host_network=bool(pod.get("hostNetwork", False)),
        termination_grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
        init_containers=init,
    )


def _container(
    container: Mapping[str, Any], pod: Mapping[str, Any], volumes: Mapping[str, Mapping[str, Any]]
) -> ContainerSpec:
    name = str(container.get("name", ""))
    host_paths, tmpfs = _mounts(container.get("volumeMounts", []), volumes)
    security = container.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    if security.get("privileged"):
        raise DaemonSetError(f"container {name!r} is privileged, not least privilege: refused")
    capabilities = security.get("capabilities", {})
    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    return ContainerSpec(
        name=name,
        image=str(container["image"]),
        command=tuple(str(a) for a in container.get("command", [])),
        args=tuple(str(a) for a in container.get("args", [])),
        env=tuple(_env_entry(item) for item in container.get("env", [])),
        host_paths=host_paths,
        tmpfs=tmpfs,
        cap_drop=tuple(_capability(c) for c in capabilities.get("drop", [])),
        cap_add=tuple(_capability(c) for c in capabilities.get("add", [])),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        # Kubernetes: allowPrivilegeEscalation defaults to true unless set false.
        no_new_privileges=security.get("allowPrivilegeEscalation", True) is False,
        run_as_user=_optional_int(security.get("runAsUser", pod_security.get("runAsUser"))),
        run_as_group=_optional_int(security.get("runAsGroup", pod_security.get("runAsGroup"))),
        memory_limit=_bytes(limits["memory"]) if "memory" in limits else None,
        cpu_request_milli=_millicpu(requests["cpu"]) if "cpu" in requests else None,
        probes=_probes(container),
    )


def _env_entry(item: Mapping[str, Any]) -> tuple[str, str | dict[str, Any]]:
    name = str(item["name"])
    if not _ENV_NAME.match(name):
        raise DaemonSetError(f"bad environment variable name {name!r}")
    if "valueFrom" in item:
        return name, dict(item["valueFrom"])
    return name, str(item.get("value", ""))


def _mounts(
    mounts: Sequence[Mapping[str, Any]], volumes: Mapping[str, Mapping[str, Any]]
) -> tuple[tuple[HostPathMount, ...], tuple[tuple[str, int | None], ...]]:
    host_paths, tmpfs = [], []
    for mount in mounts:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise DaemonSetError(f"volumeMount {mount['name']!r} names no volume")
        if mount.get("subPath"):
            raise DaemonSetError(f"volumeMount {mount['name']!r}: subPath is not supported")
        mount_path = _absolute(str(mount["mountPath"]), f"mountPath of {mount['name']!r}")
        if "hostPath" in volume:
            kind = str(volume["hostPath"].get("type", ""))
            if kind not in HOST_PATH_TYPES:
                raise DaemonSetError(f"volume {mount['name']!r}: hostPath type {kind!r}")
            host_paths.append(
                HostPathMount(
                    name=str(mount["name"]),
                    host_path=_absolute(str(volume["hostPath"]["path"]), f"{mount['name']!r}"),
                    mount_path=mount_path,
                    type=kind,
                    read_only=bool(mount.get("readOnly", False)),
                )
            )
        elif "emptyDir" in volume:
            limit = (volume["emptyDir"] or {}).get("sizeLimit")
            tmpfs.append((mount_path, _bytes(limit) if limit is not None else None))
        else:
            raise DaemonSetError(f"volume {mount['name']!r}: only hostPath and emptyDir are run")
    return tuple(host_paths), tuple(tmpfs)


def _probes(container: Mapping[str, Any]) -> dict[str, HttpProbe]:
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports", []) if "name" in p}
    probes = {}
    for kind in ("startup", "liveness", "readiness"):
        probe = container.get(f"{kind}Probe")
        if probe is None:
            continue
        get = probe.get("httpGet")
        if get is None:
            raise DaemonSetError(f"{kind}Probe: only httpGet probes are run by the lab")
        port = get["port"]
        if isinstance(port, str):
            if port not in ports:
                raise DaemonSetError(f"{kind}Probe names port {port!r}, which is not declared")
            port = ports[port]
        probes[kind] = HttpProbe(
            kind=kind,
            path=str(get.get("path", "/")),
            port=int(port),
            host=str(get["host"]) if get.get("host") else None,
            scheme=str(get.get("scheme", "HTTP")),
            period_seconds=int(probe.get("periodSeconds", 10)),
            timeout_seconds=int(probe.get("timeoutSeconds", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            initial_delay_seconds=int(probe.get("initialDelaySeconds", 0)),
        )
    return probes


def _capability(name: Any) -> str:
    text = str(name).upper()
    if text != "ALL" and not re.fullmatch(r"[A-Z_]+", text):
        raise DaemonSetError(f"bad capability {name!r}")
    return text.removeprefix("CAP_")


def _absolute(path: str, what: str) -> str:
    normal = posixpath.normpath(path)
    if not path.startswith("/") or ".." in path.split("/") or normal != path.rstrip("/"):
        raise DaemonSetError(f"{what}: {path!r} is not a plain absolute path")
    return normal


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _bytes(quantity: Any) -> int:
    match = _QUANTITY.match(str(quantity))
    if match is None:
        raise DaemonSetError(f"bad quantity {quantity!r}")
    number, suffix = float(match["number"]), match["suffix"]
    scale = _BINARY_SUFFIXES.get(suffix) or _DECIMAL_SUFFIXES.get(suffix)
    if scale is None:
        raise DaemonSetError(f"bad quantity suffix in {quantity!r}")
    return int(number * scale)


def _millicpu(quantity: Any) -> int:
    text = str(quantity)
    if text.endswith("m"):
        return int(text[:-1])
    return int(float(text) * 1000)


# --- one node's container -------------------------------------------------------------------


def node_host_path(node: LabNode, host_path: str) -> str:
    """Where the node's `host_path` is on the lab host: under the node's root directory."""
    return posixpath.join(node.root, host_path.lstrip("/"))


def env_value(spec: AgentPodSpec, name: str) -> str:
    """The value the manifest gives variable `name` itself (not through a fieldRef)."""
    for key, value in spec.env:
        if key == name and isinstance(value, str):
            return value
    raise DaemonSetError(f"the manifest sets no value for {name}")


def node_path(spec: AgentPodSpec, node: LabNode, container_path: str) -> str:
    """Where a path the agent's container writes is on the lab host: through the hostPath volume
    mounted over it (the innermost one), under the node's root directory."""
    container_path = _absolute(container_path, "a path in the container")
    for mount in sorted(spec.host_paths, key=lambda m: len(m.mount_path), reverse=True):
        prefix = mount.mount_path.rstrip("/")
        if container_path == prefix or container_path.startswith(prefix + "/"):
            host_path = mount.host_path.rstrip("/") + container_path[len(prefix) :]
            return node_host_path(node, host_path)
    raise DaemonSetError(f"{container_path} is on no hostPath volume: the node never sees it")


def host_paths_to_create(spec: AgentPodSpec, node: LabNode) -> list[tuple[str, str]]:
    """(path on the lab host, "dir" or "file"): what kubelet creates for the hostPath types, for
    every container of the pod."""
    wanted = []
    for mount in (m for c in (*spec.init_containers, spec) for m in c.host_paths):
        kind = "file" if mount.type in ("FileOrCreate", "File") else "dir"
        wanted.append((node_host_path(node, mount.host_path), kind))
    return wanted


def resolve_env(
    spec: ContainerSpec, node: LabNode, overrides: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The container's environment for `node`; `overrides` replace values the manifest sets (as
    a user edits them), and may not add variables. The nodes file is the only addition."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(spec.env_names())
    if unknown:
        raise DaemonSetError(f"the manifest sets no {', '.join(sorted(unknown))}")
    if NODES_FILE_ENV in spec.env_names():
        raise DaemonSetError(f"the manifest sets {NODES_FILE_ENV}: the lab cannot name its own")
    env = []
    for name, value in spec.env:
        if name in overrides:
            env.append((name, overrides[name]))
        elif isinstance(value, str):
            env.append((name, value))
        else:
            env.append((name, _value_from(name, value, node)))
    env.append((NODES_FILE_ENV, posixpath.join(NODES_DIR_IN_CONTAINER, node.nodes_file_name)))
    return env


def _value_from(name: str, source: Mapping[str, Any], node: LabNode) -> str:
    field_path = source.get("fieldRef", {}).get("fieldPath")
    # A hostNetwork pod's IP is its node's; the pod is named after its node here.
    known = {
        "spec.nodeName": node.name,
        "status.hostIP": node.ip,
        "status.podIP": node.ip,
        "metadata.name": f"{DAEMONSET_NAME}-{node.name}",
        "metadata.namespace": POD_NAMESPACE,
    }
    if field_path not in known:
        raise DaemonSetError(f"{name}: valueFrom {dict(source)!r} cannot be resolved in the lab")
    return known[field_path]


def podman_run_args(
    pod: AgentPodSpec,
    node: LabNode,
    *,
    name: str,
    container: ContainerSpec | None = None,
    image: str | None = None,
    env_overrides: Mapping[str, str] | None = None,
    cgroup_parent: str | None = None,
    labels: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """`podman run` arguments (after any global options) that start one of the pod's containers
    on `node`: the agent (detached), or `container`, one of `pod.init_containers` (run to its
    end in the foreground, then removed, as kubelet runs init containers one after the other).
    `env_overrides` apply to the variables the container sets."""
    if not pod.host_network:
        raise DaemonSetError("the agent must run in the node's network (hostNetwork: true)")
    spec = container or pod
    argv = ["run", "--rm"] if container else ["run", "--detach"]
    argv += ["--name", name, "--pull", "never", "--network", f"ns:{node.netns_path}"]
    for cap in spec.cap_drop:
        argv += ["--cap-drop", cap.lower() if cap == "ALL" else f"CAP_{cap}"]
    for cap in spec.cap_add:
        argv += ["--cap-add", f"CAP_{cap}"]
    if spec.read_only_root:
        # as kubelet: nothing writable but the volumes (podman would add tmpfs on /tmp and /run)
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if spec.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    if spec.run_as_user is not None:
        user = str(spec.run_as_user)
        if spec.run_as_group is not None:
            user += f":{spec.run_as_group}"
        argv += ["--user", user]
    if spec.memory_limit is not None:
        argv += ["--memory", str(spec.memory_limit)]
    if spec.cpu_request_milli is not None:  # kubelet: shares = milliCPU * 1024 / 1000, >= 2
        argv += ["--cpu-shares", str(max(2, spec.cpu_request_milli * 1024 // 1000))]
    argv += ["--stop-timeout", str(pod.termination_grace_seconds)]
    for mount in spec.host_paths:
        options = "ro" if mount.read_only else "rw"
        argv += [
            "--volume",
            f"{node_host_path(node, mount.host_path)}:{mount.mount_path}:{options}",
        ]
    for path, size in spec.tmpfs:
        options = "rw,nosuid,nodev" + (f",size={size}" if size else "")
        argv += ["--tmpfs", f"{path}:{options}"]
    argv += ["--volume", f"{node.nodes_dir}:{NODES_DIR_IN_CONTAINER}:ro"]
    overrides = dict(env_overrides or {})
    if container is not None:  # checked against the agent's; an init container takes its own
        overrides = {k: v for k, v in overrides.items() if k in container.env_names()}
    for key, value in resolve_env(spec, node, overrides):
        argv += ["--env", f"{key}={value}"]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    if cgroup_parent:
        argv += ["--cgroup-parent", cgroup_parent]
    argv += list(extra)
    if spec.command:
        argv += ["--entrypoint", spec.command[0]]
    argv.append(image or spec.image)
    argv += [*spec.command[1:], *spec.args]
    return argv
