"""The last good node set, kept on disk so that an agent restarted while its node source is broken
(an unparsable file, the API down) still knows every peer and plans exactly what is in place."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from minicni.agent.model.nodes import Node, node_from_mapping, node_to_mapping
from minicni.fileutil import write_atomic

STATE_FILE = "nodes.json"

log = logging.getLogger(__name__)


def save_nodes(state_dir: Path, nodes: Mapping[str, Node]) -> bool:
    """In the nodes file's format: an IPv4 node as it always was, IPv6 in the lists beside."""
    document = {"nodes": [node_to_mapping(n) for n in sorted(nodes.values(), key=lambda n: n.name)]}
    text = json.dumps(document, indent=1) + "\n"
    return write_atomic(str(state_dir / STATE_FILE), text.encode(), 0o600)


def load_nodes(state_dir: Path) -> dict[str, Node]:
    """The saved node set; empty if there is none or it cannot be read."""
    path = state_dir / STATE_FILE
    try:
        document = json.loads(path.read_text())
        return {item["name"]: node_from_mapping(item) for item in document["nodes"]}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable state file %s: %s", path, error)
        return {}
