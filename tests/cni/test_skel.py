"""The dispatcher, driven as the executable drives it: an env dict and stdin bytes in, an exit code
and stdout bytes out. A fake plugin records what reached it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minicni.cni import skel
from minicni.cni.errors import CniError
from minicni.cni.version import SUPPORTED_VERSIONS

RESULT = {
    "interfaces": [
        {"name": "br0", "mac": "00:00:00:00:00:01"},
        {"name": "veth0", "mac": "00:00:00:00:00:02"},
        {"name": "eth0", "mac": "00:00:00:00:00:03", "sandbox": "/run/netns/x"},
    ],
    "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
}


class FakePlugin:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[tuple[str, skel.Request]] = []
        self.fail = fail

    def _record(self, name: str, request: skel.Request) -> None:
        self.calls.append((name, request))
        if self.fail is not None:
            raise self.fail

    def add(self, request: skel.Request) -> dict[str, Any]:
        self._record("add", request)
        return json.loads(json.dumps(RESULT))

    def delete(self, request: skel.Request) -> None:
        self._record("delete", request)

    def check(self, request: skel.Request) -> None:
        self._record("check", request)

    def status(self, request: skel.Request) -> None:
        self._record("status", request)

    def gc(self, request: skel.Request) -> None:
        self._record("gc", request)


def full_env(command: str, **overrides: str | None) -> dict[str, str]:
    env: dict[str, str | None] = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "0123abcd",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def config(version: str = "1.1.0", **extra: Any) -> bytes:
    return json.dumps(
        {"cniVersion": version, "name": "n", "type": "minicni", "subnet": "10.1.0.0/24", **extra}
    ).encode()


def run(
    env: dict[str, str], stdin: bytes, plugin: FakePlugin | None = None
) -> tuple[int, Any, FakePlugin]:
    fake = plugin or FakePlugin()
    code, out = skel.dispatch(env, stdin, lambda: fake)
    assert isinstance(out, bytes)
    document = json.loads(out) if out else None
    if code != 0:
        assert set(document) == {"cniVersion", "code", "msg", "details"}, document
    return code, document, fake


def error_code(document: Any) -> int:
    assert isinstance(document, dict)
    code = document["code"]
    assert isinstance(code, int)
    return code


# -- success paths ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_answers_in_the_config_version(version: str) -> None:
    code, document, fake = run(full_env("ADD"), config(version))
    assert code == 0
    assert document["cniVersion"] == version
    assert [name for name, _ in fake.calls] == ["add"]
    request = fake.calls[0][1]
    assert (request.container_id, request.netns, request.ifname) == (
        "0123abcd",
        "/run/netns/x",
        "eth0",
    )
    assert request.args["K8S_POD_NAME"] == "p"
    assert request.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert request.version == version


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_del_prints_nothing(version: str) -> None:
    code, document, fake = run(full_env("DEL"), config(version))
    assert (code, document) == (0, None)
    assert fake.calls[0][0] == "delete"


def test_del_does_not_need_netns() -> None:
    code, _, fake = run(full_env("DEL", CNI_NETNS=None), config())
    assert code == 0
    assert fake.calls[0][1].netns == ""


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_from_0_4_0(version: str) -> None:
    code, document, fake = run(full_env("CHECK"), config(version))
    assert (code, document) == (0, None)
    assert fake.calls[0][0] == "check"


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_need_only_the_command(command: str) -> None:
    env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    code, document, fake = run(env, config("1.1.0"))
    assert (code, document) == (0, None)
    assert fake.calls[0][0] == command.lower()


# -- VERSION ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stdin",
    [config(), b'{"cniVersion": "0.3.1"}', b'{"cniVersion": "9.9.9"}', b"", b"\xff garbage {"],
    ids=["config", "only-version-0.3.1", "unknown-version", "empty", "garbage"],
)
def test_version_needs_no_valid_config(stdin: bytes) -> None:
    def no_plugin() -> skel.Plugin:
        raise AssertionError("VERSION must not load the plugin")

    code, out = skel.dispatch({"CNI_COMMAND": "VERSION"}, stdin, no_plugin)
    assert code == 0
    document = json.loads(out)
    assert document["cniVersion"] == "1.1.0"
    assert document["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


# -- version errors (code 1) --------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.2.0", "0.1.0", "1.2.0", "2.0.0", "", "latest"])
def test_unknown_version_is_code_1(version: str) -> None:
    code, document, fake = run(full_env("ADD"), config(version))
    assert code != 0
    assert error_code(document) == 1
    assert not fake.calls


def test_missing_version_is_code_1() -> None:
    code, document, _ = run(full_env("ADD"), b'{"name": "n", "type": "minicni"}')
    assert (code != 0, error_code(document)) == (True, 1)


def test_non_string_version_is_code_1() -> None:
    code, document, _ = run(full_env("ADD"), b'{"cniVersion": 1.0, "name": "n"}')
    assert (code != 0, error_code(document)) == (True, 1)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_check_below_0_4_0_is_code_1(version: str) -> None:
    code, document, fake = run(full_env("CHECK"), config(version))
    assert code != 0
    assert error_code(document) == 1
    assert document["cniVersion"] == version
    assert "CHECK" in document["msg"]
    assert not fake.calls


@pytest.mark.parametrize("command", ["STATUS", "GC"])
@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_status_and_gc_below_1_1_0_are_code_1(command: str, version: str) -> None:
    code, document, fake = run(full_env(command), config(version))
    assert code != 0
    assert error_code(document) == 1
    assert command in document["msg"]
    assert not fake.calls


# -- environment errors (code 4) ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "missing"),
    [
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_IFNAME"),
        ("CHECK", "CNI_CONTAINERID"),
        ("CHECK", "CNI_NETNS"),
        ("CHECK", "CNI_IFNAME"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
    ],
)
def test_missing_env_is_code_4_and_named(command: str, missing: str) -> None:
    code, document, fake = run(full_env(command, **{missing: None}), config())
    assert code != 0
    assert error_code(document) == 4
    assert missing in document["msg"]
    assert not fake.calls


def test_empty_env_value_counts_as_missing() -> None:
    code, document, _ = run(full_env("ADD", CNI_NETNS=""), config())
    assert (code != 0, error_code(document)) == (True, 4)
    assert "CNI_NETNS" in document["msg"]


def test_missing_command_is_code_4() -> None:
    code, document, _ = run(full_env("ADD", CNI_COMMAND=None), config())
    assert (code != 0, error_code(document)) == (True, 4)
    assert "CNI_COMMAND" in document["msg"]


def test_unknown_command_is_code_4() -> None:
    code, document, _ = run(full_env("FROB"), config())
    assert (code != 0, error_code(document)) == (True, 4)


@pytest.mark.parametrize(
    "container_id",
    ["../../x", "a/b", "-leading-dash", ".hidden", "a b", "x;rm", "a\nb", "abc\n", "ü"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_bad_container_id_is_code_4(command: str, container_id: str) -> None:
    code, document, fake = run(full_env(command, CNI_CONTAINERID=container_id), config())
    assert code != 0
    assert error_code(document) == 4
    assert not fake.calls


@pytest.mark.parametrize("container_id", ["a", "0123456789abcdef" * 4, "pod_1.2-3", "A.b_c-D"])
def test_good_container_ids_pass(container_id: str) -> None:
    code, _, fake = run(full_env("ADD", CNI_CONTAINERID=container_id), config())
    assert code == 0
    assert fake.calls[0][1].container_id == container_id


@pytest.mark.parametrize(
    "ifname",
    ["a" * 16, "é" * 8, "eth/0", "eth:0", "eth 0", "eth\t0", ".", ".."],
    ids=["16-bytes", "16-utf8-bytes", "slash", "colon", "space", "tab", "dot", "dotdot"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_bad_ifname_is_code_4(command: str, ifname: str) -> None:
    code, document, fake = run(full_env(command, CNI_IFNAME=ifname), config())
    assert code != 0
    assert error_code(document) == 4
    assert not fake.calls


@pytest.mark.parametrize("ifname", ["a" * 15, "net1", "eth0.100", "veth-x_y"])
def test_good_ifnames_pass(ifname: str) -> None:
    code, _, fake = run(full_env("ADD", CNI_IFNAME=ifname), config())
    assert code == 0
    assert fake.calls[0][1].ifname == ifname


def test_bad_cni_args_is_code_4() -> None:
    code, document, _ = run(full_env("ADD", CNI_ARGS="IgnoreUnknown=1;novalue"), config())
    assert (code != 0, error_code(document)) == (True, 4)


def test_cni_args_parsed() -> None:
    assert skel.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=p;EMPTY=;A=b=c") == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAME": "p",
        "EMPTY": "",
        "A": "b=c",
    }
    assert skel.parse_cni_args("") == {}


# -- decoding errors (code 6) -------------------------------------------------------------------
@pytest.mark.parametrize(
    "stdin",
    [b"", b"{", b"not json", b"[1, 2]", b'"string"', b"\xff\xfe", b"null"],
    ids=["empty", "truncated", "text", "list", "string", "bad-utf8", "null"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC"])
def test_malformed_config_is_code_6(command: str, stdin: bytes) -> None:
    code, document, fake = run(full_env(command), stdin)
    assert code != 0
    assert error_code(document) == 6
    assert not fake.calls


# -- errors raised by the plugin --------------------------------------------------------------
def test_cni_error_from_plugin_keeps_its_code() -> None:
    fake = FakePlugin(fail=CniError(101, "range full", "10.1.0.2-10.1.0.254"))
    code, document, _ = run(full_env("ADD"), config("0.4.0"), fake)
    assert code != 0
    assert document == {
        "cniVersion": "0.4.0",
        "code": 101,
        "msg": "range full",
        "details": "10.1.0.2-10.1.0.254",
    }


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC"])
def test_unexpected_exception_is_code_999_without_traceback(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePlugin(fail=KeyError("secret-internal-key"))
    code, out = skel.dispatch(full_env(command), config(), lambda: fake)
    assert code != 0
    document = json.loads(out)
    assert document["code"] == 999
    assert b"Traceback" not in out
    assert out.count(b"\n") == len(out.splitlines()) and out.strip().startswith(b"{")
    assert "Traceback" not in capsys.readouterr().out


def test_failing_plugin_import_is_code_999() -> None:
    def broken() -> skel.Plugin:
        raise ImportError("no module named pyroute2")

    code, out = skel.dispatch(full_env("ADD"), config(), broken)
    assert code != 0
    assert json.loads(out)["code"] == 999


def test_stdout_is_exactly_one_json_document() -> None:
    code, out = skel.dispatch(full_env("ADD"), config(), FakePlugin)
    assert code == 0
    json.loads(out)  # a second document or any log line would make this fail
