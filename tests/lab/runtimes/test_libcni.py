"""CniRuntime as libcni behaves: plugins in order with prevResult, the ADD result cached and
handed to CHECK and DEL (DEL in reverse), errors carried with their CNI code. The plugins here
are small scripts that log what they were given: no root, no kernel."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from lab.runtimes.libcni import Attachment, CniPluginError, CniRuntime, select_version

FAKE_PLUGIN = """#!{python}
import json, os, sys
config = json.load(sys.stdin)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"type": config["type"], "command": os.environ["CNI_COMMAND"],
        "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}},
        "config": config}}) + "\\n")
if config.get("fail") == os.environ["CNI_COMMAND"]:
    print(json.dumps({{"cniVersion": "1.1.0", "code": 7, "msg": "told to fail", "details": "x"}}))
    sys.exit(1)
if os.environ["CNI_COMMAND"] == "ADD":
    result = config.get("prevResult") or {{"interfaces": [], "ips": []}}
    # a plugin answers in the version it was asked, as minicni does
    result = dict(result, cniVersion=config["cniVersion"], **{{"seen_" + config["type"]: True}})
    print(json.dumps(result))
"""


@pytest.fixture
def plugins(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("first", "second"):
        path = bin_dir / name
        path.write_text(FAKE_PLUGIN.format(python=sys.executable, log=str(log)))
        path.chmod(0o755)
    return bin_dir, log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def runtime(bin_dir: Path, tmp_path: Path, **second: object) -> CniRuntime:
    conflist = {
        "cniVersion": "1.1.0",
        "name": "net1",
        "plugins": [{"type": "first", "bridge": "b0"}, {"type": "second", **second}],
    }
    return CniRuntime(conflist, [str(bin_dir)], str(tmp_path / "cache"))


ATTACHMENT = Attachment("c1", "/run/netns/x", "eth0", (("K8S_POD_NAME", "p"),))


def test_add_chains_results_and_caches_the_last(plugins: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, log = plugins
    rt = runtime(bin_dir, tmp_path)
    result = rt.add(ATTACHMENT)
    assert result["seen_first"] and result["seen_second"]
    first, second = calls(log)
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAME=p",
        "CNI_PATH": str(bin_dir),
    }
    assert first["config"] == {
        "cniVersion": "1.1.0",
        "name": "net1",
        "type": "first",
        "bridge": "b0",
    }
    assert second["config"]["prevResult"]["seen_first"] is True  # type: ignore[index]
    cache = tmp_path / "cache" / "results" / "net1-c1-eth0"
    assert json.loads(cache.read_text())["result"] == result
    assert rt.cached_result(ATTACHMENT) == result


def test_check_and_del_get_the_cached_result_del_in_reverse(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, log = plugins
    rt = runtime(bin_dir, tmp_path)
    result = rt.add(ATTACHMENT)
    rt.check(ATTACHMENT)
    rt.delete(ATTACHMENT)
    later = calls(log)[2:]
    assert [(c["command"], c["type"]) for c in later] == [
        ("CHECK", "first"),
        ("CHECK", "second"),
        ("DEL", "second"),
        ("DEL", "first"),
    ]
    assert all(c["config"]["prevResult"] == result for c in later)  # type: ignore[index]
    assert rt.cached_result(ATTACHMENT) is None


def test_check_without_add_is_refused(plugins: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(LookupError):
        runtime(plugins[0], tmp_path).check(ATTACHMENT)


def test_del_without_cache_still_runs_every_plugin(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, log = plugins
    runtime(bin_dir, tmp_path).delete(ATTACHMENT)
    assert [c["type"] for c in calls(log)] == ["second", "first"]
    assert all("prevResult" not in c["config"] for c in calls(log))  # type: ignore[operator]


def test_a_failing_plugin_raises_its_cni_error_and_nothing_is_cached(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    rt = runtime(plugins[0], tmp_path, fail="ADD")
    with pytest.raises(CniPluginError) as raised:
        rt.add(ATTACHMENT)
    assert (raised.value.plugin, raised.value.code, raised.value.msg) == (
        "second",
        7,
        "told to fail",
    )
    assert rt.cached_result(ATTACHMENT) is None


def test_a_failed_del_keeps_the_cache_for_the_next_try(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    rt = runtime(plugins[0], tmp_path, fail="DEL")
    rt.add(ATTACHMENT)
    with pytest.raises(CniPluginError):
        rt.delete(ATTACHMENT)
    assert rt.cached_result(ATTACHMENT) is not None


def test_missing_plugin_is_named(tmp_path: Path) -> None:
    rt = CniRuntime(
        {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "nope"}]},
        [str(tmp_path)],
        str(tmp_path),
    )
    with pytest.raises(FileNotFoundError, match="nope"):
        rt.add(ATTACHMENT)


def test_exec_prefix_wraps_the_plugin(plugins: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, log = plugins
    conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "first"}]}
    rt = CniRuntime(conflist, [str(bin_dir)], str(tmp_path / "c"), exec_prefix=["env", "LAB_X=1"])
    rt.add(ATTACHMENT)
    assert calls(log)[0]["command"] == "ADD"
    assert os.environ.get("LAB_X") is None


# What the agent writes: 1.0.0 for libcni 1.1, and every version minicni speaks for libcni >= 1.2.
AGENT_STYLE = {"cniVersion": "1.0.0", "cniVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


@pytest.mark.parametrize(
    ("conflist", "libcni", "expected"),
    [
        (AGENT_STYLE, "1.1", "1.0.0"),  # libcni 1.1 ignores cniVersions
        (AGENT_STYLE, "1.2", "1.1.0"),  # the highest it knows
        ({"cniVersion": "1.1.0"}, "1.1", "1.1.0"),  # taken as is (and its result refused later)
        ({"cniVersion": "0.4.0", "cniVersions": ["0.3.1", "2.0.0"]}, "1.2", "0.4.0"),
        ({"cniVersions": ["0.3.1", "1.0.0"]}, "1.2", "1.0.0"),
        ({"cniVersion": "1.0.0", "cniVersions": ["9.9.9"]}, "1.2", "1.0.0"),
    ],
)
def test_version_selection_per_libcni_generation(
    conflist: dict[str, object], libcni: str, expected: str
) -> None:
    assert select_version(conflist, libcni) == expected


@pytest.mark.parametrize(("libcni", "seen"), [("1.1", "1.0.0"), ("1.2", "1.1.0")])
def test_plugins_are_asked_the_selected_version(
    plugins: tuple[Path, Path], tmp_path: Path, libcni: str, seen: str
) -> None:
    bin_dir, log = plugins
    conflist = {**AGENT_STYLE, "name": "n", "plugins": [{"type": "first"}]}
    rt = CniRuntime(conflist, [str(bin_dir)], str(tmp_path / "c"), libcni=libcni)
    assert rt.add(ATTACHMENT)["cniVersion"] == seen
    assert calls(log)[0]["config"]["cniVersion"] == seen  # type: ignore[index]


def test_libcni_1_1_refuses_a_1_1_0_result_as_containerd_1_6_does(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    conflist = {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "first"}]}
    rt = CniRuntime(conflist, [str(plugins[0])], str(tmp_path / "c"), libcni="1.1")
    with pytest.raises(CniPluginError, match=r"unsupported CNI result version '1\.1\.0'"):
        rt.add(ATTACHMENT)
    assert rt.cached_result(ATTACHMENT) is None


def test_capability_args_reach_only_plugins_that_declare_them(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    """libcni's injectRuntimeConfig: a plugin gets `runtimeConfig` with the capabilities it
    declares true, on ADD, CHECK and DEL; the others see none."""
    bin_dir, log = plugins
    rt = runtime(bin_dir, tmp_path, capabilities={"portMappings": True, "bandwidth": False})
    mappings = [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}]
    attachment = Attachment(
        "c1", "/run/netns/x", capability_args={"portMappings": mappings, "bandwidth": {"x": 1}}
    )
    rt.add(attachment)
    rt.check(attachment)
    rt.delete(attachment)
    for call in calls(log):
        config = call["config"]
        assert isinstance(config, dict)
        if call["type"] == "second":
            assert config["runtimeConfig"] == {"portMappings": mappings}, call["command"]
        else:
            assert "runtimeConfig" not in config
