"""The CRI runtime's parts that need no root: the generated messages (wire numbers as upstream's),
the sandbox config kubelet sends, the client against an in-process CRI server (errors, deadlines),
containerd's per-node config, and the offline pause image."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from lab.runtimes.cri import pause
from lab.runtimes.cri.api import messages, services
from lab.runtimes.cri.client import CriClient, CriError, PodSandboxSpec, netns_path
from lab.runtimes.cri.containerd import ContainerdNode

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


# -- containerd's config -------------------------------------------------------------------------


def test_containerd_config_points_the_cri_at_the_agents_dirs(tmp_path: Path) -> None:
    node = ContainerdNode(
        name="n1",
        netns="/run/netns/ml1-n1",
        home=str(tmp_path / 'n1 "quoted"' / "containerd"),
        cni_conf_dir="/lab/n1/net.d",
        cni_bin_dir="/lab/n1/bin",
        cgroup_root="/ml1-n1-kubepods",
        socket_dir="/tmp/mlcri-n1-x",
    )
    config = tomllib.loads(node.config())
    assert config["root"] == f"{node.home}/root"  # a quote in a path stays a quote
    assert config["state"] == f"{node.home}/state"
    assert config["grpc"]["address"] == "/tmp/mlcri-n1-x/containerd.sock"
    assert config["ttrpc"]["address"] == "/tmp/mlcri-n1-x/containerd.sock.ttrpc"
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"] == f"{node.home}/opt"
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["cni"] == {"conf_dir": "/lab/n1/net.d", "bin_dir": "/lab/n1/bin", "max_conf_num": 1}
    assert cri["sandbox_image"] == pause.IMAGE_NAME
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"Root": f"{node.home}/runc", "SystemdCgroup": False}
    assert node.pod_cgroup("u1") == "/ml1-n1-kubepods/besteffort/podu1"
    assert ContainerdNode.from_mapping(node.to_mapping()) == node


# -- the pause image ------------------------------------------------------------------------------


def _fake_static_elf(path: Path) -> Path:
    """A 64-bit ELF header with one PT_LOAD and no PT_INTERP: 'static' as far as the check goes."""
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    program = bytearray(56)
    struct.pack_into("<I", program, 0, 1)  # PT_LOAD
    path.write_bytes(bytes(header + program) + b"payload")
    return path


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {
            m.name: archive.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            for m in archive.getmembers()
        }


def test_pause_image_is_an_oci_layout_naming_the_image(tmp_path: Path) -> None:
    busybox = _fake_static_elf(tmp_path / "busybox")
    data = pause.image_tarball(str(busybox), "example/pause:1")
    assert data == pause.image_tarball(str(busybox), "example/pause:1")  # deterministic
    files = _members(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "example/pause:1"

    def blob(descriptor: dict[str, Any]) -> bytes:
        content = files[f"blobs/sha256/{descriptor['digest'].split(':')[1]}"]
        assert "sha256:" + hashlib.sha256(content).hexdigest() == descriptor["digest"]
        assert len(content) == descriptor["size"]
        return content

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    [layer_descriptor] = manifest["layers"]
    layer = blob(layer_descriptor)
    assert config["config"]["Entrypoint"][0] == "/bin/busybox"
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]  # uncompressed layer
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        member = archive.getmember("bin/busybox")
        assert member.mode & 0o111 and (member.uid, member.mtime) == (0, 0)
        assert archive.extractfile(member).read() == busybox.read_bytes()  # type: ignore[union-attr]


def test_pause_image_refuses_a_dynamic_or_missing_busybox(tmp_path: Path) -> None:
    dynamic = _fake_static_elf(tmp_path / "dynamic")
    raw = bytearray(dynamic.read_bytes())
    struct.pack_into("<I", raw, 64, 3)  # the one program header becomes PT_INTERP
    dynamic.write_bytes(bytes(raw))
    with pytest.raises(pause.PauseImageError, match="dynamically linked"):
        pause.image_tarball(str(dynamic))
    with pytest.raises(pause.PauseImageError, match="busybox-static"):
        pause.image_tarball(str(tmp_path / "absent"))


# -- the lab's wiring ----------------------------------------------------------------------------


def test_probes_run_in_a_sandbox_netns_given_by_path() -> None:
    from lab.executors import POD, Endpoint, NetnsExecutor

    executor = NetnsExecutor(python="/usr/bin/python3")
    sandbox = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "/lab/n1/containerd/state/netns/cni-1")
    named = Endpoint("n1/p1", POD, "n1", "10.244.1.3", "ml1234-n1p1")
    assert executor.command(sandbox, ["recv"]) == [
        "nsenter", "--net=/lab/n1/containerd/state/netns/cni-1",
        "/usr/bin/python3", "-m", "lab.probes", "recv",
    ]  # fmt: skip
    assert executor.command(named, ["recv"])[:4] == ["ip", "netns", "exec", "ml1234-n1p1"]


def test_the_runtime_is_part_of_the_topology_and_a_cli_flag() -> None:
    from lab.cli import parser, topology_from
    from lab.topology import Topology, TopologyError

    assert Topology().runtime == "libcni"  # the lab's own runtime stays the default
    args = parser().parse_args(["run", "--runtime", "cri", "--nodes", "2"])
    assert topology_from(args).runtime == "cri"
    assert Topology.from_mapping({"runtime": "cri"}).to_mapping()["runtime"] == "cri"
    with pytest.raises(TopologyError, match="runtime must be one of"):
        Topology(runtime="docker")
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--runtime", "docker"])
