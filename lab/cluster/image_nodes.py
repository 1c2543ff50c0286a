"""A lab's nodes whose agent is the DaemonSet's, run from the built image (`agent: image`).

`ImageNodes` loads the image once into the lab's own podman store, starts every node's agent
container as the manifest says (lab.cluster.image_agents, lab.cluster.daemonset), and waits for
the manifest's probes. It also knows each node as a runtime sees it: a directory standing in for
the node's "/", the CNI conf and bin dirs at the paths the manifest mounts, and the argv prefix
that makes a process (the plugin, a node's containerd) see the node's /opt, /var/lib and /var/log.

The store lives in the lab's work dir, so `remove` finds it from a state file alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from lab.cluster import daemonset, image_agents
from lab.cluster.daemonset import LabNode
from lab.cluster.image_agents import ImageAgent, ImageAgentError, PodmanStore
from lab.topology import LabPlan, NodePlan
from minicni import defaults
from minicni.agent.service.cli import env_name
from minicni.net import netns

IMAGE_STORE = "podman"  # in the lab's work dir
NODE_ROOT = "root"  # in each node's dir: the node's "/"


class ImageNodesError(RuntimeError):
    pass


class ImageNodes:
    def __init__(
        self, lab: LabPlan, work_dir: str, nodes_file: str, log: Callable[[str], None]
    ) -> None:
        self.lab = lab
        self.work_dir = work_dir
        self.nodes_file = nodes_file  # its directory is mounted into every agent container
        self.log = log
        self.spec = daemonset.load()
        self.agents: list[ImageAgent] = []
        self._store: PodmanStore | None = None

    @property
    def store(self) -> PodmanStore:
        if self._store is None:
            self._store = store_of(self.work_dir, self.lab.lab_id)
        return self._store

    def node(self, plan: NodePlan) -> LabNode:
        return LabNode(
            name=plan.name,
            ip=plan.ip,
            netns_path=netns.path_of(plan.netns),
            root=os.path.join(self.work_dir, plan.name, NODE_ROOT),
            nodes_dir=os.path.dirname(self.nodes_file),
            nodes_file_name=os.path.basename(self.nodes_file),
        )

    def cni_dirs(self, plan: NodePlan) -> tuple[str, str]:
        """The node's CNI conf dir and bin dir on the lab host: where the agent's container writes
        them (the manifest's MINICNI_CNI_CONF_DIR and MINICNI_CNI_BIN_DIR, through its volumes)."""
        node = self.node(plan)

        def on_node(flag: str) -> str:
            in_container = daemonset.env_value(self.spec, env_name(flag))
            return daemonset.node_path(self.spec, node, in_container)

        return on_node("--cni-conf-dir"), on_node("--cni-bin-dir")

    def view(self, plan: NodePlan) -> list[str]:
        """argv prefix: run the rest seeing the node's own /opt, /var/lib and /var/log, as the
        node's runtime runs the plugin the agent installed there."""
        return image_agents.node_view_prefix(self.node(plan).root)

    def prepare(self) -> None:
        """Every node's root, with what kubelet creates for the manifest's hostPath volumes."""
        for plan in self.lab.nodes:
            image_agents.prepare_node_root(self.spec, self.node(plan))

    def start(self, image: str, settings: Mapping[str, str]) -> None:
        """Load `image` ("" = the archive `make image-offline` saved) and start every node's agent
        container; `settings` replace values of the manifest's env, as a user edits them."""
        started = time.monotonic()
        if image:
            loaded = self.store.copy_from_host(image)
        else:
            reason = image_agents.missing_image_reason()
            if reason:
                raise ImageNodesError(reason)
            stale = image_agents.stale_image_reason()
            if stale:
                self.log(f"warning: {stale}")
            loaded = self.store.load_archive(image_agents.image_archive())
        self.log(f"image {loaded} loaded in {time.monotonic() - started:.1f} s")
        overrides = {k: v for k, v in settings.items() if k in self.spec.env_names()}
        for plan in self.lab.nodes:
            name = f"{self.lab.lab_id}-{plan.name}"
            agent = ImageAgent(self.store, self.spec, self.node(plan), name=name)
            agent.start(loaded, env_overrides=overrides, labels={"minicni-lab": self.lab.lab_id})
            self.agents.append(agent)

    def await_ready(self) -> None:
        """Ready as kubelet sees it (the manifest's startup, then readiness probe), with the
        conflist written and the plugin installed."""
        try:
            ready = [agent.wait_ready() for agent in self.agents]
        except ImageAgentError as err:
            raise ImageNodesError(str(err)) from err
        for plan in self.lab.nodes:
            conf_dir, bin_dir = self.cni_dirs(plan)
            wrote = (defaults.CONFLIST_NAME, conf_dir), (defaults.PLUGIN_NAME, bin_dir)
            for path in (os.path.join(directory, name) for name, directory in wrote):
                if not os.path.exists(path):
                    raise ImageNodesError(f"agent on {plan.name} is ready but wrote no {path}")
        self.log(
            f"{len(self.agents)} agent containers ready ({self.lab.topology.backend}), the last "
            f"after {max(ready):.1f} s, with {', '.join(sorted(self.spec.cap_add))} only"
        )


def store_of(work_dir: str, lab_id: str) -> PodmanStore:
    """The lab's own podman (storage, run root, cgroup parent): nothing in the host's."""
    return PodmanStore(os.path.join(work_dir, IMAGE_STORE), cgroup_parent=f"/{lab_id}-podman")


def remove(work_dir: str, lab_id: str) -> list[str]:
    """The agent containers and everything of the lab's podman, if the lab made one."""
    if not os.path.isdir(os.path.join(work_dir, IMAGE_STORE)):
        return []
    problems = store_of(work_dir, lab_id).remove_everything()
    image_agents.release_host_mount_points()
    image_agents.release_podman_host_files()
    return problems
