"""Installing into a CNI bin dir that root does not own, while the long-running agent keeps
NET_ADMIN and NET_RAW only.

The cni-plugins release tarball extracted with `tar -C /opt/cni/bin` leaves the directory owned by
uid 1001 (kubespray makes it `kube`'s): root without CAP_DAC_OVERRIDE obeys its permission bits.
So the DaemonSet installs from an init container, `minicni-agent --install-only`, given the
capability writing there needs -- DAC_OVERRIDE; nothing chowns, and nothing changes a file it did
not create, so neither CHOWN nor FOWNER (flannel's install-cni runs with the runtime's default
set, which has all three); the agent then finds everything in place and writes nothing there.
Capabilities are limited with setpriv's bounding set, as the container runtime does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netns_tests.lab_support import AgentCluster, ClusterNode, peer_seen_by

AGENT_CAPS = "-all,+net_admin,+net_raw"
INSTALL_CAPS = "-all,+dac_override"  # the init container's: writing needs no more
TARBALL_UID = 1001


@pytest.fixture
def cluster(agent_cluster: Callable[..., AgentCluster]) -> AgentCluster:
    return agent_cluster("l2", nodes=2)


def limited(
    cluster: AgentCluster, node: ClusterNode, caps: str, *extra: str
) -> tuple[int, dict[str, object]]:
    """minicni-agent in the node, with only the capabilities in `caps` (bounding set)."""
    argv = cluster.lab.agent_argv(node.plan, *extra)
    ns_prefix, agent = argv[:4], argv[4:]  # ip netns exec <ns> | minicni-agent ...
    command = [*ns_prefix, "setpriv", f"--bounding-set={caps}", "--inh-caps=-all", "--", *agent]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout)


def tarball_owned(path: Path) -> None:
    (path / "loopback").write_text("#!/bin/sh\n")  # what the tarball put there
    for item in (path, path / "loopback"):
        os.chown(item, TARBALL_UID, TARBALL_UID)
    path.chmod(0o755)


def test_init_container_installs_into_a_uid_1001_bin_dir_and_the_agent_needs_no_more(
    cluster: AgentCluster,
) -> None:
    n1, n2 = cluster.nodes
    tarball_owned(n1.bin_dir)
    bundle = ("--plugin-install", "bundle", "--plugin-dir", str(n1.home / "opt-minicni"))

    # the agent alone, as the DaemonSet used to run it: EACCES, never ready
    code, report = limited(cluster, n1, AGENT_CAPS, "--once", *bundle)
    assert code == 1
    (error,) = [e for e in report["errors"] if str(e).startswith("plugin_install")]
    assert "Permission denied" in str(error) and f"uid {TARBALL_UID}" in str(error)
    assert not (n1.bin_dir / "minicni").exists() and not n1.conflist.exists()

    # the init container: plugin and conflist, atomically, then it exits
    code, report = limited(cluster, n1, INSTALL_CAPS, "--install-only", *bundle)
    assert code == 0, report
    assert report["plugin_installed"] and report["conflist_written"]
    launcher = n1.bin_dir / "minicni"
    assert launcher.stat().st_uid == 0 and launcher.stat().st_mode & 0o111
    versions = [p.name for p in (n1.home / "opt-minicni").iterdir() if not p.name.startswith(".")]
    assert len(versions) == 1 and versions[0] in launcher.read_text()  # versioned
    assert sorted(p.name for p in n1.bin_dir.iterdir()) == ["loopback", "minicni"]  # no temp left

    # the long-running agent, NET_ADMIN + NET_RAW: finds the install in place, routes, firewall
    code, report = limited(cluster, n1, AGENT_CAPS, "--once", *bundle)
    assert code == 0, report["errors"]
    assert not report["plugin_installed"] and not report["conflist_written"]
    cluster.run_once(n2)
    a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")  # through the installed launcher
    assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip


def test_the_agent_serves_pods_with_net_admin_and_net_raw_only(cluster: AgentCluster) -> None:
    """The fast path keeps the DaemonSet's privileges: the agent creates the veth with the pod
    end in the pod's namespace and configures it through the netlink socket the shim passed;
    it never enters a namespace (no SYS_ADMIN) and writes no sysctl."""
    n1, n2 = cluster.nodes
    bundle = ("--plugin-install", "bundle", "--plugin-dir", str(n1.home / "opt-minicni"))
    code, report = limited(cluster, n1, INSTALL_CAPS, "--install-only", *bundle)
    assert code == 0, report
    launcher = (n1.bin_dir / "minicni").read_text()
    assert "/shim" in launcher and ".pyc" in launcher  # the shim, not the plugin itself
    cluster.run_once(n2)
    argv = cluster.lab.agent_argv(n1.plan, *bundle)
    ns_prefix, agent = argv[:4], argv[4:]
    caps = ["setpriv", f"--bounding-set={AGENT_CAPS}", "--inh-caps=-all", "--"]
    log = n1.home / "limited-agent.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*ns_prefix, *caps, *agent], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not n1.files.cni_socket.exists() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
        status = Path(f"/proc/{process.pid}/status").read_text()
        (effective,) = [line.split()[1] for line in status.splitlines() if line[:6] == "CapEff"]
        assert int(effective, 16) == (1 << 12) | (1 << 13)  # CAP_NET_ADMIN, CAP_NET_RAW
        a, b = cluster.add_pod(n1, "pa"), cluster.add_pod(n2, "pb")
        assert peer_seen_by(b.ns, b.ip, a.ns) == a.ip
        assert peer_seen_by(a.ns, a.ip, b.ns) == b.ip
        text = log.read_text()
        assert "CNI ADD" in text and "CNI CHECK" in text, text  # served, not in-process
        assert "refused" not in text, text
    finally:
        process.terminate()
        process.wait(timeout=30)
