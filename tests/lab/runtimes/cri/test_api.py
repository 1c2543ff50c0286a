"""The CRI messages are generated from the repository's .proto at import time: their wire numbers
must be upstream's (k8s.io/cri-api runtime.v1), or containerd would read other fields."""

from __future__ import annotations

import pytest

from lab.runtimes.cri.api import messages

# Field numbers of k8s.io/cri-api pkg/apis/runtime/v1/api.proto: the wire contract.
UPSTREAM_FIELDS = {
    "RunPodSandboxRequest": {"config": 1, "runtime_handler": 2},
    "RunPodSandboxResponse": {"pod_sandbox_id": 1},
    "PodSandboxConfig": {
        "metadata": 1, "hostname": 2, "log_directory": 3, "dns_config": 4, "labels": 6,
        "annotations": 7, "linux": 8,
    },
    "PodSandboxMetadata": {"name": 1, "uid": 2, "namespace": 3, "attempt": 4},
    "LinuxPodSandboxConfig": {"cgroup_parent": 1, "security_context": 2, "sysctls": 3},
    "LinuxSandboxSecurityContext": {"namespace_options": 1},
    "NamespaceOption": {"network": 1, "pid": 2, "ipc": 3, "target_id": 4},
    "DNSConfig": {"servers": 1, "searches": 2, "options": 3},
    "PodSandboxStatusRequest": {"pod_sandbox_id": 1, "verbose": 2},
    "PodSandboxStatusResponse": {"status": 1, "info": 2},
    "PodSandboxStatus": {
        "id": 1, "metadata": 2, "state": 3, "created_at": 4, "network": 5, "labels": 7,
        "annotations": 8, "runtime_handler": 9,
    },
    "PodSandboxNetworkStatus": {"ip": 1, "additional_ips": 2},
    "StopPodSandboxRequest": {"pod_sandbox_id": 1},
    "RemovePodSandboxRequest": {"pod_sandbox_id": 1},
    "ListPodSandboxResponse": {"items": 1},
    "StatusRequest": {"verbose": 1},
    "StatusResponse": {"status": 1, "info": 2},
    "RuntimeStatus": {"conditions": 1},
    "RuntimeCondition": {"type": 1, "status": 2, "reason": 3, "message": 4},
    "VersionResponse": {
        "version": 1, "runtime_name": 2, "runtime_version": 3, "runtime_api_version": 4,
    },
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(UPSTREAM_FIELDS))
def test_generated_messages_carry_upstream_field_numbers(message: str) -> None:
    descriptor = getattr(messages, message).DESCRIPTOR
    assert descriptor.full_name == f"runtime.v1.{message}"
    numbers = {field.name: field.number for field in descriptor.fields}
    assert numbers == UPSTREAM_FIELDS[message]


def test_the_service_is_upstreams_runtime_service() -> None:
    service = messages.DESCRIPTOR.services_by_name["RuntimeService"]
    assert service.full_name == "runtime.v1.RuntimeService"
    assert {m.name for m in service.methods} >= {
        "RunPodSandbox", "PodSandboxStatus", "StopPodSandbox", "RemovePodSandbox", "Status",
    }  # fmt: skip
