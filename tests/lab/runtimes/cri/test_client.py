"""The CRI client: the sandbox config kubelet sends, the sandbox's netns path from the verbose
status, and the client against an in-process CRI server (conditions, errors, deadlines)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from lab.runtimes.cri.api import messages, services
from lab.runtimes.cri.client import CriClient, CriError, PodSandboxSpec, netns_path


def test_the_sandbox_config_is_kubelets() -> None:
    spec = PodSandboxSpec(
        name="web",
        namespace="lab",
        uid="4f1c",
        cgroup_parent="/n1-kubepods/besteffort/pod4f1c",
        log_directory="/var/log/pods/lab_web_4f1c",
        labels={"app": "web"},
    )
    wire = messages.RunPodSandboxRequest(config=spec.config()).SerializeToString()
    config = messages.RunPodSandboxRequest.FromString(wire).config
    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid) == (
        "web",
        "lab",
        "4f1c",
    )
    assert config.hostname == "web"
    assert dict(config.labels) == {
        "app": "web",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "lab",
        "io.kubernetes.pod.uid": "4f1c",
    }
    assert config.linux.cgroup_parent == "/n1-kubepods/besteffort/pod4f1c"
    options = config.linux.security_context.namespace_options
    assert (options.network, options.pid, options.ipc) == (
        messages.POD,
        messages.CONTAINER,
        messages.POD,
    )


def test_netns_path_comes_from_the_verbose_runtime_spec() -> None:
    spec = {
        "runtimeSpec": {
            "linux": {
                "namespaces": [
                    {"type": "pid"},
                    {"type": "network", "path": "/state/netns/cni-1234"},
                ]
            }
        }
    }
    assert netns_path({"info": json.dumps(spec)}) == "/state/netns/cni-1234"
    with pytest.raises(CriError, match="no network namespace path"):
        netns_path({"info": json.dumps({"runtimeSpec": {"linux": {"namespaces": []}}})})
    with pytest.raises(CriError, match="lacks the spec"):
        netns_path({"info": "not json"})
    with pytest.raises(CriError, match="lacks the spec"):
        netns_path({})


# -- the client against an in-process CRI server ----------------------------------------------


class FakeRuntime(services.RuntimeServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.network_ready = False
        self.stall = threading.Event()
        self.requests: list[Any] = []

    def Status(self, request: Any, context: Any) -> Any:  # gRPC method names are CamelCase
        ready = messages.RuntimeCondition(type="RuntimeReady", status=True)
        network = messages.RuntimeCondition(
            type="NetworkReady",
            status=self.network_ready,
            reason="" if self.network_ready else "NetworkPluginNotReady",
            message="" if self.network_ready else "cni plugin not initialized",
        )
        status = messages.RuntimeStatus(conditions=[ready, network])
        return messages.StatusResponse(status=status)

    def RunPodSandbox(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if self.stall.is_set():
            time.sleep(3)
        if request.config.metadata.name == "doomed":
            context.abort(grpc.StatusCode.UNKNOWN, 'plugin type="minicni" failed (add): boom')
        return messages.RunPodSandboxResponse(pod_sandbox_id="s1")


@pytest.fixture
def fake_runtime(tmp_path: Path) -> Iterator[tuple[FakeRuntime, str]]:
    runtime = FakeRuntime()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    services.add_RuntimeServiceServicer_to_server(runtime, server)
    address = str(tmp_path / "cri.sock")
    server.add_insecure_port(f"unix://{address}")
    server.start()
    try:
        yield runtime, address
    finally:
        server.stop(0)


def _spec(name: str) -> PodSandboxSpec:
    return PodSandboxSpec(name, "lab", "u1", "/k/besteffort/podu1", "/tmp/logs")


def test_network_ready_reads_the_condition(fake_runtime: tuple[FakeRuntime, str]) -> None:
    runtime, address = fake_runtime
    with CriClient(address) as client:
        condition = client.network_ready()
        assert (condition.status, condition.reason) == (False, "NetworkPluginNotReady")
        runtime.network_ready = True
        assert client.network_ready().status is True


def test_a_runtime_error_names_the_call_and_the_runtimes_message(
    fake_runtime: tuple[FakeRuntime, str],
) -> None:
    runtime, address = fake_runtime
    with CriClient(address) as client:
        assert client.run_pod_sandbox(_spec("web")) == "s1"
        with pytest.raises(CriError) as failed:
            client.run_pod_sandbox(_spec("doomed"))
    assert failed.value.method == "RunPodSandbox"
    assert failed.value.code == "UNKNOWN"
    assert 'plugin type="minicni" failed (add): boom' in str(failed.value)
    assert runtime.requests[0].config.metadata.name == "web"


def test_a_stalled_runtime_is_an_error_at_the_deadline_not_a_hang(
    fake_runtime: tuple[FakeRuntime, str],
) -> None:
    runtime, address = fake_runtime
    runtime.stall.set()
    started = time.monotonic()
    with CriClient(address, timeout=0.5) as client, pytest.raises(CriError) as failed:
        client.run_pod_sandbox(_spec("slow"))
    assert failed.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 2.5


def test_no_runtime_at_the_socket_is_an_error(tmp_path: Path) -> None:
    with CriClient(str(tmp_path / "absent.sock")) as client, pytest.raises(CriError) as failed:
        client.conditions(timeout=1.0)
    assert failed.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
