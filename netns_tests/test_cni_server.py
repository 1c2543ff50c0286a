"""The agent's CNI server driven over its socket with protocol v1 by hand: what it answers a
request it cannot take (busy, malformed, another version, a store it cannot reach), a client that
goes silent or gives up, and its socket's life. Run in this process, in a namespace of its own."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minicni.agent.service import cni_server
from minicni.agent.service.cni_server import CniServer
from minicni.agent.service.metrics import Metrics
from minicni.net import netns
from netns_tests.conftest import unique_name

pytestmark = pytest.mark.root


def request(
    env: dict[str, str], stdin: bytes = b'{"cniVersion": "1.0.0"}', version: int = 1
) -> bytes:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    header = b"MCNI" + bytes((version, 0)) + bytes(2)
    return (
        header + len(block).to_bytes(4, "little") + len(stdin).to_bytes(4, "little") + block + stdin
    )


@contextlib.contextmanager
def serving(data_dir: Path, max_pending: int, read_timeout: float) -> Iterator[CniServer]:
    """A server in a namespace of its own (its netns check compares with the caller's: the
    tests connect from the same namespace, entered for the connect only), stopped and removed
    at the end."""
    name = unique_name("pts")
    path = netns.create(name)
    socket_dir = Path("/run") / name  # short: a unix socket path has 107 bytes
    with netns.enter(path):
        served = CniServer(str(socket_dir / "cni.sock"), str(data_dir), Metrics(),
                           max_pending=max_pending, read_timeout=read_timeout)  # fmt: skip
        served.start()
    try:
        yield served
    finally:
        served.stop()
        netns.remove(name)
        os.rmdir(socket_dir)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CniServer]:
    with serving(tmp_path / "data", max_pending=2, read_timeout=0.5) as served:
        yield served


def server_netns(server: CniServer) -> str:
    """The fixture names the socket's directory after the server's namespace."""
    return netns.path_of(os.path.basename(os.path.dirname(server.path)))


def connect(server: CniServer) -> socket.socket:
    ns = server_netns(server)
    with netns.enter(ns):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(server.path)
    return client


def go_and_answer(client: socket.socket) -> tuple[int, bytes]:
    """The go, once the request is taken; then the exit code and stdout."""
    assert client.recv(1) == b"A"
    client.sendall(b"G")
    head = client.recv(8, socket.MSG_WAITALL)
    code, size = int.from_bytes(head[:4], "little"), int.from_bytes(head[4:], "little")
    return code, client.recv(size, socket.MSG_WAITALL)


def test_a_request_is_taken_then_run_only_after_the_go(server: CniServer) -> None:
    client = connect(server)
    client.sendall(request({"CNI_COMMAND": "VERSION"}))
    code, out = go_and_answer(client)
    assert code == 0
    assert "1.1.0" in json.loads(out)["supportedVersions"]
    # counted once the answer is on its way
    wait_for(lambda: server.metrics.get("cni_requests_total", command="VERSION", outcome="ok") == 1)
    assert server.metrics.get("cni_request_duration_seconds_count", command="VERSION") == 1


def test_an_unknown_command_is_answered_and_counted_as_other(server: CniServer) -> None:
    client = connect(server)
    client.sendall(request({"CNI_COMMAND": 'X"}\nminicni_fake 1', "CNI_CONTAINERID": "c1"}))
    code, out = go_and_answer(client)
    assert code == 1
    assert json.loads(out)["code"] == 4
    wait_for(
        lambda: server.metrics.get("cni_requests_total", command="other", outcome="error") == 1
    )
    assert "minicni_fake" not in server.metrics.render()


def test_a_shim_that_gives_up_before_the_go_gets_nothing_done(server: CniServer) -> None:
    client = connect(server)
    client.sendall(request({"CNI_COMMAND": "VERSION"}))
    assert client.recv(1) == b"A"
    client.close()  # its accept time-out: it runs the plugin in-process instead
    wait_for(lambda: server.metrics.get("cni_abandoned_total") == 1)
    assert server.metrics.get("cni_requests_total", command="VERSION", outcome="ok") == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", "Rmalformed"),
        (request({"CNI_COMMAND": "VERSION"}, version=3), "Rversion: protocol version 3"),
        (request({"CNI_COMMAND": "VERSION"})[:-3], None),  # short: the time-out ends it
    ],
    ids=["not-minicni", "version-3", "truncated"],
)
def test_what_the_server_cannot_read_is_refused_or_dropped(
    server: CniServer, data: bytes, reason: str | None
) -> None:
    client = connect(server)
    client.sendall(data)
    answer = client.recv(4096)  # EOF after the read time-out when the request never completes
    if reason is None:
        assert answer == b""
    else:
        assert answer.decode().startswith(reason), answer
        assert client.recv(1) == b""  # and it closes


def test_a_passed_descriptor_that_is_not_a_netlink_socket_is_refused(server: CniServer) -> None:
    client = connect(server)
    read_end, write_end = os.pipe()
    try:
        data = bytearray(request({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "e"}))
        data[5] = 1  # flags: a pod socket is attached
        client.sendmsg(
            [bytes(data)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, read_end.to_bytes(4, "little"))]
        )
        assert client.recv(4096).startswith(b"Rmalformed: the file descriptor passed")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_config_whose_store_the_agent_does_not_share_is_refused(
    server: CniServer, tmp_path: Path
) -> None:
    config = {"cniVersion": "1.0.0", "name": "n", "type": "minicni", "subnet": "10.9.0.0/24"}
    config["dataDir"] = str(tmp_path / "elsewhere")
    client = connect(server)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"}
    client.sendall(request(env, json.dumps(config).encode()))
    assert client.recv(4096).startswith(b"RdataDir: dataDir " + str(tmp_path).encode())
    assert not (tmp_path / "elsewhere").exists()
    assert server.metrics.get("cni_refusals_total", reason="dataDir") == 1


def test_more_connections_than_it_holds_are_refused_busy(server: CniServer) -> None:
    silent = [connect(server) for _ in range(2)]  # max_pending=2, each waiting for its request
    time.sleep(0.05)
    third = connect(server)
    assert third.recv(4096).startswith(b"Rbusy")
    for client in silent:
        assert client.recv(1) == b""  # dropped after the read time-out
    assert server.metrics.get("cni_refusals_total", reason="busy") == 1


def test_a_second_server_on_a_live_socket_is_refused_and_a_dead_socket_is_replaced(
    server: CniServer, tmp_path: Path
) -> None:
    second = CniServer(server.path, str(tmp_path / "data"), Metrics())
    with pytest.raises(OSError, match="another process serves this socket"):
        second.start()
    server.stop()
    assert not os.path.exists(server.path)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(server.path)  # a socket file nobody listens on: an agent killed with -9
    dead.close()
    with netns.enter(server_netns(server)):
        second.start()
    try:
        assert os.stat(server.path).st_mode & 0o777 == 0o600
    finally:
        second.stop()


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check()


def test_stop_waits_for_a_request_being_served(server: CniServer) -> None:
    client = connect(server)
    client.sendall(request({"CNI_COMMAND": "VERSION"}))
    assert client.recv(1) == b"A"
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    client.sendall(b"G")  # still served: it was taken before the stop
    assert int.from_bytes(client.recv(8, socket.MSG_WAITALL)[:4], "little") == 0
    stopper.join(10)
    assert not stopper.is_alive() and not os.path.exists(server.path)


def send_with_file(
    client: socket.socket, env: dict[str, str], flags: int, fd: int, stdin: str = "{}"
) -> None:
    data = bytearray(request(env, stdin.encode()))
    data[5] = flags
    client.sendmsg(
        [bytes(data)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
    )


def test_a_namespace_file_comes_with_a_del_only_and_alone(server: CniServer) -> None:
    """Flags bit 1: CNI_NETNS's file instead of a socket inside it, for a DEL; anything else
    with it is malformed (the shim then runs the command in-process)."""
    fd = os.open(server_netns(server), os.O_RDONLY)
    try:
        for env, flags, reason in [
            ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_IFNAME": "e"}, 2, "only a DEL"),
            ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "e"}, 3, "lengths or"),
        ]:
            client = connect(server)
            send_with_file(client, env, flags, fd)
            assert client.recv(4096).startswith(b"Rmalformed: " + reason.encode()), env
    finally:
        os.close(fd)


def test_a_del_whose_namespace_file_is_no_namespace_is_served_as_gone(
    server: CniServer, tmp_path: Path
) -> None:
    """An empty file where a runtime had mounted the namespace: the DEL is taken and answered,
    as when the shim's setns into it fails."""
    plain = tmp_path / "netns-left-behind"
    plain.write_bytes(b"")
    fd = os.open(plain, os.O_RDONLY)
    try:
        client = connect(server)
        config = {"cniVersion": "1.0.0", "name": "n", "type": "minicni", "subnet": "10.9.0.0/24"}
        config["dataDir"] = server.data_dir + "/n"
        env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "eth0"}
        send_with_file(client, {**env, "CNI_NETNS": str(plain)}, 2, fd, json.dumps(config))
        assert client.recv(1) == b"A"
        client.sendall(b"G")
        head = client.recv(8, socket.MSG_WAITALL)
        assert int.from_bytes(head[:4], "little") == 0, client.recv(4096)
    finally:
        os.close(fd)


