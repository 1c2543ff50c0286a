"""One state file per lab (/run/minicni-lab/<id>.json), written before anything is created and
after every step, so `minicni-lab down` can remove a lab whose creator was killed."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from minicni.fileutil import write_atomic

STATE_ROOT = os.environ.get("MINICNI_LAB_STATE_DIR", "/run/minicni-lab")


@dataclass
class LabState:
    lab_id: str
    topology: dict[str, Any]
    work_dir: str
    phase: str = "creating"  # creating -> up -> tearing-down
    owner_pid: int = field(default_factory=os.getpid)
    netns: list[str] = field(default_factory=list)  # created, in creation order
    agents: dict[str, int] = field(default_factory=dict)  # node name -> pid
    pods: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> node, ip, ...
    inventory: dict[str, Any] | None = None
    # --runtime cri: each node's containerd (lab.runtimes.cri.containerd.ContainerdNode), and the
    # runtime's host dirs (/run/containerd/s...) that did not exist before this lab
    cri_nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    cri_host_dirs: list[str] = field(default_factory=list)

    @staticmethod
    def path_for(lab_id: str, root: str = STATE_ROOT) -> str:
        return os.path.join(root, f"{lab_id}.json")

    def save(self, root: str = STATE_ROOT) -> None:
        document = json.dumps(asdict(self), indent=2).encode()
        write_atomic(self.path_for(self.lab_id, root), document, durable=False)

    def forget(self, root: str = STATE_ROOT) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(self.lab_id, root))
        with contextlib.suppress(OSError):  # the last lab gone: leave no empty directory behind
            os.rmdir(root)

    @classmethod
    def load(cls, lab_id: str, root: str = STATE_ROOT) -> LabState:
        with open(cls.path_for(lab_id, root), encoding="utf-8") as stream:
            return cls(**json.load(stream))


def known_labs(root: str = STATE_ROOT) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(name[: -len(".json")] for name in names if name.endswith(".json"))
