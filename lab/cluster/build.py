"""A virtual cluster in network namespaces: nodes, underlay, agents (or reference plugins), pods.

`NetnsLab.up()` builds it and returns the matrix inventory; `down()` removes everything it made,
and `teardown(state)` does the same for a lab left behind by a killed run, from its state file and
by name prefix. Every step is recorded in the state file before it is taken.

The root tests build their clusters here too: with `start_agents=False` the agents are theirs to
run (`run_agent_once`, `start_agent`), and `add_pod` and `add_outsider` grow a lab that is up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.cluster import agents, fabric
from lab.cluster.processes import kill_processes_in, signals_deferred
from lab.cluster.state import STATE_ROOT, LabState
from lab.matrix.executors import NODE, POD, Endpoint, Inventory
from lab.runtimes.libcni import Attachment, CniPluginError, CniRuntime
from lab.topology import HostPlan, LabPlan, NodePlan, PodPlan
from minicni.net import netns

REFERENCE_BIN_DIR = "/usr/lib/cni"
REFERENCE_CONFLIST = "10-lab-bridge.conflist"
REFERENCE_BRIDGE = "cni0"

Log = Callable[[str], None]


class LabError(RuntimeError):
    pass


def _quiet(_message: str) -> None:
    pass


class NetnsLab:
    def __init__(
        self,
        lab: LabPlan,
        state_root: str = STATE_ROOT,
        log: Log = _quiet,
        agent_timeout: float = 30.0,
        start_agents: bool = True,
    ) -> None:
        if not start_agents and lab.pods and lab.topology.plugin == "minicni":
            raise LabError("pods need the conflist and plugin an agent installs: plan no pods")
        self.lab = lab
        self.state_root = state_root
        self.log = log
        self.agent_timeout = agent_timeout
        self.start_agents = start_agents
        self.work_dir = os.path.join(state_root, lab.lab_id)
        self.state = LabState(lab.lab_id, lab.topology.to_mapping(), self.work_dir)
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self._state_lock = threading.Lock()  # pods are added from a thread pool

    @classmethod
    def from_state(
        cls, state: LabState, state_root: str = STATE_ROOT, log: Log = _quiet
    ) -> NetnsLab:
        """The lab a state file describes (names are derived, so the plan is the same)."""
        from lab.topology import Topology, plan

        lab = cls(plan(Topology.from_mapping(state.topology), state.lab_id), state_root, log)
        lab.state = state
        return lab

    def save_state(self) -> None:
        with self._state_lock:
            self.state.save(self.state_root)

    def node_dir(self, node: NodePlan, *parts: str) -> str:
        return os.path.join(self.work_dir, node.name, *parts)

    def files(self, node: NodePlan) -> agents.NodeFiles:
        return agents.NodeFiles(Path(self.node_dir(node)))

    @property
    def nodes_file(self) -> Path:
        return Path(self.work_dir, "nodes.json")

    # ------------------------------------------------------------ up

    def up(self) -> Inventory:
        """Build the whole cluster; on any failure (Ctrl-C included) remove what was built."""
        os.makedirs(self.work_dir, exist_ok=False)  # an id collision stops here, harming nothing
        try:
            self.save_state()
            self._create_namespaces()
            fabric.build_fabric(self.lab)
            if self.lab.topology.forward_drop:
                for node in self.lab.nodes:
                    _run(["ip", "netns", "exec", node.netns, "iptables", "-P", "FORWARD", "DROP"])
            self.log(f"underlay ready ({self.lab.topology.underlay})")
            if self.lab.topology.plugin == "reference":
                self._prepare_reference_plugins()
            else:
                self._prepare_agent_nodes()
                if self.start_agents:
                    self._start_agents()
            inventory = self._add_pods()
            self.state.inventory = inventory.to_mapping()
            self.state.phase = "up"
            self.save_state()
            return inventory
        except BaseException:
            self.log("up failed: removing what was built")
            self.down()
            raise

    def _create_namespaces(self) -> None:
        for name in [self.lab.fabric_netns, *(n.netns for n in self.lab.nodes)]:
            self._create_namespace(name)
        self.log(f"{counted(len(self.lab.nodes), 'node namespace')} created")

    def _create_namespace(self, name: str) -> None:
        """Recorded first, so a crash in between still cleans it up; created with signals held
        back, because pyroute2 forks a child to do it and an interrupted parent would abandon
        that child, which then creates the namespace after the tear-down has looked.
        Only from the main thread: forking while other threads run Python code can deadlock."""
        self.state.netns.append(name)
        self.save_state()
        with signals_deferred():
            netns.create(name)

    def _prepare_reference_plugins(self) -> None:
        for node in self.lab.nodes:
            os.makedirs(self.node_dir(node, "net.d"))
            conflist = reference_conflist(node, self.node_dir(node, "ipam"), self.lab.topology.mtu)
            with open(self.node_dir(node, "net.d", REFERENCE_CONFLIST), "w", encoding="utf-8") as f:
                json.dump(conflist, f, indent=2)
            fabric.add_bridge_with_pinned_mac(node.netns, REFERENCE_BRIDGE)
        fabric.add_pod_cidr_routes(self.lab)
        self.log("reference bridge + host-local conflists written, pod CIDR routes added")

    def _prepare_agent_nodes(self) -> None:
        self.write_nodes(agents.nodes_document(self.lab))
        for node in self.lab.nodes:
            self.files(node).create()

    def _start_agents(self) -> None:
        for node in self.lab.nodes:
            self.start_agent(node)
        for node in self.lab.nodes:
            self.await_agent(node)
        self.log(f"{counted(len(self.lab.nodes), 'agent')} ready ({self.lab.topology.backend})")

    # ------------------------------------------------------------ agents

    def agent_argv(self, node: NodePlan, *extra: str) -> list[str]:
        flags = agents.agent_flags(self.lab.topology, node, self.files(node), self.nodes_file)
        return agents.agent_argv(node, flags, extra)

    def start_agent(self, node: NodePlan, *extra: str) -> subprocess.Popen[bytes]:
        """The node's agent in the background, logging to its agent.log; `down` stops it."""
        process = agents.start_agent(self.agent_argv(node, *extra), self.files(node).agent_log)
        self.agents[node.name] = process
        self.state.agents[node.name] = process.pid
        self.save_state()
        return process

    def stop_agent(self, node: NodePlan) -> int:
        process = self.agents.pop(node.name)
        self.state.agents.pop(node.name, None)
        self.save_state()
        return agents.stop_agent(process)

    def kill_agent(self, node: NodePlan) -> None:
        """SIGKILL, as the OOM killer does: none of the agent's own clean-up runs."""
        process = self.agents.pop(node.name)
        self.state.agents.pop(node.name, None)
        self.save_state()
        process.kill()
        process.wait()

    def await_agent(self, node: NodePlan) -> None:
        """Until the node's agent (started with `start_agent`) is ready, as `up` waits."""
        agents.await_ready(
            node,
            self.files(node),
            self.agents[node.name],
            self.agent_timeout,
            serving=self.lab.topology.fast_path,
        )

    def run_agent_once(self, node: NodePlan, *extra: str) -> subprocess.CompletedProcess[str]:
        return agents.run_agent_once(self.agent_argv(node, "--once", *extra))

    def write_nodes(self, document: Mapping[str, Any] | str) -> None:
        """Replace the nodes file every agent of the lab reads."""
        agents.write_nodes_file(self.nodes_file, document)

    # ------------------------------------------------------------ pods

    def runtime_for(self, node: NodePlan) -> CniRuntime:
        if self.lab.topology.plugin == "reference":
            conflist, bin_dirs = REFERENCE_CONFLIST, [REFERENCE_BIN_DIR]
        else:
            conflist, bin_dirs = agents.MINICNI_CONFLIST, [self.node_dir(node, "bin")]
        return CniRuntime.from_file(
            self.node_dir(node, "net.d", conflist),
            bin_dirs=bin_dirs,
            cache_dir=self.node_dir(node, "cni-cache"),
            exec_prefix=["ip", "netns", "exec", node.netns],
            libcni=self.lab.topology.libcni,
        )

    def _add_pods(self) -> Inventory:
        for pod in self.lab.pods:  # namespaces first, in this thread (see _create_namespace)
            self._create_pod_namespace(pod)
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            addresses = list(pool.map(self._attach_pod, self.lab.pods))
        finally:
            # interrupted: let the ADDs in flight finish (DEL then finds them), start no more
            pool.shutdown(wait=True, cancel_futures=True)
        self.log(f"{counted(len(self.lab.pods), 'pod')} added and checked (CNI ADD + CHECK)")
        endpoints = []
        for node in self.lab.nodes:
            endpoints.append(Endpoint(node.name, NODE, node.name, node.ip, node.netns))
        for pod, ip in zip(self.lab.pods, addresses, strict=True):
            endpoints.append(Endpoint(pod.name, POD, pod.node, ip, pod.netns))
        return Inventory.build(endpoints, name=self.lab.lab_id)

    def add_pod(
        self, pod: PodPlan, capability_args: Mapping[str, Any] | None = None, check: bool = True
    ) -> str:
        """One more pod on a lab that is up (`LabPlan.pod` names it): its address.
        `capability_args`: what the runtime passes as libcni CapabilityArgs (portMappings);
        `check`: CHECK after ADD (containerd never does)."""
        self._create_pod_namespace(pod)
        return self._attach_pod(pod, capability_args, check)

    def _create_pod_namespace(self, pod: PodPlan) -> None:
        with self._state_lock:
            self.state.pods[pod.name] = {"node": pod.node, "netns": pod.netns, "ip": ""}
        self._create_namespace(pod.netns)
        fabric.bring_up_loopback(pod.netns)

    def _attach_pod(
        self, pod: PodPlan, capability_args: Mapping[str, Any] | None = None, check: bool = True
    ) -> str:
        runtime = self.runtime_for(self.lab.node(pod.node))
        attachment = replace(pod_attachment(pod), capability_args=capability_args or {})
        result = runtime.add(attachment)
        if check:
            runtime.check(attachment)
        ip = pod_address(result)
        with self._state_lock:
            self.state.pods[pod.name]["ip"] = ip
        self.save_state()
        return ip

    def add_outsider(self, name: str = "ext", host: int = 200) -> HostPlan:
        """A host on the segment that is not a node: "outside the cluster" (l2 underlay only)."""
        outsider = self.lab.outsider(name, host)
        self._create_namespace(outsider.netns)
        fabric.attach_host(self.lab, outsider)
        return outsider

    # ------------------------------------------------------------ down

    def down(self) -> list[str]:
        """Remove everything; returns the problems met (tear-down goes on past each one)."""
        self.state.phase = "tearing-down"
        if os.path.isdir(self.work_dir):
            self.save_state()
        started, agent_count = time.monotonic(), len(self.state.agents)
        with ThreadPoolExecutor(max_workers=1) as background:
            # agents take a second or two to exit; the plugin needs none of them for DEL
            stopping = background.submit(agents.stop_agents, self.state, self.agents)
            try:
                problems = self._delete_pods()
            except Exception as err:  # whatever went wrong, the namespaces must still go
                problems = [f"deleting pods: {type(err).__name__}: {err}"]
            if self.state.pods:
                seconds = time.monotonic() - started
                deleted = counted(len(self.state.pods), "pod")
                self.log(f"{deleted} deleted (CNI DEL) in {seconds:.1f} s")
            problems += stopping.result()
            if agent_count:
                seconds = time.monotonic() - started
                self.log(f"{counted(agent_count, 'agent')} stopped after {seconds:.1f} s")
        problems += teardown(self.state, self.state_root, self.agents)
        self.log("lab removed" if not problems else f"lab removed with {len(problems)} problems")
        return problems

    def _delete_pods(self) -> list[str]:
        pods = [self.lab.pod_named(name) for name in self.state.pods]

        def delete(pod: PodPlan) -> str | None:
            try:
                self.runtime_for(self.lab.node(pod.node)).delete(pod_attachment(pod))
            except (CniPluginError, OSError, subprocess.TimeoutExpired, LabError) as err:
                return f"DEL {pod.name}: {err}"
            return None

        with ThreadPoolExecutor(max_workers=4) as pool:
            return [p for p in pool.map(delete, pods) if p]


