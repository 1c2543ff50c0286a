"""Where the agent learns about nodes: a static file or the Kubernetes API, behind one protocol."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from minicni.agent.model.nodes import NodeEntry


class SourceError(Exception):
    """The source could not give a node set now (unreadable, unparsable, API down)."""


@dataclass(frozen=True)
class SourceHealth:
    """`live` false: the source is stuck and a restart may help (/healthz); `ready` false: its node
    set may be stale (/readyz). `reason` says why, for the log and the endpoints."""

    live: bool = True
    ready: bool = True
    reason: str = ""


class NodeSource(Protocol):
    def fetch(self) -> list[NodeEntry]:
        """The current node entries; raises SourceError if there is no usable node set."""

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block until the node set may have changed (True), `timeout` passed or `stop` is set."""

    def report_ready(self, node_name: str) -> None:
        """Called once the node's network is up."""

    def health(self) -> SourceHealth:
        """Whether the node set is being kept current."""

    def close(self) -> None: ...
