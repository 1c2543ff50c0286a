"""Where the agent learns about nodes: a static file or the Kubernetes API, behind one protocol."""

from __future__ import annotations

import threading
from typing import Protocol

from minicni.agent.model.nodes import NodeEntry


class SourceError(Exception):
    """The source could not give a node set now (unreadable, unparsable, API down)."""


class NodeSource(Protocol):
    def fetch(self) -> list[NodeEntry]:
        """The current node entries; raises SourceError if there is no usable node set."""

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block until the node set may have changed (True), `timeout` passed or `stop` is set."""

    def report_ready(self, node_name: str) -> None:
        """Called once the node's network is up."""

    def close(self) -> None: ...
