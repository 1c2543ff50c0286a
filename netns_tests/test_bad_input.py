"""Bad input, as a runtime (or an attacker) might pass it: the right error code on stdout, a
non-zero exit, no traceback, and nothing changed on the host or in the data dir."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_tests.conftest import PLUGIN_PATHS, FakeNode, PluginRun, host_snapshot

pytestmark = [pytest.mark.root, pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True)]


@pytest.fixture
def unchanged(node: FakeNode) -> Iterator[str]:
    """A pod namespace; the host namespace, the pod and the data dir must be the same afterwards."""
    pod = node.pod()
    # The parent of the data dir is where an escaping container ID would write; the log file is
    # the one thing a failing command may write.
    before = (host_snapshot(node.host), host_snapshot(pod), node.files())
    yield pod
    after = (host_snapshot(node.host), host_snapshot(pod), node.files())
    assert after == before


def assert_error(run: PluginRun, code: int) -> dict[str, Any]:
    assert run.code != 0, run
    document = json.loads(run.stdout)
    assert set(document) == {"cniVersion", "code", "msg", "details"}, document
    assert document["code"] == code, run
    assert "Traceback" not in run.stdout and "Traceback" not in run.stderr
    return document  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "stdin",
    [b"", b"{", b'{"cniVersion": "1.1.0", "name": ', b"\xff\xfe\x00", b"[]", b"null"],
    ids=["empty", "brace", "truncated", "binary", "list", "null"],
)
@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_malformed_json(node: FakeNode, unchanged: str, command: str, stdin: bytes) -> None:
    run = node.run(command, None, node.container_id(), unchanged, stdin=stdin)
    assert_error(run, 6)


@pytest.mark.parametrize("version", ["0.2.0", "1.2.0", "2.0.0", ""])
def test_unknown_version(node: FakeNode, unchanged: str, version: str) -> None:
    run = node.add(unchanged, node.container_id(), config=node.config(version))
    assert_error(run, 1)


@pytest.mark.parametrize("missing", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_missing_env(node: FakeNode, unchanged: str, missing: str) -> None:
    run = node.add(unchanged, node.container_id(), env={missing: None})
    document = assert_error(run, 4)
    assert missing in document["msg"]


@pytest.mark.parametrize(
    "container_id",
    ["../../x", "../../../../tmp/pt-escape", "a/../../b", "/abs", ".", "..", "x y", "abc\n"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_bad_container_id(node: FakeNode, unchanged: str, command: str, container_id: str) -> None:
    config = node.config(prevResult={"interfaces": [], "ips": []})
    run = node.run(command, config, container_id, unchanged)
    assert_error(run, 4)
    assert not Path("/tmp/pt-escape").exists()


@pytest.mark.parametrize(
    "ifname", ["a" * 16, "eth0/../x", "eth:0", "eth 0", ".."], ids=["16-chars", "/", ":", " ", ".."]
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_bad_ifname(node: FakeNode, unchanged: str, command: str, ifname: str) -> None:
    config = node.config(prevResult={"interfaces": [], "ips": []})
    run = node.run(command, config, node.container_id(), unchanged, ifname)
    assert_error(run, 4)


def test_fifteen_character_ifname_works(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.run("ADD", None, cid, pod, "a" * 15)
    assert added.code == 0, added
    assert added.json["interfaces"][2]["name"] == "a" * 15
    assert node.run("DEL", None, cid, pod, "a" * 15).code == 0


@pytest.mark.parametrize(
    ("subnet", "code"),
    [
        ("10.99.0.0/33", 7),
        ("not-a-subnet", 7),
        ("10.99.0.0/31", 7),
        ("fd00::/127", 7),
        (["10.99.0.0/24", "10.98.0.0/24"], 2),  # one subnet per family
        (["10.99.0.0/24", "fd00::/64", "fd01::/64"], 7),
    ],
)
def test_invalid_subnet(node: FakeNode, unchanged: str, subnet: object, code: int) -> None:
    run = node.add(unchanged, node.container_id(), config=node.config(subnet=subnet))
    document = assert_error(run, code)
    assert "subnet" in document["msg"]


@pytest.mark.parametrize(
    ("overrides", "code", "key"),
    [
        ({"subnet": None}, 7, "subnet"),
        ({"mtu": "big"}, 7, "mtu"),
        ({"bridge": "a-very-long-bridge"}, 7, "bridge"),
        ({"name": "../escape"}, 7, "name"),
        ({"dataDir": "relative"}, 7, "dataDir"),
        ({"ipam": {"type": "dhcp"}}, 2, "ipam.type"),
    ],
)
def test_invalid_config(
    node: FakeNode, unchanged: str, overrides: dict[str, Any], code: int, key: str
) -> None:
    run = node.add(unchanged, node.container_id(), config=node.config(**overrides))
    document = assert_error(run, code)
    assert key in document["msg"]


def test_unexpected_types_inside_the_config_are_not_internal_errors(
    node: FakeNode, unchanged: str
) -> None:
    run = node.add(unchanged, node.container_id(), config=node.config(ipam=["x"]))
    assert_error(run, 7)


def test_version_with_only_cni_version(node: FakeNode) -> None:
    for stdin in (b'{"cniVersion": "1.0.0"}', b"", b"garbage"):
        run = node.run("VERSION", None, None, None, None, stdin=stdin, env={"CNI_PATH": None})
        assert run.code == 0, run
        assert run.json == {
            "cniVersion": "1.1.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        }
    assert not os.path.exists(node.store_dir)