def test_a_go_that_brings_the_pod_socket_is_checked_like_the_request(server: CniServer) -> None:
    """v2: for ADD and CHECK the pod's socket comes with the go (b"G", u16 errno). Without one,
    the errno says why and the request is served with it; anything but a NETLINK_ROUTE socket
    ends the connection (after the go, the shim answers CNI error 11: try again)."""
    served = connect(server)
    data = bytearray(request({"CNI_COMMAND": "VERSION"}, version=2))
    data[5] = 4  # the socket comes with the go
    served.sendall(bytes(data))
    assert served.recv(1) == b"A"
    served.sendall(b"G" + (2).to_bytes(2, "little"))  # ENOENT: no socket
    assert int.from_bytes(served.recv(8, socket.MSG_WAITALL)[:4], "little") == 0

    lost = connect(server)
    lost.sendall(bytes(data))
    assert lost.recv(1) == b"A"
    read_end, write_end = os.pipe()
    try:
        lost.sendmsg(
            [b"G\0\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, read_end.to_bytes(4, "little"))]
        )
        assert lost.recv(8) == b""
    finally:
        os.close(read_end)
        os.close(write_end)
    wait_for(lambda: server.metrics.get("cni_connections_lost_total") == 1)


def test_a_v1_request_with_v2_flags_is_malformed(server: CniServer) -> None:
    client = connect(server)
    data = bytearray(request({"CNI_COMMAND": "VERSION"}, version=1))
    data[5] = 4
    client.sendall(bytes(data))
    assert client.recv(4096).startswith(b"Rmalformed")


def test_a_del_is_its_own_go_and_nothing_else_is(server: CniServer) -> None:
    """v2, bit 3: a DEL (idempotent) runs without waiting for a go, and b"A" comes with its
    answer; the bit on another command, or in v1, is malformed."""
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "eth0"}
    config = {"cniVersion": "1.0.0", "name": "n", "type": "minicni", "subnet": "10.9.0.0/24"}
    config["dataDir"] = server.data_dir + "/n"
    data = bytearray(request(env, json.dumps(config).encode(), version=2))
    data[5] = 8
    client = connect(server)
    client.sendall(bytes(data))  # and nothing more
    answer = client.recv(9, socket.MSG_WAITALL)
    assert answer[:1] == b"A" and int.from_bytes(answer[1:5], "little") == 0, answer
    wait_for(lambda: server.metrics.get("cni_requests_total", command="DEL", outcome="ok") == 1)
    for command, version in (("ADD", 2), ("DEL", 1)):
        bad = bytearray(request({**env, "CNI_COMMAND": command}, version=version))
        bad[5] = 8
        client = connect(server)
        client.sendall(bytes(bad))
        assert client.recv(4096).startswith(b"Rmalformed"), (command, version)


def exchange_version(server: CniServer) -> None:
    client = connect(server)
    client.sendall(request({"CNI_COMMAND": "VERSION"}))
    assert go_and_answer(client)[0] == 0
    client.close()


def test_its_threads_serve_one_connection_after_another_and_end_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread accepts its connection itself and then waits for the next: requests one after
    the other do not start a thread each; a burst starts more (each held connection has one),
    and stopping ends them all."""
    started: list[threading.Thread] = []

    class Counted(threading.Thread):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(cni_server.threading, "Thread", Counted)
    with serving(tmp_path / "data", max_pending=8, read_timeout=2) as server:
        for _ in range(20):
            exchange_version(server)
        # a thread may still be finishing the last one when the next comes: then one more starts
        assert len(started) < 10
        held = [connect(server) for _ in range(6)]  # silent for now: each holds a thread
        wait_for(lambda: len([t for t in started if t.is_alive()]) >= 7)
        for client in held:
            client.sendall(request({"CNI_COMMAND": "VERSION"}))
            assert go_and_answer(client)[0] == 0
            client.close()
        exchange_version(server)
    wait_for(lambda: not [t for t in started if t.is_alive()])
    assert server.metrics.get("cni_requests_total", command="VERSION", outcome="ok") == 27
