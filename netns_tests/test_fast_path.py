"""The fast path's own promises (issue 9), on a lab node whose agent serves CNI requests: an agent
killed or restarted under load leaves every caller with a result or a CNI error, never a hang,
and nothing behind; a caller the agent must not serve (not root, another node's namespace,
another protocol version) is refused, and the plugin then runs in-process; a DEL answered before
its kernel work survives the agent's death and is finished when it starts again."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import marshal
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.cluster.agents import NodeFiles
from lab.cluster.build import NetnsLab, lab_namespaces
from lab.topology import NodePlan, Topology, new_lab_id, plan
from minicni.agent.host import launcher
from minicni.net import netns
from minicni.net.links import host_veth_name
from netns_tests.conftest import FakeNode, PluginRun, in_netns, links_in, unique_name

pytestmark = pytest.mark.root


@dataclass
class AgentNode:
    lab: NetnsLab
    plan: NodePlan
    files: NodeFiles
    tmp: Path
    fakes: list[FakeNode] = field(default_factory=list)

    @property
    def host(self) -> str:
        return netns.path_of(self.plan.netns)

    def fake(self, path: str = "served") -> FakeNode:
        """The node as the plugin tests see it; `path` "fallback": requests may run in-process."""
        fake = FakeNode(
            host=self.host,
            tmp=self.tmp,
            bridge="ptfast0",
            network="ptfast",
            executable=str(self.files.bin_dir / "minicni"),
            path=path,
            agent_log=self.files.agent_log,
            shared_data_dir=self.files.ipam_dir,
        )
        self.fakes.append(fake)
        return fake

    def agent_log(self) -> str:
        return self.files.agent_log.read_text(errors="replace")


@pytest.fixture
def agent_node(tmp_path: Path) -> Iterator[AgentNode]:
    """One lab node with its agent serving; the test may kill and restart it."""
    lab = NetnsLab(plan(Topology(nodes=1, pods_per_node=0), new_lab_id()), str(tmp_path / "labs"))
    lab.up()
    agent: AgentNode | None = None
    try:
        (node,) = lab.lab.nodes
        agent = AgentNode(lab, node, lab.files(node), tmp_path)
        yield agent
    finally:
        for fake in agent.fakes if agent else []:
            for pod in fake.pods:
                netns.remove(pod)
        problems = lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []
        assert not problems, problems


def pods(node: FakeNode, count: int) -> list[tuple[str, str]]:
    return [(node.pod(), node.container_id()) for _ in range(count)]


def assert_nothing_left(node: FakeNode, attachments: list[tuple[str, str]]) -> None:
    host_links = links_in(node.host)
    assert not [cid for _, cid in attachments if host_veth_name(cid, "eth0") in host_links]
    assert node.reservations() == {}
    leftovers = [p.name for p in node.store_dir.iterdir() if p.name.startswith(("owner", "del"))]
    assert leftovers == []


def result_or_error(run: PluginRun) -> str:
    """ "ok" for a result, "error" for a CNI error document; anything else fails the test."""
    document = json.loads(run.stdout)
    if run.code == 0:
        assert document["ips"], run
        return "ok"
    assert set(document) >= {"code", "msg"}, run
    return "error"


def test_kill_9_of_the_agent_under_load_leaves_no_caller_hanging_and_del_cleans_up(
    agent_node: AgentNode,
) -> None:
    node = agent_node.fake("fallback")  # requests after the kill run in-process
    attachments = pods(node, 12)
    with ThreadPoolExecutor(max_workers=12) as pool:
        runs = [pool.submit(node.add, pod, cid, timeout=90) for pod, cid in attachments]
        deadline = time.monotonic() + 30
        while "CNI ADD" not in agent_node.agent_log() and time.monotonic() < deadline:
            time.sleep(0.005)  # the first one served: the others are queued or in flight
        agent_node.lab.kill_agent(agent_node.plan)
        outcomes = [result_or_error(run.result()) for run in runs]  # a hang fails at 90 s
    assert "ok" in outcomes, outcomes
    for pod, cid in attachments:  # the agent is gone: in-process DELs
        deleted = node.run("DEL", None, cid, pod)
        assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert_nothing_left(node, attachments)


def test_an_agent_restarted_while_shims_run_loses_no_request(agent_node: AgentNode) -> None:
    node = agent_node.fake("fallback")
    attachments = pods(node, 16)
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = [pool.submit(node.add, pod, cid, timeout=90) for pod, cid in attachments]
        time.sleep(0.2)
        assert agent_node.lab.stop_agent(agent_node.plan) == 0  # SIGTERM: a clean stop
        agent_node.lab.start_agent(agent_node.plan)
        agent_node.lab.await_agent(agent_node.plan)
        results = [run.result() for run in runs]
    assert all(run.code == 0 for run in results), [str(r) for r in results if r.code]
    addresses = {run.json["ips"][0]["address"] for run in results}
    assert len(addresses) == len(attachments)
    assert "CNI ADD" in agent_node.agent_log()  # some were served, before or after the restart
    with ThreadPoolExecutor(max_workers=4) as pool:
        dels = list(pool.map(lambda a: node.run("DEL", None, a[1], a[0]), attachments))
    assert all(run.code == 0 for run in dels), [str(r) for r in dels if r.code]
    node.wait_for_deletes()
    assert_nothing_left(node, attachments)


def raw_request(socket_path: str, command: str, version: int = 1) -> bytes:
    """A protocol v1 request with no pod socket: what the agent answers first (A or R...)."""
    env = f"CNI_COMMAND={command}\0".encode()
    stdin = b'{"cniVersion": "1.0.0"}'
    header = b"MCNI" + bytes((version, 0)) + bytes(2)
    return header + len(env).to_bytes(4, "little") + len(stdin).to_bytes(4, "little") + env + stdin


CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
sock.sendall(bytes.fromhex(sys.argv[2]))
print(sock.recv(4096).decode(errors="replace"))
"""


