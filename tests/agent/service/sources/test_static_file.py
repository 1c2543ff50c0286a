"""The static node source: JSON or YAML, re-read when it changes, unparsable files refused."""

import threading
from pathlib import Path

import pytest

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError
from minicni.agent.service.sources.static_file import StaticFileSource

JSON = '{"nodes": [{"name": "n1", "internalIP": "192.168.50.11", "podCIDR": "10.244.1.0/24"}]}'
YAML = """nodes:
  - name: n1
    internalIP: 192.168.50.11
    podCIDR: 10.244.1.0/24
  - name: n2
    internalIP: 192.168.50.12
    podCIDRs: [10.244.2.0/24]
"""


def test_json(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(JSON)
    assert StaticFileSource(path).fetch() == [NodeEntry("n1", "192.168.50.11", ("10.244.1.0/24",))]


def test_yaml_with_pod_cidrs_list(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(YAML)
    entries = StaticFileSource(path).fetch()
    assert entries[1] == NodeEntry("n2", "192.168.50.12", ("10.244.2.0/24",))


@pytest.mark.parametrize("text", ["{not json: [", "[1, 2]", '{"nodes": 3}', ""])
def test_unusable_files_raise_source_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(text)
    with pytest.raises(SourceError):
        StaticFileSource(path).fetch()


def test_missing_file_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        StaticFileSource(tmp_path / "absent.json").fetch()


def test_odd_items_become_entries_that_validation_rejects(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text('{"nodes": ["n1", {"name": "n2"}]}')
    assert StaticFileSource(path).fetch() == [NodeEntry("", None), NodeEntry("n2", None)]


def test_change_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(JSON)
    source = StaticFileSource(path)
    source.fetch()
    assert not source.changed()
    assert source.wait(0.1, threading.Event()) is False
    replacement = tmp_path / "new.json"
    replacement.write_text(JSON.replace("n1", "n9"))
    replacement.replace(path)
    assert source.wait(2, threading.Event()) is True
    assert source.fetch()[0].name == "n9"


def test_a_dual_stack_node_lists_its_internal_ips_and_pod_cidrs(tmp_path: Path) -> None:
    """The issue's own example, beside a node written the old way."""
    path = tmp_path / "nodes.json"
    path.write_text(
        '{"nodes": [{"name": "n1", "internalIPs": ["192.168.81.11", "fd00:81::11"],'
        ' "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},'
        ' {"name": "n2", "internalIP": "192.168.81.12", "podCIDR": "10.244.2.0/24",'
        ' "internalIPs": ["192.168.81.12", "fd00:81::12"],'
        ' "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}]}'
    )
    first, second = StaticFileSource(path).fetch()
    assert first.addresses == ("192.168.81.11", "fd00:81::11")
    assert first.pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert second.addresses == ("192.168.81.12", "fd00:81::12")  # each address once
    assert second.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")
