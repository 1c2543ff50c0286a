"""Flags, their environment variables, and the refusal of bad values."""

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from minicni.agent.model.nodes import ClusterCidrs
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
    assert config.cni_socket == "/run/minicni/cni.sock"
    assert args.once is False


def test_help_names_each_default_the_environment_does_not_change() -> None:
    parser = build_parser({"MINICNI_CNI_CONF_DIR": "/srv/cni"})
    helps = {a.option_strings[0]: a.help or "" for a in parser._actions if a.option_strings}
    assert "(default: /etc/cni/net.d)" in helps["--cni-conf-dir"]
    assert parser.parse_args([]).cni_conf_dir == "/srv/cni"
    assert "(default: /run/minicni/cni.sock)" in helps["--cni-socket"]
    assert "(default: 127.0.0.1:28109)" in helps["--health-addr"]
    assert "default" not in helps["--nodes-file"]  # none: the Kubernetes API instead


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
    assert config.cluster_cidr == ClusterCidrs(IPv4Network("10.96.0.0/12"))
    assert config.backend is Backend.HOST_GW
    assert config.plugin_install == "launcher"
    assert args.once is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--cluster-cidr", "10.244.0.1/16"],
        ["--cluster-cidr", "10.244.0.0/16,10.245.0.0/16"],  # two of one family
        ["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56,fd00:11::/56"],
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


def test_a_dual_stack_cluster_cidr_is_one_network_per_family() -> None:
    args = build_parser({}).parse_args(["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"])
    cluster = config_from_args(args).cluster_cidr
    assert str(cluster.v4) == "10.244.0.0/16" and str(cluster.v6) == "fd00:10:244::/56"
    six = config_from_args(
        build_parser({"MINICNI_CLUSTER_CIDR": "fd00:10:244::/56"}).parse_args([])
    )
    assert six.cluster_cidr.versions == (6,)


def test_cluster_cidr_auto_needs_the_kubernetes_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--cluster-cidr", "auto", "--nodes-file", "/nonexistent", "--once"], environ={})
    assert exited.value.code == 2
    assert "needs the Kubernetes source" in capsys.readouterr().err


def test_switches_from_the_environment() -> None:
    args = build_parser({"MINICNI_INSTALL_ONLY": "1", "MINICNI_CNI_EXCLUSIVE": "true"}).parse_args(
        []
    )
    assert args.install_only and config_from_args(args).cni_exclusive
    assert not build_parser({}).parse_args([]).cni_exclusive


# Ports node components of the field listen on (hostNetwork), health and metrics included:
# Calico/Canal Felix 9099 (health) 9091 (metrics), Typha 5473 9093 9098, BIRD 179; Cilium 4240
# 4244 9876 9879 9890 9891 9962-9965; Antrea 10349-10351; kube-router 20241 20244; Weave
# 6781-6784; flannel 8285 8472; kindnet 19080; kube-proxy 10249 10256; kubelet 10248 10250 10255;
# controller-manager 10257; scheduler 10259; etcd 2379-2381; API server 6443; node-exporter 9100;
# MetalLB 7472 7946; kube-vip 2112; ingress-nginx 10254; CoreDNS 8080 8181 9153; VXLAN 4789.
WELL_KNOWN_NODE_PORTS = {
    179, 2112, 2379, 2380, 2381, 4240, 4244, 4789, 5473, 6443, 6781, 6782, 6783, 6784, 7472,
    7946, 8080, 8181, 8285, 8472, 9091, 9093, 9098, 9099, 9100, 9153, 9876, 9879, 9890, 9891,
    9962, 9963, 9964, 9965, 10248, 10249, 10250, 10254, 10255, 10256, 10257, 10259, 10349,
    10350, 10351, 19080, 20241, 20244,
}  # fmt: skip


def test_health_listens_on_loopback_on_a_port_nobody_else_uses() -> None:
    host, _, port = build_parser({}).parse_args([]).health_addr.rpartition(":")
    assert host == "127.0.0.1"  # /metrics is not open on every node interface
    assert int(port) not in WELL_KNOWN_NODE_PORTS
    assert int(port) < 32768  # below Linux's ephemeral range: no outgoing connection holds it


@pytest.mark.parametrize(
    "socket",
    ["relative.sock", "/run/" + "x" * 103 + ".sock", "/run/it's.sock", "/run/a\\b", "/run/a\nb"],
)
def test_a_cni_socket_that_cannot_be_a_unix_socket_path_is_refused(
    socket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--cni-socket", socket, "--nodes-file", "/nonexistent"], environ={})
    assert raised.value.code == 2
    assert "--cni-socket" in capsys.readouterr().err


def test_an_empty_cni_socket_disables_the_server() -> None:
    args = build_parser({"MINICNI_CNI_SOCKET": "", "NODE_NAME": "n1"}).parse_args([])
    assert config_from_args(args).cni_socket == ""
