"""A virtual cluster in network namespaces: nodes, underlay, agents (or reference plugins), pods.

`NetnsLab.up()` builds it and returns the matrix inventory; `down()` removes everything it made,
and `destroy(lab_id)` does the same for a lab left behind by a killed run, from its state file and
by name prefix. Every step is recorded in the state file before it is taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lab import fabric
from lab.executors import NODE, POD, Endpoint, Inventory
from lab.runtime import Attachment, CniPluginError, CniRuntime
from lab.runtimes.cni_plugins import install_loopback
from lab.state import STATE_ROOT, LabState
from lab.topology import LabPlan, NodePlan, PodPlan
from minicni.net import netns

if TYPE_CHECKING:  # grpc is imported only when a lab uses the CRI runtime
    from lab.runtimes.cri.runtime import CriLabRuntime

REFERENCE_BIN_DIR = "/usr/lib/cni"
BUNDLE_AGENT_TIMEOUT = 180.0  # a bundle install copies ~70 MB per node at once
MINICNI_CONFLIST = "10-minicni.conflist"
REFERENCE_CONFLIST = "10-lab-bridge.conflist"
REFERENCE_BRIDGE = "cni0"
AGENT_HEALTH_ADDR = "127.0.0.1:9095"

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
    ) -> None:
        self.lab = lab
        self.state_root = state_root
        self.log = log
        self.agent_timeout = agent_timeout
        self.work_dir = os.path.join(state_root, lab.lab_id)
        self.state = LabState(lab.lab_id, lab.topology.to_mapping(), self.work_dir)
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self._state_lock = threading.Lock()  # pods are added from a thread pool
        self._cri: CriLabRuntime | None = None

    @property
    def cri(self) -> CriLabRuntime:
        """--runtime cri: the nodes' containerds (made on first use, from the state file too)."""
        if self._cri is None:
            from lab.runtimes.cri.runtime import CriLabRuntime

            self._cri = CriLabRuntime(self.state, self.save_state)
        return self._cri

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
                self._start_cri_nodes()
            else:
                self._spawn_agents()
                self._start_cri_nodes()  # while the agents install: a node boots this way too
                self._await_agents()
            if self.lab.topology.runtime == "cri":
                self.cri.wait_network_ready()
                self.log("NetworkReady on every node (CRI Status)")
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
        self.log(f"{len(self.lab.nodes)} node namespaces created")

    def _create_namespace(self, name: str) -> None:
        """Recorded first, so a crash in between still cleans it up; created with signals held
        back, because pyroute2 forks a child to do it and an interrupted parent would abandon
        that child, which then creates the namespace after the tear-down has looked.
        Only from the main thread: forking while other threads run Python code can deadlock."""
        self.state.netns.append(name)
        self.save_state()
        with signals_deferred():
            netns.create(name)

    def node_dir(self, node: NodePlan, *parts: str) -> str:
        return os.path.join(self.work_dir, node.name, *parts)

    def _prepare_reference_plugins(self) -> None:
        for node in self.lab.nodes:
            os.makedirs(self.node_dir(node, "net.d"))
            conflist = reference_conflist(node, self.node_dir(node, "ipam"), self.lab.topology.mtu)
            with open(self.node_dir(node, "net.d", REFERENCE_CONFLIST), "w", encoding="utf-8") as f:
                json.dump(conflist, f, indent=2)
            fabric.add_bridge_with_pinned_mac(node.netns, REFERENCE_BRIDGE)
        fabric.add_pod_cidr_routes(self.lab)
        self.log("reference bridge + host-local conflists written, pod CIDR routes added")

    def _start_cri_nodes(self) -> None:
        """--runtime cri: a containerd in every node, its CNI dirs the node's own."""
        if self.lab.topology.runtime != "cri":
            return
        nodes = []
        for node in self.lab.nodes:
            conf_dir = self.node_dir(node, "net.d")
            os.makedirs(conf_dir, exist_ok=True)
            reference = self.lab.topology.plugin == "reference"
            bin_dir = REFERENCE_BIN_DIR if reference else self.node_dir(node, "bin")
            nodes.append((node, conf_dir, bin_dir))
        self.cri.start_nodes(nodes, self.lab.lab_id)
        self.log(f"{len(nodes)} containerd started (CRI, one per node)")

    def _spawn_agents(self) -> None:
        nodes_file = os.path.join(self.work_dir, "nodes.json")
        with open(nodes_file, "w", encoding="utf-8") as stream:
            json.dump(nodes_document(self.lab), stream, indent=2)
        agent = _console_script("minicni-agent")
        for node in self.lab.nodes:
            for part in ("net.d", "bin", "state", "ipam", "opt"):
                os.makedirs(self.node_dir(node, part))
            install_loopback(self.node_dir(node, "bin"))  # as kind and kubeadm nodes ship it
            argv = ["ip", "netns", "exec", node.netns, agent, *self.agent_flags(node, nodes_file)]
            log = open(self.node_dir(node, "agent.log"), "ab")  # noqa: SIM115 (the agent owns it)
            with log:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            self.agents[node.name] = process
            self.state.agents[node.name] = process.pid
            self.save_state()

    def _await_agents(self) -> None:
        for node in self.lab.nodes:
            self._await_agent(node)
        self.log(f"{len(self.lab.nodes)} agents ready ({self.lab.topology.backend})")

    @property
    def plugin_install(self) -> str:
        """bundle (the plugin and its own Python, as the DaemonSet installs it) when a real
        runtime runs it; the lab's own runtime takes the quicker launcher."""
        return "bundle" if self.lab.topology.runtime == "cri" else "launcher"

    def agent_flags(self, node: NodePlan, nodes_file: str) -> list[str]:
        topology = self.lab.topology
        return [
            "--node-name",
            node.name,
            "--cluster-cidr",
            topology.cluster_cidr,
            "--backend",
            topology.backend,
            "--nodes-file",
            nodes_file,
            "--cni-conf-dir",
            self.node_dir(node, "net.d"),
            "--cni-bin-dir",
            self.node_dir(node, "bin"),
            "--state-dir",
            self.node_dir(node, "state"),
            "--ipam-data-dir",
            self.node_dir(node, "ipam"),
            "--plugin-log-file",
            os.path.join(self.node_dir(node, "state"), "minicni.log"),
            "--plugin-install",
            self.plugin_install,
            "--plugin-dir",
            self.node_dir(node, "opt"),
            "--health-addr",
            AGENT_HEALTH_ADDR,
            "--resync-seconds",
            str(topology.agent_resync_seconds),
        ]

    def _await_agent(self, node: NodePlan) -> None:
        """Ready = the conflist is written, the plugin installed and /readyz answers 200."""
        conflist = self.node_dir(node, "net.d", MINICNI_CONFLIST)
        timeout = self.agent_timeout
        if self.plugin_install == "bundle":
            timeout = max(timeout, BUNDLE_AGENT_TIMEOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.agents[node.name]
            if process.poll() is not None:
                raise LabError(
                    f"agent on {node.name} exited {process.returncode}:\n"
                    + _tail_file(self.node_dir(node, "agent.log"))
                )
            if (
                os.path.exists(conflist)
                and os.path.exists(self.node_dir(node, "bin", "minicni"))
                and _http_ok(node.netns, AGENT_HEALTH_ADDR, "/readyz")
            ):
                return
            time.sleep(0.05)
        raise LabError(
            f"agent on {node.name} not ready after {timeout:.0f} s:\n"
            + _tail_file(self.node_dir(node, "agent.log"))
        )

    def runtime_for(self, node: NodePlan) -> CniRuntime:
        if self.lab.topology.plugin == "reference":
            conflist, bin_dirs = REFERENCE_CONFLIST, [REFERENCE_BIN_DIR]
        else:
            conflist, bin_dirs = MINICNI_CONFLIST, [self.node_dir(node, "bin")]
        return CniRuntime.from_file(
            self.node_dir(node, "net.d", conflist),
            bin_dirs=bin_dirs,
            cache_dir=self.node_dir(node, "cni-cache"),
            exec_prefix=["ip", "netns", "exec", node.netns],
            libcni=self.lab.topology.libcni,
        )

    def _add_pods(self) -> Inventory:
        if self.lab.topology.runtime == "cri":
            return self._run_pod_sandboxes()
        for pod in self.lab.pods:  # namespaces first, in this thread (see _create_namespace)
            with self._state_lock:
                self.state.pods[pod.name] = {"node": pod.node, "netns": pod.netns, "ip": ""}
            self._create_namespace(pod.netns)
            fabric.bring_up_loopback(pod.netns)
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            addresses = list(pool.map(self._add_pod, self.lab.pods))
        finally:
            # interrupted: let the ADDs in flight finish (DEL then finds them), start no more
            pool.shutdown(wait=True, cancel_futures=True)
        self.log(f"{len(self.lab.pods)} pods added and checked (CNI ADD + CHECK)")
        endpoints = []
        for node in self.lab.nodes:
            endpoints.append(Endpoint(node.name, NODE, node.name, node.ip, node.netns))
        for pod, ip in zip(self.lab.pods, addresses, strict=True):
            endpoints.append(Endpoint(pod.name, POD, pod.node, ip, pod.netns))
        return Inventory.build(endpoints, name=self.lab.lab_id)

    def _run_pod_sandboxes(self) -> Inventory:
        """--runtime cri: every pod a sandbox, through its node's CRI; the sandboxes' network
        namespaces (paths under containerd's state) are where the pods' probes run."""
        for pod in self.lab.pods:
            self.state.pods[pod.name] = {"node": pod.node, "netns": "", "ip": "", "sandbox": ""}

        def run(pod: PodPlan) -> tuple[str, str]:
            ip, netns_path, sandbox_id = self.cri.run_pod(pod)
            with self._state_lock:
                self.state.pods[pod.name].update(netns=netns_path, ip=ip, sandbox=sandbox_id)
            self.save_state()
            return ip, netns_path

        pool = ThreadPoolExecutor(max_workers=4)
        try:
            sandboxes = list(pool.map(run, self.lab.pods))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self.log(f"{len(self.lab.pods)} pods running (CRI RunPodSandbox + PodSandboxStatus)")
        endpoints = [Endpoint(n.name, NODE, n.name, n.ip, n.netns) for n in self.lab.nodes]
        for pod, (ip, netns_path) in zip(self.lab.pods, sandboxes, strict=True):
            endpoints.append(Endpoint(pod.name, POD, pod.node, ip, netns_path))
        return Inventory.build(endpoints, name=self.lab.lab_id)

    def _add_pod(self, pod: PodPlan) -> str:
        runtime = self.runtime_for(self.lab.node(pod.node))
        attachment = pod_attachment(pod)
        result = runtime.add(attachment)
        runtime.check(attachment)
        ip = pod_address(result)
        with self._state_lock:
            self.state.pods[pod.name]["ip"] = ip
        self.save_state()
        return ip

    # ------------------------------------------------------------ down

    def down(self) -> list[str]:
        """Remove everything; returns the problems met (tear-down goes on past each one)."""
        self.state.phase = "tearing-down"
        if os.path.isdir(self.work_dir):
            self.save_state()
        started, agents = time.monotonic(), len(self.state.agents)
        cri = bool(self.state.cri_nodes)
        with ThreadPoolExecutor(max_workers=1) as background:
            # agents take a second or two to exit; the plugin needs none of them for DEL
            stopping = background.submit(stop_agents, self.state, self.agents)
            try:
                problems = self._delete_pods()
            except Exception as err:  # whatever went wrong, the namespaces must still go
                problems = [f"deleting pods: {type(err).__name__}: {err}"]
            if self.state.pods:
                seconds = time.monotonic() - started
                how = "CRI Stop+RemovePodSandbox, containerd stopped" if cri else "CNI DEL"
                self.log(f"{len(self.state.pods)} pods deleted ({how}) in {seconds:.1f} s")
            problems += stopping.result()
            if agents:
                self.log(f"{agents} agents stopped after {time.monotonic() - started:.1f} s")
        problems += teardown(self.state, self.state_root, self.agents)
        self.log("lab removed" if not problems else f"lab removed with {len(problems)} problems")
        return problems

    def _delete_pods(self) -> list[str]:
        if self.state.cri_nodes:  # kubelet's deletion: StopPodSandbox + RemovePodSandbox, CNI DEL
            return self.cri.stop()
        pods = [p for p in self.lab.pods if p.name in self.state.pods]

        def delete(pod: PodPlan) -> str | None:
            try:
                self.runtime_for(self.lab.node(pod.node)).delete(pod_attachment(pod))
            except (CniPluginError, OSError, subprocess.TimeoutExpired, LabError) as err:
                return f"DEL {pod.name}: {err}"
            return None

        with ThreadPoolExecutor(max_workers=4) as pool:
            return [p for p in pool.map(delete, pods) if p]


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the body, then deliver them as they would have been."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only ever reach the main thread
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda n, _f: received.append(n)) for signum in signums
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            os.kill(os.getpid(), signum)


