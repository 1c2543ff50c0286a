"""The DaemonSet as written, run for real: the built image, started by podman on two lab nodes
with exactly what deployments/manifests/minicni.yaml says (lab.cluster.daemonset), in a cluster
built by the lab's one builder with `agent: image`.

What a user would check on a node: the agent's container runs with NET_ADMIN and NET_RAW and
nothing else, on a read-only root; it became ready through the manifest's probes; it wrote the
conflist and installed the plugin with its bundled Python runtime into the node's directories;
that plugin answers VERSION on a node with no Python at all and adds and deletes a pod; the node
routes the other node's pod CIDR and has the agent's iptables chains.

podman keeps all its state (storage, run dirs, cgroups) in the lab's directory: nothing reaches
the host's podman. Needs the image `make image-offline` saves (skips, naming that target, when
it is not there).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.cluster.build import NetnsLab, lab_namespaces
from lab.cluster.daemonset import LabNode
from lab.cluster.image_agents import (
    HOST_MOUNT_POINTS,
    PODMAN_HOST_FILES,
    ImageAgent,
    PodmanStore,
    effective_capabilities,
    missing_image_reason,
    stale_image_reason,
)
from lab.cluster.image_nodes import ImageNodes
from lab.runtimes.cri.cleanup import mounts_under
from lab.topology import LabPlan, Topology, new_lab_id, plan
from minicni.net import netns

pytestmark = [pytest.mark.runtime, pytest.mark.slow]

CONFLIST = "etc/cni/net.d/10-minicni.conflist"
LAUNCHER = "opt/cni/bin/minicni"


@dataclass
class ImageCluster:
    lab: NetnsLab
    image: ImageNodes

    @property
    def plan(self) -> LabPlan:
        return self.lab.lab

    @property
    def store(self) -> PodmanStore:
        return self.image.store

    @property
    def agents(self) -> list[ImageAgent]:
        return self.image.agents

    @property
    def nodes(self) -> list[LabNode]:
        return [self.image.node(node) for node in self.plan.nodes]


HOST_CNI_CONF_DIR = "/etc/cni/net.d"  # the host's, which a lab never writes into


def _listing(directory: str) -> set[str]:
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageCluster]:
    reason = missing_image_reason()
    if reason:
        pytest.skip(reason)
    stale = stale_image_reason()
    if stale:  # its failures would be about code that is no longer here
        pytest.fail(stale)
    base = tmp_path_factory.mktemp("dsimage")
    mount_points_before = {d for d in HOST_MOUNT_POINTS if os.path.exists(d)}
    host_cni_before = _listing(HOST_CNI_CONF_DIR)
    podman_before = {d for d, _, _ in PODMAN_HOST_FILES if os.path.exists(d)}
    topology = Topology(nodes=2, pods_per_node=0, backend="auto", underlay="l2", agent="image")
    lab = NetnsLab(plan(topology, new_lab_id()), str(base), log=print)
    lab.up()  # a failed up removes what it built
    assert lab.image is not None
    try:
        yield ImageCluster(lab, lab.image)
    finally:
        problems = lab.down()
    assert not problems, problems
    assert lab_namespaces(lab.lab.lab_id) == []
    assert not mounts_under(str(base))
    # the host's mount point for the node's /run/minicni goes with the lab that made it
    assert {d for d in HOST_MOUNT_POINTS if os.path.exists(d)} <= mount_points_before
    assert _listing(HOST_CNI_CONF_DIR) <= host_cni_before  # podman's lock is in the lab's store
    # podman's blob-info cache (written for root whatever --root says) goes too, on a host that
    # has no podman store of its own
    if not any(os.path.exists(store) for _, _, store in PODMAN_HOST_FILES):
        assert {d for d, _, _ in PODMAN_HOST_FILES if os.path.exists(d)} <= podman_before


def test_the_agent_runs_with_net_admin_and_net_raw_only(cluster: ImageCluster) -> None:
    for agent in cluster.agents:
        assert effective_capabilities(agent.pid()) == {"NET_ADMIN", "NET_RAW"}
        info = json.loads(cluster.store.ok("inspect", "--type", "container", agent.name))[0]
        assert sorted(info["EffectiveCaps"]) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"]
        # the root file system is read-only; the hostPath volumes are not
        wrote = cluster.store("exec", agent.name, "sh", "-c", "touch /probe")
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr
        assert cluster.store("exec", agent.name, "touch", "/var/lib/minicni/.w").returncode == 0


def test_the_agent_is_in_the_nodes_network_namespace(cluster: ImageCluster) -> None:
    for agent in cluster.agents:
        ours = os.stat(agent.node.netns_path)
        theirs = os.stat(f"/proc/{agent.pid()}/ns/net")
        assert (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def test_conflist_and_bundled_plugin_land_in_the_nodes_directories(cluster: ImageCluster) -> None:
    for node in cluster.nodes:
        root = Path(node.root)
        conflist = json.loads((root / CONFLIST).read_text())
        (plugin,) = conflist["plugins"]
        node_plan = cluster.plan.node(node.name)
        assert plugin["type"] == "minicni" and plugin["subnet"] == node_plan.pod_cidr
        launcher = (root / LAUNCHER).read_text()
        (version,) = [p for p in (root / "opt" / "minicni").iterdir() if p.name.startswith("v")]
        assert (version / "bin" / "python3").is_file()
        # The node's paths, as the manifest mounts them; the image's patchelf made the bundled
        # interpreter start on its own, so the kernel runs it on the shim compiled with the
        # agent's socket in it: no /bin/sh, no launcher script.
        python, shim = launcher.splitlines()[0].removeprefix("#!").split(" ")
        assert python == f"/opt/minicni/{version.name}/bin/python3", launcher[:200]
        assert shim.startswith(f"/opt/minicni/{version.name}/shim-") and shim.endswith(".pyc")
        assert (root / shim.lstrip("/")).is_file()


def test_the_bundled_plugin_answers_version_on_a_node_without_python(
    cluster: ImageCluster,
) -> None:
    """chroot into the node's directory: only what the agent installed, and a static shell."""
    busybox = shutil.which("busybox")
    if busybox is None or "statically linked" not in _run(["file", "-L", busybox]).stdout:
        pytest.skip(
            "needs busybox-static for a shell without a libc (apt-get install busybox-static)"
        )
    root = Path(cluster.nodes[0].root)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "sh")
    pythons = [p for p in root.rglob("python3*") if "opt/minicni" not in str(p)]
    assert pythons == []
    answer = _run(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(root), f"/{LAUNCHER}"],
        env={"CNI_COMMAND": "VERSION", "PATH": "/bin"},
        input="",
    )
    assert answer.returncode == 0, answer.stderr
    assert "1.1.0" in json.loads(answer.stdout)["supportedVersions"]


