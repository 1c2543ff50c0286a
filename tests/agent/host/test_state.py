"""The last good node set on disk: it reads back as it was, in the nodes file's format."""

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

from minicni.agent.host.state import STATE_FILE, load_nodes, save_nodes
from minicni.agent.model.nodes import Node

FOUR = Node("n2", IPv4Address("192.168.50.12"), IPv4Network("10.244.2.0/24"))
DUAL = Node(
    "n1",
    IPv4Address("192.168.81.11"),
    IPv4Network("10.244.1.0/24"),
    IPv6Address("fd00:81::11"),
    IPv6Network("fd00:10:244:1::/64"),
)
SIX = Node("n3", None, None, IPv6Address("fd00:81::13"), IPv6Network("fd00:10:244:3::/64"))


def test_nodes_of_every_family_read_back_as_they_were_saved(tmp_path: Path) -> None:
    nodes = {node.name: node for node in (FOUR, DUAL, SIX)}
    assert save_nodes(tmp_path, nodes) is True
    assert load_nodes(tmp_path) == nodes
    saved = json.loads((tmp_path / STATE_FILE).read_text())["nodes"]
    assert [entry["name"] for entry in saved] == ["n1", "n2", "n3"]
    assert saved[1] == {"name": "n2", "internalIP": "192.168.50.12", "podCIDR": "10.244.2.0/24"}
    assert saved[0]["internalIPs"] == ["192.168.81.11", "fd00:81::11"]
    assert saved[2]["podCIDR"] == "fd00:10:244:3::/64"


def test_an_unreadable_state_file_is_an_empty_node_set(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"nodes": [{"name": "n1", "internalIP": "nope"}]}')
    assert load_nodes(tmp_path) == {}
