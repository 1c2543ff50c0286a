"""The DaemonSet's pod spec -> podman: what the lab runs is what deployments/ says, and what it
cannot run as written is an error, never dropped."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.cluster import agents, daemonset, image_agents
from lab.cluster.daemonset import DaemonSetError, LabNode
from lab.topology import Topology

NODE = LabNode(
    name="n1",
    ip="172.30.0.11",
    netns_path="/run/netns/mlx-n1",
    root="/run/lab/n1/root",
    nodes_dir="/run/lab/nodes",
)


def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(daemonset.MANIFEST.read_text()) if doc]


def agent_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return dict(container)


def options(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` in a podman argument list."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def run_args(documents: list[dict[str, Any]] | None = None, **kwargs: Any) -> list[str]:
    spec = daemonset.parse(documents if documents is not None else manifest())
    return daemonset.podman_run_args(spec, NODE, name="agent-n1", **kwargs)


def test_the_container_gets_exactly_net_admin_and_net_raw_and_nothing_else() -> None:
    argv = run_args()
    assert options(argv, "--cap-drop") == ["all"]
    assert sorted(options(argv, "--cap-add")) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert "--privileged" not in argv
    assert options(argv, "--security-opt") == ["no-new-privileges"]
    # read-only root, and no tmpfs podman would add by itself: only the manifest's volumes
    assert "--read-only" in argv and "--read-only-tmpfs=false" in argv


def test_host_network_is_the_nodes_network_namespace() -> None:
    assert options(run_args(), "--network") == ["ns:/run/netns/mlx-n1"]


def test_every_host_path_is_the_nodes_directory_mounted_at_the_manifests_path() -> None:
    argv = run_args()
    volumes = options(argv, "--volume")
    container = agent_container(manifest())
    (ds,) = [d for d in manifest() if d["kind"] == "DaemonSet"]
    host_paths = {
        v["name"]: v["hostPath"]["path"]
        for v in ds["spec"]["template"]["spec"]["volumes"]
        if "hostPath" in v
    }
    expected = {
        f"/run/lab/n1/root{host_paths[m['name']]}:{m['mountPath']}:rw"
        for m in container["volumeMounts"]
        if m["name"] in host_paths
    }
    assert expected <= set(volumes)
    for path in ("/etc/cni/net.d", "/opt/cni/bin", "/opt/minicni", "/var/lib/cni/networks",
                 "/var/lib/minicni", "/run/xtables.lock", "/run/minicni"):  # fmt: skip
        assert f"/run/lab/n1/root{path}:{path}:rw" in volumes
    # the nodes file's directory, read-only, named through the environment
    assert "/run/lab/nodes:/etc/minicni-lab:ro" in volumes
    assert "MINICNI_NODES_FILE=/etc/minicni-lab/nodes.json" in options(argv, "--env")
    # the emptyDir: a tmpfs of its size limit
    assert options(argv, "--tmpfs") == [f"/tmp:rw,nosuid,nodev,size={16 * 2**20}"]


def test_env_is_the_manifests_with_the_node_name_resolved() -> None:
    env = dict(item.split("=", 1) for item in options(run_args(), "--env"))
    for item in agent_container(manifest())["env"]:
        if "value" in item:
            assert env[item["name"]] == item["value"]
    assert env["MINICNI_NODE_NAME"] == "n1"  # fieldRef spec.nodeName
    assert set(env) == {i["name"] for i in agent_container(manifest())["env"]} | {
        "MINICNI_NODES_FILE"
    }


def test_a_change_to_the_manifest_is_what_runs() -> None:
    """Read from the manifest, not restated: an edited copy runs as edited."""
    documents = manifest()
    container = agent_container(documents)
    container["env"].append({"name": "MINICNI_LOG_LEVEL", "value": "DEBUG"})
    container["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    container["args"] = ["--once"]
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    ds["spec"]["template"]["spec"]["containers"] = [container]
    argv = run_args(documents, image="localhost/minicni:test")
    assert "MINICNI_LOG_LEVEL=DEBUG" in options(argv, "--env")
    assert options(argv, "--cap-add") == ["CAP_NET_ADMIN"]
    assert argv[-2:] == ["localhost/minicni:test", "--once"]


def test_the_image_is_the_manifests_unless_named() -> None:
    assert run_args()[-1] == agent_container(manifest())["image"]
    assert run_args(image="localhost/x:1")[-1] == "localhost/x:1"


def test_resources_become_the_memory_limit_and_kubelets_cpu_shares() -> None:
    argv = run_args()
    assert options(argv, "--memory") == [str(384 * 2**20)]
    assert options(argv, "--cpu-shares") == [str(50 * 1024 // 1000)]
    assert options(argv, "--stop-timeout") == ["10"]


def test_probes_are_http_gets_at_the_address_the_manifest_names() -> None:
    spec = daemonset.parse(manifest())
    container = agent_container(manifest())
    get = container["readinessProbe"]["httpGet"]
    ready, live, startup = spec.probes["readiness"], spec.probes["liveness"], spec.probes["startup"]
    assert ready.url(NODE.ip) == f"http://{get['host']}:{get['port']}/readyz"
    assert live.url(NODE.ip) == f"http://{get['host']}:{get['port']}/healthz"
    probe = container["startupProbe"]
    assert startup.deadline_seconds == probe["periodSeconds"] * probe["failureThreshold"]
    documents = manifest()
    del agent_container(documents)["readinessProbe"]["httpGet"]["host"]
    # no host: the pod's IP, which for a hostNetwork pod is the node's
    assert (
        daemonset.parse(documents).probes["readiness"].url(NODE.ip).startswith(f"http://{NODE.ip}:")
    )


def test_init_containers_run_first_to_their_end_with_their_own_privileges() -> None:
    documents = manifest()
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    spec = daemonset.parse(documents)
    (parsed,) = spec.init_containers
    argv = daemonset.podman_run_args(spec, NODE, name="install-n1", container=parsed)
    assert argv[:2] == ["run", "--rm"] and "--detach" not in argv
    assert options(argv, "--cap-add") == [
        f"CAP_{c}" for c in init["securityContext"]["capabilities"]["add"]
    ]
    assert argv[-len(init["args"]) :] == init["args"]
    mounted = {v.split(":")[1] for v in options(argv, "--volume")}
    mounted |= {v.split(":")[0] for v in options(argv, "--tmpfs")}
    assert {m["mountPath"] for m in init["volumeMounts"]} <= mounted
    agent = daemonset.podman_run_args(spec, NODE, name="agent-n1")
    assert "--detach" in agent and "--rm" not in agent


def test_overrides_replace_values_the_manifest_sets_and_add_none() -> None:
    env = options(run_args(env_overrides={"MINICNI_BACKEND": "vxlan"}), "--env")
    assert "MINICNI_BACKEND=vxlan" in env and "MINICNI_BACKEND=auto" not in env
    with pytest.raises(DaemonSetError, match="MINICNI_SOMETHING"):
        run_args(env_overrides={"MINICNI_SOMETHING": "x"})


def test_host_paths_to_create_follow_the_hostpath_types() -> None:
    spec = daemonset.parse(manifest())
    wanted = dict(daemonset.host_paths_to_create(spec, NODE))
    assert wanted["/run/lab/n1/root/run/xtables.lock"] == "file"  # FileOrCreate
    assert wanted["/run/lab/n1/root/opt/cni/bin"] == "dir"
    assert wanted["/run/lab/n1/root/run/minicni"] == "dir"  # the CNI socket's, DirectoryOrCreate


def test_the_plugin_sees_the_nodes_cni_socket_where_the_agent_serves_it() -> None:
    """The launcher names /run/minicni/cni.sock: the node view binds the node's own there."""
    prefix = image_agents.node_view_prefix("/run/lab/n1/root")
    assert 'mount --bind "$0/run/minicni" /run/minicni' in prefix[-2]
    assert prefix[-1] == "/run/lab/n1/root"


