"""Nodes from a JSON or YAML file, re-read whenever it changes.

Format (it mirrors the Node fields that matter):
`{"nodes": [{"name": "n1", "internalIP": "192.168.50.11", "podCIDR": "10.244.1.0/24"}, ...]}`;
`podCIDRs` (a list) is accepted too, as in a Node's spec.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError

POLL_SECONDS = 0.5


def parse_document(text: str) -> Any:
    """JSON, else YAML (a superset; imported only when needed)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            import yaml
        except ImportError:
            raise SourceError(f"not valid JSON ({json_error}) and PyYAML is missing") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as yaml_error:
            raise SourceError(f"neither JSON nor YAML: {yaml_error}") from None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def entry_from_mapping(raw: Any) -> NodeEntry:
    """One list item; structural problems surface as empty fields that validation reports."""
    if not isinstance(raw, dict):
        return NodeEntry(name="", internal_ip=None)
    cidrs: list[str] = []
    listed = raw.get("podCIDRs")
    if isinstance(listed, list):
        cidrs += [str(cidr) for cidr in listed]
    single = _text(raw.get("podCIDR"))
    if single and single not in cidrs:
        cidrs.insert(0, single)
    return NodeEntry(
        name=_text(raw.get("name")) or "",
        internal_ip=_text(raw.get("internalIP")),
        pod_cidrs=tuple(cidrs),
    )


def entries_from_document(document: Any) -> list[NodeEntry]:
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise SourceError('expected an object with a "nodes" list')
    return [entry_from_mapping(item) for item in document["nodes"]]


class StaticFileSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def fetch(self) -> list[NodeEntry]:
        self._seen = self._signature()
        try:
            text = self.path.read_text()
        except OSError as error:
            raise SourceError(f"cannot read {self.path}: {error}") from None
        try:
            return entries_from_document(parse_document(text))
        except SourceError as error:
            raise SourceError(f"{self.path}: {error}") from None

    def changed(self) -> bool:
        return self._signature() != self._seen

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        remaining = timeout
        while remaining > 0 and not stop.is_set():
            if self.changed():
                return True
            step = min(POLL_SECONDS, remaining)
            stop.wait(step)
            remaining -= step
        return self.changed()

    def report_ready(self, node_name: str) -> None:
        """Nothing to tell a file."""

    def close(self) -> None:
        """Nothing to release."""
