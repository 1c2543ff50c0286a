"""A CRI client that makes the calls kubelet makes for a pod's network, and nothing else.

kubelet, for a pod: `RunPodSandbox` with the pod's sandbox config (metadata, hostname, log
directory, labels, a cgroup parent under its kubepods tree, namespace options network=POD,
pid=CONTAINER, ipc=POD), then `PodSandboxStatus` for the pod's IP; on deletion `StopPodSandbox`
(the runtime calls CNI DEL) and `RemovePodSandbox`. Every few seconds, `Status`, whose NetworkReady
condition decides whether the node is Ready. Every call carries a deadline, as kubelet's
`--runtime-request-timeout` gives it, so a wedged runtime is an error and never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from lab.runtimes.cri.api import messages, services

KUBELET_REQUEST_TIMEOUT = 120.0  # kubelet's default --runtime-request-timeout (2m)
STATUS_TIMEOUT = 10.0
NETWORK_READY = "NetworkReady"
RUNTIME_READY = "RuntimeReady"


class CriError(RuntimeError):
    """A CRI call failed: the method, the gRPC status code and the runtime's own message."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.method, self.code, self.details = method, code, details


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class PodSandboxSpec:
    """What kubelet knows about a pod when it asks for its sandbox."""

    name: str
    namespace: str
    uid: str
    cgroup_parent: str  # kubelet's pod cgroup, cgroupfs syntax: /kubepods/besteffort/pod<uid>
    log_directory: str  # kubelet's /var/log/pods/<namespace>_<name>_<uid>
    attempt: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()

    def config(self) -> Any:
        """The PodSandboxConfig kubelet builds (generatePodSandboxConfig)."""
        labels = {
            **self.labels,
            "io.kubernetes.pod.name": self.name,
            "io.kubernetes.pod.namespace": self.namespace,
            "io.kubernetes.pod.uid": self.uid,
        }
        return messages.PodSandboxConfig(
            metadata=messages.PodSandboxMetadata(
                name=self.name, uid=self.uid, namespace=self.namespace, attempt=self.attempt
            ),
            hostname=self.name,
            log_directory=self.log_directory,
            dns_config=messages.DNSConfig(
                servers=list(self.dns_servers), searches=list(self.dns_searches)
            ),
            labels=labels,
            annotations=dict(self.annotations),
            linux=messages.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=messages.LinuxSandboxSecurityContext(
                    namespace_options=messages.NamespaceOption(
                        network=messages.POD, pid=messages.CONTAINER, ipc=messages.POD
                    )
                ),
            ),
        )


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    ready: bool
    ip: str
    netns: str  # path of the sandbox's network namespace ("" unless asked verbosely)
    labels: Mapping[str, str]
    additional_ips: tuple[str, ...] = ()  # a dual-stack pod's address of the other family

    @property
    def ips(self) -> tuple[str, ...]:
        return (self.ip, *self.additional_ips) if self.ip else ()


class CriClient:
    """The RuntimeService of one runtime, at a unix socket."""

    def __init__(self, address: str, timeout: float = KUBELET_REQUEST_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{address}")
        self._stub = services.RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            code = err.code()
            details = err.details()
            raise CriError(method, code.name if code else "UNKNOWN", details or "") from None

    # ------------------------------------------------------------ node

    def version(self, timeout: float = STATUS_TIMEOUT) -> tuple[str, str, str]:
        """(runtime name, runtime version, CRI API version)."""
        answer = self._call("Version", messages.VersionRequest(version="v1"), timeout)
        return answer.runtime_name, answer.runtime_version, answer.runtime_api_version

    def conditions(self, timeout: float = STATUS_TIMEOUT) -> dict[str, Condition]:
        """The runtime's conditions by type, as kubelet's `Status` poll reads them."""
        answer = self._call("Status", messages.StatusRequest(verbose=False), timeout)
        return {
            c.type: Condition(c.type, c.status, c.reason, c.message)
            for c in answer.status.conditions
        }

    def network_ready(self, timeout: float = STATUS_TIMEOUT) -> Condition:
        condition = self.conditions(timeout).get(NETWORK_READY)
        if condition is None:
            raise CriError("Status", "NO_CONDITION", f"the runtime reports no {NETWORK_READY}")
        return condition

    # ------------------------------------------------------------ pods

    def run_pod_sandbox(self, spec: PodSandboxSpec, runtime_handler: str = "") -> str:
        request = messages.RunPodSandboxRequest(
            config=spec.config(), runtime_handler=runtime_handler
        )
        return str(self._call("RunPodSandbox", request).pod_sandbox_id)

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> SandboxStatus:
        request = messages.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
        answer = self._call("PodSandboxStatus", request)
        status = answer.status
        return SandboxStatus(
            id=status.id,
            ready=status.state == messages.SANDBOX_READY,
            ip=status.network.ip,
            netns=netns_path(answer.info) if verbose else "",
            labels=dict(status.labels),
            additional_ips=tuple(extra.ip for extra in status.network.additional_ips),
        )

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("StopPodSandbox", messages.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("RemovePodSandbox", messages.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def list_pod_sandboxes(self) -> list[str]:
        answer = self._call("ListPodSandbox", messages.ListPodSandboxRequest())
        return [item.id for item in answer.items]


def netns_path(info: Mapping[str, str]) -> str:
    """The sandbox's network namespace from a verbose PodSandboxStatus: `info["info"]` is JSON whose
    `runtimeSpec.linux.namespaces` lists the OCI namespaces, the network one with its path."""
    try:
        document = json.loads(info["info"])
        namespaces = document["runtimeSpec"]["linux"]["namespaces"]
    except (KeyError, TypeError, ValueError) as err:
        raise CriError(
            "PodSandboxStatus", "NO_NETNS", f"verbose info lacks the spec: {err}"
        ) from None
    for namespace in namespaces:
        if namespace.get("type") == "network" and namespace.get("path"):
            return str(namespace["path"])
    raise CriError("PodSandboxStatus", "NO_NETNS", "the sandbox has no network namespace path")
