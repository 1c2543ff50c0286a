"""A virtual cluster in network namespaces: nodes, underlay, agents (or reference plugins), pods.

Each node's agent is a process of this checkout (lab.cluster.agents) or, with `agent: image`, the
DaemonSet's container run from the built image (lab.cluster.image_nodes). Pods are added by the
lab's own runtime (lab.runtimes.libcni) or, with `runtime: cri`, created as kubelet creates them
through a containerd per node (lab.runtimes.cri).
`NetnsLab.up()` builds it and returns the matrix inventory; `down()` removes everything it made,
and `teardown(state)` does the same for a lab left behind by a killed run, from its state file and
by name prefix. Every step is recorded in the state file before it is taken.

The root tests build their clusters here too: with `start_agents=False` the agents are theirs to
run (`run_agent_once`, `start_agent`), and `add_pod` and `add_outsider` grow a lab that is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.cluster import agents, fabric, services
from lab.cluster.processes import kill_processes_in, signals_deferred
from lab.cluster.state import STATE_ROOT, LabState
from lab.matrix.executors import NODE, POD, Endpoint, Inventory
from lab.runtimes.cni_plugins import REFERENCE_BIN_DIR, install_loopback
from lab.runtimes.cri.cleanup import remove_tree
from lab.runtimes.libcni import Attachment, CniPluginError, CniRuntime
from lab.topology import HostPlan, LabPlan, NodePlan, PodPlan
from minicni.net import netns

if TYPE_CHECKING:  # grpc, podman's helpers: imported only when a lab uses them
    from lab.cluster.image_nodes import ImageNodes
    from lab.runtimes.cri.runtime import CriLabRuntime

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
        self._cri: CriLabRuntime | None = None
        self.image: ImageNodes | None = None  # agent image: the nodes' agent containers
        if lab.topology.agent == "image":
            from lab.cluster.image_nodes import ImageNodes

            self.image = ImageNodes(lab, self.work_dir, str(self.nodes_file), log)

    @classmethod
    def from_state(
        cls, state: LabState, state_root: str = STATE_ROOT, log: Log = _quiet
    ) -> NetnsLab:
        """The lab a state file describes (names are derived, so the plan is the same)."""
        from lab.topology import Topology, plan

        lab = cls(plan(Topology.from_mapping(state.topology), state.lab_id), state_root, log)
        lab.state = state
        return lab

    @property
    def cri(self) -> CriLabRuntime:
        """runtime cri: the nodes' containerds (made on first use, from the state file too)."""
        if self._cri is None:
            try:
                from lab.runtimes.cri.runtime import CriLabRuntime
            except ModuleNotFoundError as err:  # an install without the `cri` extra
                raise LabError(
                    f"the CRI runtime needs {err.name}: pip install 'minicni[cri]'"
                ) from err
            self._cri = CriLabRuntime(self.state, self.save_state)
        return self._cri

    def save_state(self) -> None:
        with self._state_lock:
            self.state.save(self.state_root)

    def node_dir(self, node: NodePlan, *parts: str) -> str:
        return os.path.join(self.work_dir, node.name, *parts)

    def files(self, node: NodePlan) -> agents.NodeFiles:
        return agents.NodeFiles(Path(self.node_dir(node)))

    @property
    def nodes_file(self) -> Path:
        """In a directory of its own: agents run from the image have that directory mounted."""
        return Path(self.work_dir, "nodes", "nodes.json")

    # ------------------------------------------------------------ up

    def up(self) -> Inventory:
        """Build the whole cluster; on any failure (Ctrl-C included) remove what was built."""
        os.makedirs(self.work_dir, exist_ok=False)  # an id collision stops here, harming nothing
        try:
            topology = self.lab.topology
            self.save_state()
            self._create_namespaces()
            fabric.build_fabric(self.lab)
            if topology.forward_drop:
                for node in self.lab.nodes:
                    _run(["ip", "netns", "exec", node.netns, "iptables", "-P", "FORWARD", "DROP"])
            self.log(f"underlay ready ({topology.underlay})")
            if topology.plugin == "reference":
                self._prepare_reference_plugins()
            else:
                self._prepare_agent_nodes()
                if self.start_agents:
                    self._spawn_agents()
            if topology.runtime == "cri":
                self._start_cri_nodes()  # while the agents install: a node boots this way too
            if topology.plugin == "minicni" and self.start_agents:
                self._await_agents()
            if topology.runtime == "cri" and self.start_agents:
                self.cri.wait_network_ready()  # as kubelet does before it starts pods
                self.log("NetworkReady on every node (CRI Status)")
            inventory = self._add_pods()
            # the image's agents have their own log paths (checked in their root test)
            served = topology.fast_path and topology.agent == "process" and self.start_agents
            if topology.plugin == "minicni" and served:
                agents.require_served([self.files(node) for node in self.lab.nodes])
                self.log("every CNI call served by the agents (the fast path)")
            if self.lab.services:
                backends = services.install(self.lab, self.pod_ips(inventory))
                shown = ", ".join(sorted(set(backends.values())))
                self.log(f"kube-proxy's rules for {counted(len(self.lab.services), 'Service')} "
                         f"on every node (iptables {shown})")  # fmt: skip
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
        self.nodes_file.parent.mkdir()
        self.write_nodes(agents.nodes_document(self.lab))
        if self.image:
            self.image.prepare()
        for node in self.lab.nodes:
            if not self.image:
                self.files(node).create()
            install_loopback(self.cni_dirs(node)[1])  # as kind and kubeadm nodes ship it

    def _spawn_agents(self) -> None:
        if self.image:
            settings = agents.manifest_settings(self.lab.topology)
            self.image.start(self.lab.topology.image, settings)
            return
        for node in self.lab.nodes:
            self.start_agent(node)

    def _await_agents(self) -> None:
        if self.image:
            self.image.await_ready()
            return
        timeout = agents.ready_timeout(self.lab.topology, self.agent_timeout)
        for node in self.lab.nodes:
            self.await_agent(node, timeout)
        self.log(f"{counted(len(self.lab.nodes), 'agent')} ready ({self.lab.topology.backend})")

    def _start_cri_nodes(self) -> None:
        """A containerd in every node, reading the node's CNI conf dir, running its bin dir."""
        nodes = []
        for node in self.lab.nodes:
            conf_dir, bin_dir = self.cni_dirs(node)
            nodes.append((node, conf_dir, bin_dir))
        # agent image: containerd sees the node's own files, where the agent installed the plugin
        views = {node.name: self.image.view(node) for node in self.lab.nodes} if self.image else {}
        self.cri.start_nodes(nodes, self.lab.lab_id, views)
        self.log(f"{counted(len(nodes), 'containerd')} started (CRI, one per node)")

    # ------------------------------------------------------------ agents

    def agent_argv(self, node: NodePlan, *extra: str) -> list[str]:
        if self.image:
            raise LabError("this lab's agents run from the image: no agent process to start")
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

    def await_agent(self, node: NodePlan, timeout: float | None = None) -> None:
        """Until the node's agent (started with `start_agent`) is ready, as `up` waits."""
        agents.await_ready(
            node,
            self.files(node),
            self.agents[node.name],
            timeout or agents.ready_timeout(self.lab.topology, self.agent_timeout),
            serving=self.lab.topology.fast_path,
        )

    def run_agent_once(self, node: NodePlan, *extra: str) -> subprocess.CompletedProcess[str]:
        return agents.run_agent_once(self.agent_argv(node, "--once", *extra))

    def write_nodes(self, document: Mapping[str, Any] | str) -> None:
        """Replace the nodes file every agent of the lab reads."""
        agents.write_nodes_file(self.nodes_file, document)

    # ------------------------------------------------------------ pods

    def cni_dirs(self, node: NodePlan) -> tuple[str, str]:
        """The node's CNI conf dir and bin dir, as its runtime is configured with them."""
        if self.lab.topology.plugin == "reference":
            return self.node_dir(node, "net.d"), REFERENCE_BIN_DIR
        if self.image:
            return self.image.cni_dirs(node)
        files = self.files(node)
        return str(files.conf_dir), str(files.bin_dir)

    def runtime_for(self, node: NodePlan) -> CniRuntime:
        """The lab's own runtime, on the node's conflist (it runs the first one, as containerd)."""
        conf_dir, bin_dir = self.cni_dirs(node)
        reference = self.lab.topology.plugin == "reference"
        conflist = REFERENCE_CONFLIST if reference else agents.MINICNI_CONFLIST
        exec_prefix = ["ip", "netns", "exec", node.netns]
        if self.image:  # the plugin as the agent installed it, seeing the node's own files
            exec_prefix = [*self.image.view(node), "nsenter", f"--net={netns.path_of(node.netns)}"]
        return CniRuntime.from_file(
            os.path.join(conf_dir, conflist),
            bin_dirs=[bin_dir],
            cache_dir=self.node_dir(node, "cni-cache"),
            exec_prefix=exec_prefix,
            libcni=self.lab.topology.libcni,
        )

    def _add_pods(self) -> Inventory:
        if self.lab.topology.runtime == "cri":
            return self._run_pod_sandboxes()
        for pod in self.lab.pods:  # namespaces first, in this thread (see _create_namespace)
            self._create_pod_namespace(pod)
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            addresses = list(pool.map(self._attach_pod, self.lab.pods))
        finally:
            # interrupted: let the ADDs in flight finish (DEL then finds them), start no more
            pool.shutdown(wait=True, cancel_futures=True)
        self.log(f"{counted(len(self.lab.pods), 'pod')} added and checked (CNI ADD + CHECK)")
        endpoints = [node_endpoint(node) for node in self.lab.nodes]
        for pod, ips in zip(self.lab.pods, addresses, strict=True):
            endpoints.append(Endpoint(pod.name, POD, pod.node, ips[0], pod.netns, ips=ips))
        lab_services = services.matrix_services(self.lab.services)
        return Inventory.build(endpoints, name=self.lab.lab_id, services=lab_services)

    @staticmethod
    def pod_ips(inventory: Inventory) -> dict[str, str]:
        return {pod.name: pod.ip for pod in inventory.pods}

    def _run_pod_sandboxes(self) -> Inventory:
        """Every pod a sandbox, through its node's CRI; the sandboxes' network namespaces (paths
        under containerd's state) are where the pods' probes run."""
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            sandboxes = list(pool.map(self._run_pod_sandbox, self.lab.pods))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        pods = counted(len(self.lab.pods), "pod")
        self.log(f"{pods} running (CRI RunPodSandbox + PodSandboxStatus)")
        endpoints = [node_endpoint(node) for node in self.lab.nodes]
        for pod, (ips, netns_path) in zip(self.lab.pods, sandboxes, strict=True):
            endpoints.append(Endpoint(pod.name, POD, pod.node, ips[0], netns_path, ips=ips))
        lab_services = services.matrix_services(self.lab.services)
        return Inventory.build(endpoints, name=self.lab.lab_id, services=lab_services)

    def _run_pod_sandbox(self, pod: PodPlan) -> tuple[tuple[str, ...], str]:
        """RunPodSandbox for `pod`: its addresses (IPv4 first) and its network namespace's
        path."""
        with self._state_lock:
            self.state.pods[pod.name] = {"node": pod.node, "netns": "", "ip": "", "sandbox": ""}
        ips, netns_path, sandbox_id = self.cri.run_pod(pod)
        ips = tuple(sorted(ips, key=lambda address: ":" in address))
        with self._state_lock:
            self.state.pods[pod.name].update(netns=netns_path, ip=",".join(ips), sandbox=sandbox_id)
        self.save_state()
        return ips, netns_path

    def add_pod(
        self, pod: PodPlan, capability_args: Mapping[str, Any] | None = None, check: bool = True
    ) -> str:
        """One more pod on a lab that is up (`LabPlan.pod` names it): its (first) address.
        `capability_args`: what the runtime passes as libcni CapabilityArgs (portMappings);
        `check`: CHECK after ADD (containerd never does)."""
        return self.add_pod_addresses(pod, capability_args, check)[0]

    def add_pod_addresses(
        self, pod: PodPlan, capability_args: Mapping[str, Any] | None = None, check: bool = True
    ) -> tuple[str, ...]:
        """`add_pod`, answering every address of the pod (one per family, IPv4 first)."""
        if self.lab.topology.runtime == "cri":
            return self._run_pod_sandbox(pod)[0]
        self._create_pod_namespace(pod)
        return self._attach_pod(pod, capability_args, check)

    def _create_pod_namespace(self, pod: PodPlan) -> None:
        with self._state_lock:
            self.state.pods[pod.name] = {"node": pod.node, "netns": pod.netns, "ip": ""}
        self._create_namespace(pod.netns)
        fabric.bring_up_loopback(pod.netns)

    def _attach_pod(
        self, pod: PodPlan, capability_args: Mapping[str, Any] | None = None, check: bool = True
    ) -> tuple[str, ...]:
        runtime = self.runtime_for(self.lab.node(pod.node))
        attachment = replace(pod_attachment(pod), capability_args=capability_args or {})
        result = runtime.add(attachment)
        if check:
            runtime.check(attachment)
        ips = pod_addresses(result)
        with self._state_lock:
            self.state.pods[pod.name]["ip"] = ",".join(ips)
        self.save_state()
        return ips

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
        how = "CRI Stop+RemovePodSandbox, containerd stopped" if self.state.cri_nodes else "CNI DEL"
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
                self.log(f"{deleted} deleted ({how}) in {seconds:.1f} s")
            problems += stopping.result()
            if agent_count:
                seconds = time.monotonic() - started
                self.log(f"{counted(agent_count, 'agent')} stopped after {seconds:.1f} s")
        problems += teardown(self.state, self.state_root, self.agents)
        self.log("lab removed" if not problems else f"lab removed with {len(problems)} problems")
        return problems

    def _delete_pods(self) -> list[str]:
        if self.state.cri_nodes:  # kubelet's deletion: StopPodSandbox + RemovePodSandbox, CNI DEL
            return self.cri.stop()
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
    if state.cri_nodes:  # before the namespaces go: sandboxes, daemons, shims, mounts, cgroups
        from lab.runtimes.cri.runtime import stop_cri_nodes

        problems += stop_cri_nodes(state)
    if state.topology.get("agent") == "image":  # the agent containers, the lab's podman store
        from lab.cluster import image_nodes

        problems += image_nodes.remove(state.work_dir, state.lab_id)
    names = list(dict.fromkeys([*reversed(state.netns), *lab_namespaces(state.lab_id)]))
    kill_processes_in([netns.path_of(name) for name in names])
    for name in names:
        netns.remove(name)
    problems += remove_tree(state.work_dir)
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
    """bridge + host-local, the reference plugins, wired as minicni wires a node (no masquerade):
    one range set per family of the node's pod CIDRs."""
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
                    "ranges": [[{"subnet": cidr}] for cidr in node.pod_cidrs],
                    "dataDir": ipam_dir,
                },
            }
        ],
    }


def node_endpoint(node: NodePlan) -> Endpoint:
    """A node in the matrix: its underlay address of each family."""
    return Endpoint(node.name, NODE, node.name, node.primary_ip, node.netns, ips=node.ips)


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
    """The pod interface's first address in a CNI result (IPv4 in a dual-stack result)."""
    return pod_addresses(result)[0]


def pod_addresses(result: dict[str, Any]) -> tuple[str, ...]:
    """The pod interface's addresses in a CNI result (the ips whose interface has a sandbox),
    IPv4 first."""
    interfaces = result.get("interfaces") or []
    found = []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        if index is None or (0 <= index < len(interfaces) and interfaces[index].get("sandbox")):
            found.append(str(ip["address"]).split("/")[0])
    if not found:
        raise LabError(f"the CNI result has no address on the pod interface: {result}")
    return tuple(sorted(found, key=lambda address: ":" in address))


def _run(argv: list[str]) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {completed.stderr.strip()}")