def teardown(
    state: LabState,
    state_root: str = STATE_ROOT,
    agents: dict[str, subprocess.Popen[bytes]] | None = None,
) -> list[str]:
    """Stop the agents, kill what still runs in the lab's namespaces, remove them and the files.

    Works from the state file alone (a lab left by a killed run) and also finds namespaces by the
    lab's name prefix, in case the run died between creating one and recording it.
    """
    problems = stop_agents(state, agents or {})
    if state.cri_nodes:  # before the namespaces go: sandboxes, daemons, shims, mounts, cgroups
        from lab.runtimes.cri.runtime import stop_cri_nodes

        problems += stop_cri_nodes(state)
    names = list(dict.fromkeys([*reversed(state.netns), *lab_namespaces(state.lab_id)]))
    for pid in processes_in([netns.path_of(name) for name in names]):
        _kill(pid)  # probes of an interrupted matrix, an agent that ignored SIGTERM
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


def processes_in(netns_paths: list[str]) -> list[int]:
    """Pids of processes whose network namespace is one of those at `netns_paths`."""
    targets = set()
    for path in netns_paths:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(path)
            targets.add((info.st_dev, info.st_ino))
    if not targets:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                info = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in targets:
                pids.append(int(entry))
    return pids


def stop_agents(
    state: LabState, agents: dict[str, subprocess.Popen[bytes]], grace: float = 3.0
) -> list[str]:
    """SIGTERM every agent at once, SIGKILL those still running after `grace` seconds.

    A recorded pid that no longer runs our agent (the pid was reused) is left alone: without our
    own Popen object, the agent's command line must name this lab's work directory.
    """
    running: dict[str, int] = {}
    for node, pid in state.agents.items():
        if node in agents or state.work_dir in _cmdline(pid):
            _signal(pid, signal.SIGTERM)
            running[node] = pid
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        for node, pid in list(running.items()):
            process = agents.get(node)
            gone = process.poll() is not None if process else not _alive(pid)
            if gone:
                del running[node]
        time.sleep(0.02)
    for node, pid in running.items():
        _kill(pid)
        if node in agents:
            agents[node].wait(5)
    # forget them: a pid signalled again later could belong to someone else by then
    state.agents.clear()
    agents.clear()
    return [f"agent {node} (pid {pid}) ignored SIGTERM, killed" for node, pid in running.items()]


