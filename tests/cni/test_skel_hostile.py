"""Hostile input to the dispatcher: every one is a CNI error object with its code, never a
traceback or an internal error (code 999)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minicni.cni import skel
from minicni.cni.errors import CniError
from minicni.cni.validate import validate_interface_name
from minicni.cni.version import normalize_result

CONFIG = {"cniVersion": "1.1.0", "name": "n", "type": "minicni", "subnet": "10.1.0.0/24"}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
}


class NoPlugin:
    """Hostile input must be refused before the plugin is reached."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the plugin was reached ({name})")


def run(env: dict[str, str], stdin: bytes) -> dict[str, Any]:
    code, out = skel.dispatch(env, stdin, NoPlugin)
    assert code == 1
    document: dict[str, Any] = json.loads(out)
    assert set(document) == {"cniVersion", "code", "msg", "details"}
    return document


@pytest.mark.parametrize(
    "stdin",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
        b'{"cniVersion": "1.1.0", "mtu": ' + b"9" * 5000 + b"}",
        b'{"x": [' + b"[" * 70 + b"]" * 70 + b"]}",
        b'{"x": "' + b"a" * (skel.MAX_CONFIG_BYTES + 1) + b'"}',
    ],
    ids=["deep-list", "deep-object", "5000-digits", "deeper-than-the-limit", "too-large"],
)
def test_unbounded_json_is_code_6(stdin: bytes) -> None:
    document = run(ENV, stdin)
    assert document["code"] == 6, document


def test_nesting_within_the_limit_is_accepted() -> None:
    config = dict(CONFIG, runtimeConfig={"a": [[[[{"b": [1]}]]]]})
    assert skel.decode_config(json.dumps(config).encode()) == config


@pytest.mark.parametrize("variable", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"])
def test_env_that_is_not_utf8_is_code_4_naming_the_variable(variable: str) -> None:
    # os.environ hands undecodable bytes over as lone surrogates (surrogateescape).
    env = dict(ENV, **{variable: b"ab\xff\xfe".decode("utf-8", "surrogateescape")})
    document = run(env, json.dumps(CONFIG).encode())
    assert document["code"] == 4 and variable in document["msg"], document


@pytest.mark.parametrize("value", ["a%b", "%d", "%(x)s", "abc\nINFO forged line"])
def test_hostile_container_id_is_code_4_and_quoted(value: str) -> None:
    document = run(dict(ENV, CNI_CONTAINERID=value), json.dumps(CONFIG).encode())
    assert document["code"] == 4
    assert document["details"] == repr(value)
    assert "\n" not in document["msg"] + document["details"]


@pytest.mark.parametrize("value", ["%s", "AD\nD", "%(x)s"])
def test_hostile_command_is_code_4_and_quoted(value: str) -> None:
    document = run(dict(ENV, CNI_COMMAND=value), json.dumps(CONFIG).encode())
    assert document["code"] == 4 and repr(value) in document["msg"], document


@pytest.mark.parametrize(
    "ifname",
    ["eth%d", "e\x00x", "e\x01", "e\udcff"],
    ids=["percent", "nul", "control", "surrogate"],
)
def test_interface_names_the_kernel_would_rewrite_are_refused(ifname: str) -> None:
    with pytest.raises(CniError) as raised:
        validate_interface_name(ifname)
    assert raised.value.code == 4


@pytest.mark.parametrize(
    "prev",
    [
        {"ips": 5},
        {"ips": [5]},
        {"ips": [{"gateway": "10.1.0.1"}]},
        {"ips": [{"address": 7}]},
        {"ips": [{"address": "not-an-address"}]},
        {"ips": [{"address": "10.1.0.2/24", "interface": "2"}]},
        {"ips": [{"address": "10.1.0.2/24", "interface": True}]},
        {"interfaces": "eth0"},
        {"interfaces": [None]},
        {"interfaces": [{"name": 5}]},
        {"routes": {"dst": "0.0.0.0/0"}},
        {"routes": [{"gw": "10.1.0.1"}]},
        {"routes": [{"dst": "0.0.0.0/x"}]},
        {"routes": [{"dst": "0.0.0.0/0", "gw": []}]},
    ],
)
def test_malformed_prev_result_is_code_7_naming_the_key(prev: dict[str, Any]) -> None:
    with pytest.raises(CniError) as raised:
        normalize_result(prev)
    assert raised.value.code == 7
    assert "prevResult." in raised.value.msg


def test_well_formed_prev_result_of_an_older_version_is_normalized() -> None:
    prev = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "mac": "00:00:00:00:00:01", "sandbox": "/run/netns/x"}],
        "ips": [{"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
    }
    normalized = normalize_result(prev)
    assert normalized["ips"] == [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}]