def test_a_client_that_is_not_root_is_refused(agent_node: AgentNode) -> None:
    """The socket is root's (0600 in a 0700 directory): a process of another uid cannot even
    connect; one that can (CAP_DAC_OVERRIDE) is refused by its SO_PEERCRED uid."""
    socket_path = str(agent_node.files.cni_socket)
    assert os.stat(socket_path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(socket_path)).st_mode & 0o777 == 0o700
    request = raw_request(socket_path, "VERSION").hex()
    caps = ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for extra, expected in (([], "Permission denied"), (caps, "Ruid")):
        run = subprocess.run(
            [
                *("nsenter", f"--net={agent_node.host}", *setpriv, *extra),
                *(sys.executable, "-c", CLIENT, socket_path, request),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert expected in run.stdout + run.stderr, run
    assert "refused a CNI request: uid" in agent_node.agent_log()


def test_a_caller_in_another_network_namespace_is_refused_and_runs_in_process(
    agent_node: AgentNode,
) -> None:
    """The socket is reachable from every namespace sharing the file system (the lab's nodes
    do): a shim in another namespace must not get its pod wired into this node."""
    elsewhere = netns.create(unique_name("pto"))
    try:
        node = agent_node.fake("fallback")
        node.host = elsewhere
        pod, cid = node.pod(), node.container_id()
        added = node.add(pod, cid)
        assert added.code == 0, added
        assert "another network namespace" in added.stderr  # the shim's reason, logged
        assert node.bridge in links_in(elsewhere)  # wired where the caller is...
        assert node.bridge not in links_in(agent_node.host)  # ...not in the agent's node
        assert "refused a CNI request: netns" in agent_node.agent_log()
        assert node.run("DEL", None, cid, pod).code == 0
    finally:
        netns.remove(os.path.basename(elsewhere))


def test_a_shim_of_another_protocol_version_falls_back_cleanly(agent_node: AgentNode) -> None:
    """As during an upgrade, when the installed plugin and the running agent differ."""
    source = launcher.SHIM_SOURCE.read_text()
    version = int(re.search(r"^VERSION = (\d+)$", source, re.MULTILINE).group(1))  # type: ignore[union-attr]
    future = version + 1  # a release this agent does not know
    source = source.replace(f"VERSION = {version}\n", f"VERSION = {future}\n", 1)
    code = compile(source, "shim2.py", "exec")
    shim2 = agent_node.tmp / "shim2.pyc"
    shim2.write_bytes(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))
    exe = agent_node.tmp / "minicni-v2"
    exe.write_text(
        f"#!/bin/sh\nexec {sys.executable} -I -S -B {shim2} {agent_node.files.cni_socket} site\n"
    )
    exe.chmod(0o755)
    node = agent_node.fake("fallback")
    node.executable = str(exe)
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    assert f"protocol version {future}" in added.stderr
    assert "refused a CNI request: version" in agent_node.agent_log()
    assert node.run("DEL", None, cid, pod).code == 0
    assert_nothing_left(node, [(pod, cid)])


def test_a_del_answered_before_its_kernel_work_survives_a_kill_and_is_finished_at_start(
    agent_node: AgentNode,
) -> None:
    """The test takes the store's lock as soon as the DEL is recorded: the agent answers, deletes
    the veth, then waits for the lock to release the address, and is killed there."""
    node = agent_node.fake()
    for _attempt in range(5):
        pod, cid = node.pod(), node.container_id()
        assert node.add(pod, cid).code == 0
        lock_fd = os.open(node.store_dir / "lock", os.O_RDWR)
        caught = threading.Event()

        def hold_the_lock_once_recorded(
            cid: str = cid, lock_fd: int = lock_fd, caught: threading.Event = caught
        ) -> None:
            deadline = time.monotonic() + 20
            while not node.deleting(cid, "eth0") and time.monotonic() < deadline:
                time.sleep(0.0005)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            caught.set()

        holder = threading.Thread(target=hold_the_lock_once_recorded)
        holder.start()
        deleted = subprocess.run(
            ["nsenter", f"--net={node.host}", node.executable],
            input=json.dumps(node.config()).encode(),
            env={
                "CNI_COMMAND": "DEL",
                "CNI_CONTAINERID": cid,
                "CNI_NETNS": pod,
                "CNI_IFNAME": "eth0",
                "PATH": os.environ["PATH"],
            },
            capture_output=True,
            timeout=30,
        )
        assert (deleted.returncode, deleted.stdout) == (0, b""), deleted
        holder.join(30)
        if node.deleting(cid, "eth0"):  # answered, its release waiting for our lock: kill now
            agent_node.lab.kill_agent(agent_node.plan)
            os.close(lock_fd)
            assert node.deleting(cid, "eth0") and node.reservations()  # survived the kill
            agent_node.lab.start_agent(agent_node.plan)
            agent_node.lab.await_agent(agent_node.plan)
            assert not node.deleting(cid, "eth0")
            assert "finished the DEL of ptfast: " + cid in agent_node.agent_log()
            assert_nothing_left(node, [(pod, cid)])
            return
        os.close(lock_fd)  # the agent was quicker than us: the DEL is all done; again
        assert caught.is_set() and node.reservations() == {}
    pytest.fail("the agent finished every DEL before the test could hold the store's lock")


def test_the_agent_leaves_its_socket_when_it_stops_and_the_plugin_still_works(
    agent_node: AgentNode,
) -> None:
    assert agent_node.lab.stop_agent(agent_node.plan) == 0
    assert not agent_node.files.cni_socket.exists()
    node = agent_node.fake("fallback")
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    assert "fast path unavailable (connecting to the agent" in added.stderr
    assert node.run("DEL", None, cid, pod).code == 0
    assert_nothing_left(node, [(pod, cid)])


def test_a_dual_stack_add_while_ipv6_forwarding_is_off_runs_in_process_and_turns_it_on(
    agent_node: AgentNode,
) -> None:
    """The agent writes no sysctl while serving; it turns on forwarding of its cluster's
    families, here IPv4 only. A network with an IPv6 range then needs the in-process plugin for
    its first ADD; once forwarding is on, the agent serves it."""
    node = agent_node.fake("fallback")
    forwarding = ("sysctl", "-n", "net.ipv6.conf.all.forwarding")
    assert in_netns(node.host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0").returncode == 0
    config = node.config(subnet=["10.99.0.0/24", "fd00:99::/64"])
    first, first_cid = node.pod(), node.container_id()
    added = node.add(first, first_cid, config=config)
    assert added.code == 0, added
    assert "refused: ipv6_forwarding: net.ipv6.conf.all.forwarding is off" in added.stderr, added
    assert "refused a CNI request: ipv6_forwarding" in agent_node.agent_log()
    assert [ip["address"].split("/")[0][:3] for ip in added.json["ips"]] == ["10.", "fd0"]
    assert in_netns(node.host, *forwarding).stdout.strip() == "1"
    node.path = "served"  # from now on a fallback fails the run
    second, second_cid = node.pod(), node.container_id()
    served = node.add(second, second_cid, config=config)
    assert served.code == 0, served
    assert len(served.json["ips"]) == 2
    assert f"CNI ADD {second_cid[:12]}/eth0: ok" in agent_node.agent_log()
    for pod, cid in ((first, first_cid), (second, second_cid)):
        assert node.run("DEL", config, cid, pod).code == 0
    assert_nothing_left(node, [(first, first_cid), (second, second_cid)])
