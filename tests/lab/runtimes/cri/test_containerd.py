"""A node's containerd is configured as a kubeadm or kind node's: its CRI on the agent's dirs."""

from __future__ import annotations

import tomllib
from pathlib import Path

from lab.runtimes.cri import pause
from lab.runtimes.cri.containerd import ContainerdNode


def test_containerd_config_points_the_cri_at_the_agents_dirs(tmp_path: Path) -> None:
    node = ContainerdNode(
        name="n1",
        netns="/run/netns/ml1-n1",
        home=str(tmp_path / 'n1 "quoted"' / "containerd"),
        cni_conf_dir="/lab/n1/net.d",
        cni_bin_dir="/lab/n1/bin",
        cgroup_root="/ml1-n1-kubepods",
        socket_dir="/tmp/mlcri-n1-x",
    )
    config = tomllib.loads(node.config())
    assert config["root"] == f"{node.home}/root"  # a quote in a path stays a quote
    assert config["state"] == f"{node.home}/state"
    assert config["grpc"]["address"] == "/tmp/mlcri-n1-x/containerd.sock"
    assert config["ttrpc"]["address"] == "/tmp/mlcri-n1-x/containerd.sock.ttrpc"
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"] == f"{node.home}/opt"
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["cni"] == {"conf_dir": "/lab/n1/net.d", "bin_dir": "/lab/n1/bin", "max_conf_num": 1}
    assert cri["sandbox_image"] == pause.IMAGE_NAME
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"Root": f"{node.home}/runc", "SystemdCgroup": False}
    assert node.pod_cgroup("u1") == "/ml1-n1-kubepods/besteffort/podu1"
    assert ContainerdNode.from_mapping(node.to_mapping()) == node
