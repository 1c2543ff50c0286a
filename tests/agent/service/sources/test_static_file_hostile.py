"""The nodes file as an attacker or an unlucky writer leaves it: a YAML alias bomb, a huge file, a
FIFO, absurd nesting are refused at once with a clear error (the agent keeps its last good node
set); a node that vanishes from the file is withdrawn only after a short grace, so a file caught
half-rewritten does not tear down routes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError, static_file
from minicni.agent.service.sources.static_file import StaticFileSource

N1 = {"name": "n1", "internalIP": "192.168.50.11", "podCIDR": "10.244.1.0/24"}
N2 = {"name": "n2", "internalIP": "192.168.50.12", "podCIDR": "10.244.2.0/24"}


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Run `call` in a thread; fail (rather than hang the suite) if it does not return in time."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not return within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 {name: n1, internalIP: 192.168.50.11, podCIDR: "10.244.1.0/24"}']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"nodes: *a{levels}")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(alias_bomb(9))  # 9**9 entries if expanded: this process would die
    assert len(path.read_bytes()) < 600
    with pytest.raises(SourceError, match="alias"):
        within(5, StaticFileSource(path).fetch)


def test_small_alias_use_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(alias_bomb(2))
    with pytest.raises(SourceError, match="alias"):
        StaticFileSource(path).fetch()


def test_an_anchor_without_an_alias_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n  - &first {name: n1, internalIP: 192.168.50.11}\n")
    assert StaticFileSource(path).fetch() == [NodeEntry("n1", "192.168.50.11")]


def test_a_file_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    padding = " " * static_file.MAX_FILE_BYTES
    path.write_text(json.dumps({"nodes": [N1]}) + padding)
    with pytest.raises(SourceError, match="bytes"):
        StaticFileSource(path).fetch()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    os.mkfifo(path)
    with pytest.raises(SourceError, match="regular file"):
        within(5, StaticFileSource(path).fetch)


@pytest.mark.parametrize(
    "text",
    [
        '{"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nodes: " + "[" * 100_000 + "]" * 100_000,
        '{"nodes": [{"name": ' + "9" * 5000 + "}]}",
        "nodes: [{name: " + "9" * 5000 + "}]",
        b"\xff\xfe{".decode("latin-1"),
    ],
    ids=["deep-json", "deep-yaml", "digits-json", "digits-yaml", "not-utf8"],
)
def test_absurd_documents_are_source_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "nodes.json"
    path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(SourceError):
        within(20, StaticFileSource(path).fetch)


def test_a_vanished_node_is_kept_for_the_grace_then_withdrawn(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [N1, N2]}))
    source = StaticFileSource(path, vanish_grace=0.5)
    assert [e.name for e in source.fetch()] == ["n1", "n2"]
    path.write_text(json.dumps({"nodes": [N1]}))  # cut while being rewritten in place
    assert sorted(e.name for e in source.fetch()) == ["n1", "n2"]
    # The end of the grace is a change worth a reconcile.
    started = time.monotonic()
    assert source.wait(5, threading.Event()) is True
    assert 0.3 < time.monotonic() - started < 2
    assert [e.name for e in source.fetch()] == ["n1"]


def test_a_node_back_within_the_grace_was_never_gone(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [N1, N2]}))
    source = StaticFileSource(path, vanish_grace=0.3)
    source.fetch()
    path.write_text(json.dumps({"nodes": [N1]}))
    source.fetch()
    moved = dict(N2, internalIP="192.168.50.22")
    path.write_text(json.dumps({"nodes": [N1, moved]}))
    assert [e.internal_ip for e in source.fetch()] == ["192.168.50.11", "192.168.50.22"]
    time.sleep(0.4)
    assert len(source.fetch()) == 2
    assert source.wait(0.5, threading.Event()) is False


def test_the_default_grace_is_short(tmp_path: Path) -> None:
    assert 1 <= static_file.VANISH_GRACE_SECONDS <= 10


def test_an_unreadable_file_after_the_grace_does_not_spin_the_loop(tmp_path: Path) -> None:
    """The end of a grace is one change, not a change forever while the file stays broken."""
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [N1, N2]}))
    source = StaticFileSource(path, vanish_grace=0.2)
    source.fetch()
    path.write_text(json.dumps({"nodes": [N1]}))
    source.fetch()
    time.sleep(0.3)
    path.write_text("{ broken")
    assert source.wait(1, threading.Event()) is True  # the grace ended, and the file changed
    with pytest.raises(SourceError):
        source.fetch()
    started = time.monotonic()
    assert source.wait(0.6, threading.Event()) is False
    assert time.monotonic() - started >= 0.5