def teardown(
    state: LabState,
    state_root: str = STATE_ROOT,
    running: dict[str, subprocess.Popen[bytes]] | None = None,
) -> list[str]:
    """Stop the agents, kill what still runs in the lab's namespaces, remove them and the files.

    Works from the state file alone (a lab left by a killed run) and also finds namespaces by the
    lab's name prefix, in case the run died between creating one and recording it.
    """
    problems = agents.stop_agents(state, running or {})
    names = list(dict.fromkeys([*reversed(state.netns), *lab_namespaces(state.lab_id)]))
    kill_processes_in([netns.path_of(name) for name in names])
    for name in names:
        netns.remove(name)
    for _attempt in range(3):  # a file written while rmtree walks makes it give up: go again
        shutil.rmtree(state.work_dir, ignore_errors=True)
        if not os.path.exists(state.work_dir):
            break
    else:
        problems.append(f"could not remove {state.work_dir}")
    state.forget(state_root)
    return problems


def lab_namespaces(lab_id: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(netns.NETNS_RUN_DIR) if n.startswith(f"{lab_id}-"))
    except FileNotFoundError:
        return []


# ------------------------------------------------------------ pure helpers


def counted(number: int, noun: str) -> str:
    """ "1 pod", "2 pods": what the lab's log lines count."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def reference_conflist(node: NodePlan, ipam_dir: str, mtu: int) -> dict[str, Any]:
    """bridge + host-local, the reference plugins, wired as minicni wires a node (no masquerade)."""
    return {
        "cniVersion": "1.0.0",
        "name": "lab-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": REFERENCE_BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                    "dataDir": ipam_dir,
                },
            }
        ],
    }


def pod_attachment(pod: PodPlan) -> Attachment:
    pod_name = pod.name.replace("/", "-")
    return Attachment(
        container_id=pod.container_id,
        netns=netns.path_of(pod.netns),
        ifname=pod.ifname,
        args=(
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", "lab"),
            ("K8S_POD_NAME", pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", pod.container_id),
        ),
    )


def pod_address(result: dict[str, Any]) -> str:
    """The pod interface's IPv4 address in a CNI result (the ip whose interface has a sandbox)."""
    interfaces = result.get("interfaces") or []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        if index is None or (0 <= index < len(interfaces) and interfaces[index].get("sandbox")):
            return str(ip["address"]).split("/")[0]
    raise LabError(f"the CNI result has no address on the pod interface: {result}")


def _run(argv: list[str]) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {completed.stderr.strip()}")
