"""The last good node set, kept on disk so that an agent restarted while its node source is broken
(an unparsable file, the API down) still knows every peer and plans exactly what is in place."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from minicni.agent.model.nodes import Node
from minicni.fileutil import write_atomic

STATE_FILE = "nodes.json"

log = logging.getLogger(__name__)


def save_nodes(state_dir: Path, nodes: Mapping[str, Node]) -> bool:
    document = {
        "nodes": [
            {"name": n.name, "internalIP": str(n.internal_ip), "podCIDR": str(n.pod_cidr)}
            for n in sorted(nodes.values())
        ]
    }
    text = json.dumps(document, indent=1) + "\n"
    return write_atomic(str(state_dir / STATE_FILE), text.encode(), 0o600)


def load_nodes(state_dir: Path) -> dict[str, Node]:
    """The saved node set; empty if there is none or it cannot be read."""
    path = state_dir / STATE_FILE
    try:
        document = json.loads(path.read_text())
        return {
            item["name"]: Node(
                item["name"], IPv4Address(item["internalIP"]), IPv4Network(item["podCIDR"])
            )
            for item in document["nodes"]
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable state file %s: %s", path, error)
        return {}
