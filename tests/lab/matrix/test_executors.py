"""Executors build the argv that runs a probe at an endpoint: in a namespace, or in a pod through
`kubectl exec`; and the inventory they are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.matrix.executors import (
    POD,
    Endpoint,
    Inventory,
    KubectlExecutor,
    NetnsExecutor,
    split_handle,
)
from tests.lab.matrix.samples import INVENTORY, N1, N2, P10, P11, P20


def test_netns_executor_runs_the_probe_module_in_the_named_namespace() -> None:
    argv = NetnsExecutor(python="/usr/bin/python3").command(P10, ["recv", "--proto", "udp"])
    assert argv == [
        "ip",
        "netns",
        "exec",
        "ml1-n1p0",
        "/usr/bin/python3",
        "-m",
        "lab.probes",
        "recv",
        "--proto",
        "udp",
    ]


def test_probes_run_in_a_sandbox_netns_given_by_path() -> None:
    executor = NetnsExecutor(python="/usr/bin/python3")
    sandbox = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "/lab/n1/containerd/state/netns/cni-1")
    named = Endpoint("n1/p1", POD, "n1", "10.244.1.3", "ml1234-n1p1")
    assert executor.command(sandbox, ["recv"]) == [
        "nsenter", "--net=/lab/n1/containerd/state/netns/cni-1",
        "/usr/bin/python3", "-m", "lab.probes", "recv",
    ]  # fmt: skip
    assert executor.command(named, ["recv"])[:4] == ["ip", "netns", "exec", "ml1234-n1p1"]


def test_inventory_round_trips_and_refuses_duplicates() -> None:
    assert Inventory.from_mapping(INVENTORY.to_mapping()) == INVENTORY
    assert INVENTORY.nodes == (N1, N2)
    assert INVENTORY.pods == (P10, P11, P20)
    with pytest.raises(ValueError, match="unique"):
        Inventory.build([P10, P10])


IN_A_POD = Endpoint("worker/a", "pod", "w", "10.244.1.5", handle="minicni-e2e/p-a")


def test_kubectl_executor_runs_the_probe_module_in_the_probe_container() -> None:
    argv = ["recv", "--proto", "tcp", "--port", "31000", "--token", "t1"]
    assert KubectlExecutor().command(IN_A_POD, argv) == [
        "kubectl", "--request-timeout", "30s",
        "exec", "--namespace", "minicni-e2e", "p-a", "--container", "probe",
        "--", "python3", "-m", "lab.probes", *argv,
    ]  # fmt: skip


def test_kubectl_executor_passes_its_kubeconfig_and_binary(tmp_path: Path) -> None:
    executor = KubectlExecutor(kubeconfig=tmp_path / "kc", kubectl="/opt/kubectl", container=None)
    command = executor.command(IN_A_POD, ["send", "--dst", "10.244.2.7"])
    assert command[:3] == ["/opt/kubectl", "--kubeconfig", str(tmp_path / "kc")]
    assert "--container" not in command
    assert command[-5:] == ["-m", "lab.probes", "send", "--dst", "10.244.2.7"]


def test_kubectl_executor_keeps_probe_arguments_as_separate_words() -> None:
    """No shell in between: an argument with spaces or quotes reaches the probe unchanged."""
    command = KubectlExecutor().command(IN_A_POD, ["send", "--token", "a b'c"])
    assert command[-1] == "a b'c"


@pytest.mark.parametrize("handle", ["just-a-pod", "/pod", "ns/", "ns/pod/extra"])
def test_kubectl_executor_refuses_a_handle_that_is_not_namespace_slash_pod(handle: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        split_handle(handle)


def test_a_probe_server_gets_kubectls_stdin_and_no_request_timeout() -> None:
    # it stops when its stdin ends (kubectl killed), and lives longer than any request
    argv = ["serve", "--proto", "tcp,udp", "--port", "30080", "--name", "worker/a"]
    assert KubectlExecutor().command(IN_A_POD, argv) == [
        "kubectl",
        "exec", "--namespace", "minicni-e2e", "p-a", "--stdin", "--container", "probe",
        "--", "python3", "-m", "lab.probes", *argv,
    ]  # fmt: skip