def test_a_lab_without_the_fast_path_empties_the_manifests_cni_socket() -> None:
    assert "MINICNI_CNI_SOCKET" not in agents.manifest_settings(Topology())
    settings = agents.manifest_settings(Topology(fast_path=False))
    assert settings["MINICNI_CNI_SOCKET"] == ""
    env = options(run_args(env_overrides=settings), "--env")
    assert "MINICNI_CNI_SOCKET=" in env


def edited(change: Any) -> list[dict[str, Any]]:
    documents = copy.deepcopy(manifest())
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    change(ds["spec"]["template"]["spec"])
    return documents


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda pod: pod["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda pod: pod.update(hostNetwork=False), "hostNetwork"),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ),
            "cannot be resolved",
        ),
        (lambda pod: pod["volumes"][0]["hostPath"].update(path="/opt/../etc"), "plain absolute"),
        (lambda pod: pod["volumes"][0]["hostPath"].update(type="Socket"), "hostPath type"),
        (
            lambda pod: (
                pod["volumes"].append({"name": "c", "configMap": {"name": "c"}})
                or pod["containers"][0]["volumeMounts"].append({"name": "c", "mountPath": "/c"})
            ),
            "only hostPath and emptyDir",
        ),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "MINICNI_NODES_FILE", "value": "/x"}
            ),
            "cannot name its own",
        ),
    ],
)
def test_what_cannot_run_as_written_is_an_error(change: Any, message: str) -> None:
    with pytest.raises(DaemonSetError, match=message):
        run_args(edited(change))