def test_the_bundled_plugin_adds_and_deletes_a_pod(cluster: ImageCluster) -> None:
    """As the node's runtime runs it: in the node's network namespace, with the node's files."""
    node = cluster.nodes[0]
    conflist = json.loads((Path(node.root) / CONFLIST).read_text())
    config = {**conflist["plugins"][0], "cniVersion": conflist["cniVersion"],
              "name": conflist["name"]}  # fmt: skip
    pod = f"{cluster.plan.lab_id}-p0"
    netns.create(pod)
    try:
        env = {
            "CNI_CONTAINERID": "dsimage-1",
            "CNI_NETNS": netns.path_of(pod),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        argv = [*cluster.image.view(cluster.plan.nodes[0]), "nsenter",
                f"--net={node.netns_path}", f"/{LAUNCHER}"]  # fmt: skip
        added = _run(argv, env={**env, "CNI_COMMAND": "ADD"}, input=json.dumps(config))
        assert added.returncode == 0, added.stdout + added.stderr
        address = json.loads(added.stdout)["ips"][0]["address"].split("/")[0]
        store = Path(node.root) / "var/lib/cni/networks" / conflist["name"]
        assert (store / address).is_file()  # the node's address store, as the conflist says
        seen = _run(["ip", "-n", pod, "-4", "-o", "addr", "show", "dev", "eth0"])
        assert address in seen.stdout
        deleted = _run(argv, env={**env, "CNI_COMMAND": "DEL"}, input=json.dumps(config))
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        # The agent answers a DEL once recorded, and releases the address right after.
        deadline = time.monotonic() + 20
        while (store / address).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (store / address).exists()
        assert not [p.name for p in store.iterdir() if p.name.startswith("deleting-")]
        # Served through the node's socket by the agent's container, which logs them.
        served = cluster.agents[0].logs(tail=200)
        assert "CNI ADD dsimage-1" in served and "CNI DEL dsimage-1" in served, served
    finally:
        netns.remove(pod)


def test_the_labs_runtime_adds_a_pod_with_what_the_agent_installed(cluster: ImageCluster) -> None:
    """`minicni-lab --agent image` adds pods so: the node's conflist and launcher, run seeing the
    node's /opt and /var (the lab's `down` deletes the pod through the same plugin)."""
    node_plan = cluster.plan.nodes[1]
    node = cluster.image.node(node_plan)
    address = cluster.lab.add_pod(cluster.plan.pod(node_plan.name, "p9"))
    assert ipaddress.ip_address(address) in ipaddress.ip_network(node_plan.pod_cidr)
    network = json.loads((Path(node.root) / CONFLIST).read_text())["name"]
    assert (Path(node.root) / "var/lib/cni/networks" / network / address).is_file()
    ping = _run(["ip", "netns", "exec", node_plan.netns, "ping", "-c", "1", "-W", "2", address])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_routes_and_firewall_chains_appear_in_the_node_namespace(cluster: ImageCluster) -> None:
    one, two = cluster.plan.nodes
    routes = _run(["ip", "-n", one.netns, "-4", "route", "show", "proto", "109"]).stdout
    assert f"{two.pod_cidr} via {two.ip}" in routes
    # the image's iptables (nft backend by default) or the legacy one: whichever the agent used
    rules = "".join(
        _run(["ip", "netns", "exec", one.netns, tool]).stdout
        for tool in ("iptables-nft-save", "iptables-legacy-save")
        if shutil.which(tool)
    )
    assert ":MINICNI-FWD" in rules and ":MINICNI-POSTRTG" in rules