def _alive(pid: int) -> bool:
    """Running, not a zombie. Reaps the pid if it is our own child (an agent this process
    started, seen through a state file rather than its Popen object)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _kill(pid: int) -> None:
    _signal(pid, signal.SIGKILL)


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------ pure helpers


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


def nodes_document(lab: LabPlan) -> dict[str, Any]:
    """The agent's static node source, shaped like the Kubernetes Node fields it needs."""
    return {"nodes": [node_entry(node) for node in lab.nodes]}


def node_entry(node: NodePlan) -> dict[str, str]:
    return {"name": node.name, "internalIP": node.ip, "podCIDR": node.pod_cidr}


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


def _console_script(name: str) -> str:
    beside_python = os.path.join(os.path.dirname(sys.executable), name)
    found = beside_python if os.access(beside_python, os.X_OK) else shutil.which(name)
    if not found:
        raise LabError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def _run(argv: list[str]) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {completed.stderr.strip()}")


def _http_ok(namespace: str, address: str, path: str) -> bool:
    """GET http://address/path from inside the namespace (the socket is opened inside it)."""
    import http.client

    host, port = address.rsplit(":", 1)
    with netns.enter(netns.path_of(namespace)):
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        try:
            connection.connect()
        except OSError:
            connection.close()
            return False
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _tail_file(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "".join(stream.readlines()[-lines:])
    except OSError:
        return "(no log)"