def test_load_reads_the_repositorys_manifest(tmp_path: Path) -> None:
    assert daemonset.load().image == agent_container(manifest())["image"]
    other = tmp_path / "m.yaml"
    other.write_text(yaml.safe_dump_all(edited(lambda pod: pod.update(hostNetwork=True))))
    assert daemonset.load(other).host_network


def test_a_path_the_agent_writes_is_found_under_the_nodes_root_through_its_volume() -> None:
    spec = daemonset.parse(manifest())
    conf_dir = daemonset.env_value(spec, "MINICNI_CNI_CONF_DIR")
    assert daemonset.node_path(spec, NODE, conf_dir) == "/run/lab/n1/root/etc/cni/net.d"
    launcher = daemonset.node_path(spec, NODE, "/opt/cni/bin/minicni")
    assert launcher == "/run/lab/n1/root/opt/cni/bin/minicni"
    with pytest.raises(DaemonSetError, match="on no hostPath volume"):
        daemonset.node_path(spec, NODE, "/usr/local/bin/minicni-agent")  # the image's own file
    with pytest.raises(DaemonSetError, match="sets no value for MINICNI_NODE_NAME"):
        daemonset.env_value(spec, "MINICNI_NODE_NAME")  # a fieldRef: the node's, not the manifest's


def test_a_volume_mounted_elsewhere_than_its_host_path_is_followed() -> None:
    documents = manifest()
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    for volume in ds["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "cni-conf":
            volume["hostPath"]["path"] = "/etc/kubernetes/cni/net.d"
    spec = daemonset.parse(documents)
    found = daemonset.node_path(spec, NODE, "/etc/cni/net.d/10-minicni.conflist")
    assert found == "/run/lab/n1/root/etc/kubernetes/cni/net.d/10-minicni.conflist"


def test_an_image_older_than_its_sources_is_named_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image tests and `--agent image` run the saved archive: one built before the last change
    to the code it carries is said to be stale, naming the newer file and the target to run."""
    import os

    archive = tmp_path / "build" / "image" / "minicni.tar"
    archive.parent.mkdir(parents=True)
    (tmp_path / "minicni" / "agent").mkdir(parents=True)
    source = tmp_path / "minicni" / "agent" / "cli.py"
    source.write_text("")
    archive.write_bytes(b"")
    monkeypatch.setattr(image_agents, "REPO", tmp_path)
    monkeypatch.setattr(image_agents, "DEFAULT_ARCHIVE", archive)
    monkeypatch.delenv(image_agents.ARCHIVE_ENV, raising=False)
    os.utime(source, (1_000_000, 1_000_000))
    assert image_agents.stale_image_reason() is None
    os.utime(source, (archive.stat().st_mtime + 60,) * 2)
    reason = image_agents.stale_image_reason()
    assert (
        reason is not None and "minicni/agent/cli.py" in reason and "make image-offline" in reason
    )
    # an archive named by $MINICNI_IMAGE_ARCHIVE was built elsewhere: not judged
    monkeypatch.setenv(image_agents.ARCHIVE_ENV, str(tmp_path / "other.tar"))
    assert image_agents.stale_image_reason() is None
