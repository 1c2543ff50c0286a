"""Flags, their environment variables, and the refusal of bad values."""

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from minicni.agent.model.plan import Backend
from minicni.agent.service.cli import build_parser, config_from_args, env_name, main


def test_every_flag_has_an_environment_variable() -> None:
    assert env_name("--node-name") == "MINICNI_NODE_NAME"
    parser = build_parser({})
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert env_name(action.option_strings[0]) in (action.help or ""), action.dest


def test_defaults() -> None:
    args = build_parser({"NODE_NAME": "kind-worker"}).parse_args([])
    config = config_from_args(args)
    assert config.node_name == "kind-worker"
    assert config.backend is Backend.AUTO
    assert config.cni_conf_dir == Path("/etc/cni/net.d")
    assert config.cni_bin_dir == Path("/opt/cni/bin")
    assert config.ipam_data_dir == "/var/lib/cni/networks"
    assert config.plugin_install == "bundle"
    assert config.plugin_dir == Path("/opt/minicni")
    assert args.once is False


def test_environment_sets_and_flags_override() -> None:
    environ = {
        "MINICNI_NODE_NAME": "n7",
        "MINICNI_CLUSTER_CIDR": "10.96.0.0/12",
        "MINICNI_BACKEND": "vxlan",
        "MINICNI_ONCE": "true",
        "MINICNI_PLUGIN_INSTALL": "launcher",
    }
    args = build_parser(environ).parse_args(["--backend", "host-gw"])
    config = config_from_args(args)
    assert config.node_name == "n7"
    assert config.cluster_cidr == IPv4Network("10.96.0.0/12")
    assert config.backend is Backend.HOST_GW
    assert config.plugin_install == "launcher"
    assert args.once is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--cluster-cidr", "10.244.0.1/16"],
        ["--backend", "bgp"],
        ["--mtu", "100"],
        ["--resync-seconds", "0"],
        ["--plugin-install", "copy"],
    ],
)
def test_bad_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--nodes-file", "/nonexistent", "--once"], environ={})
    assert exited.value.code == 2
    assert "minicni-agent" in capsys.readouterr().err
