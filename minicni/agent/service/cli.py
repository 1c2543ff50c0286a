"""`minicni-agent`: command line and environment.

Every flag `--foo-bar` can also be set as the environment variable MINICNI_FOO_BAR (DaemonSets
configure through the environment); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from minicni import defaults
from minicni.agent.host.launcher import MODES as INSTALL_MODES
from minicni.agent.model.nodes import ClusterCidrs
from minicni.agent.model.plan import Backend
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.reconciler import Reconciler
from minicni.agent.service.sources import NodeSource
from minicni.agent.service.sources.backoff import Backoff

ENV_PREFIX = "MINICNI_"
AUTO = "auto"
DEFAULT_HEALTH_ADDR = "127.0.0.1:28109"
"""Loopback only, and a port no common node component uses (Calico/Canal's Felix has 9099;
see tests/test_agent_cli.py for the ports checked)."""
DISCOVERY_ATTEMPTS = 8
STUCK_LOOP_SECONDS = 300.0
"""A reconcile pass that has not ended after this long hangs (its subprocesses time out at 30 s)."""
TRUE_WORDS = {"1", "true", "yes", "on"}

log = logging.getLogger("minicni.agent")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minicni-agent",
        description="minicni node agent: routes between nodes, firewall, CNI conflist, plugin "
        "install. Every flag can also be given as an environment variable, e.g. "
        "--node-name as MINICNI_NODE_NAME.",
    )

    def option(
        flag: str, help: str, default: str | None = None, choices: Sequence[str] | None = None
    ) -> None:
        value = environ.get(env_name(flag), default)
        shown = f" (default: {default})" if default and "default:" not in help else ""
        parser.add_argument(
            flag, default=value, choices=choices, help=f"{help}{shown} [{env_name(flag)}]"
        )

    option(
        "--node-name",
        "this node's name (default: $NODE_NAME, else the host name)",
        environ.get("NODE_NAME") or socket.gethostname(),
    )
    option(
        "--cluster-cidr",
        "the cluster's pod CIDR (every node's podCIDR lies in it), one per family for a "
        "dual-stack cluster (10.244.0.0/16,fd00:10:244::/56); `auto` reads it from the cluster "
        "(kube-system ConfigMaps kubeadm-config, else kube-proxy)",
        defaults.CLUSTER_CIDR,
    )
    option(
        "--backend",
        "how to reach other nodes' pods (auto: host-gw on the same subnet, else vxlan)",
        "auto",
        choices=[b.value for b in Backend],
    )
    option("--nodes-file", "static node list (JSON or YAML); without it, the Kubernetes API")
    option(
        "--kubeconfig",
        "kubeconfig for the Kubernetes source (default: in-cluster)",
        environ.get("KUBECONFIG"),
    )
    option("--cni-conf-dir", "where the conflist is written", defaults.CNI_CONF_DIR)
    option("--cni-bin-dir", "where the plugin is installed", defaults.CNI_BIN_DIR)
    option("--state-dir", "where the agent keeps its last good node set", defaults.STATE_DIR)
    option(
        "--ipam-data-dir",
        "the plugin's address store (the conflist's dataDir)",
        defaults.DATA_DIR,
    )
    option(
        "--plugin-install",
        "how to install the plugin into the CNI bin dir",
        defaults.PLUGIN_INSTALL,
        choices=list(INSTALL_MODES),
    )
    option("--plugin-dir", "where the plugin's runtime lives on the host", defaults.PLUGIN_DIR)
    option(
        "--plugin-log-file",
        "the plugin's log file (the conflist's logFile; requests the agent serves log to its "
        "own stderr)",
        defaults.LOG_FILE,
    )
    option(
        "--cni-socket",
        "serve the plugin's CNI requests on this unix socket (the installed plugin is a thin "
        "shim that forwards to it, and runs the plugin in-process when the agent does not "
        "answer); empty: no server, the plugin always runs in-process",
        defaults.CNI_SOCKET,
    )
    option(
        "--firewall",
        "manage forward/masquerade rules with iptables, or not at all",
        defaults.FIREWALL,
        choices=["iptables", "none"],
    )
    option("--mtu", "pod MTU (default: the underlay's, less 50 for vxlan and auto)")
    option(
        "--health-addr",
        "host:port for /healthz, /readyz, /metrics (loopback: kubelet probes 127.0.0.1 in the "
        "node's network); empty to disable",
        DEFAULT_HEALTH_ADDR,
    )
    option("--resync-seconds", "full reconcile period", "10")
    option("--log-level", "DEBUG, INFO, WARNING or ERROR", "INFO")

    def switch(flag: str, help: str) -> None:
        default = environ.get(env_name(flag), "").lower() in TRUE_WORDS
        parser.add_argument(
            flag, action="store_true", default=default, help=f"{help} [{env_name(flag)}]"
        )

    switch("--once", "reconcile once, print a JSON report, exit 0 if all went well")
    switch(
        "--install-only",
        "install the plugin and write this node's conflist, then exit (an init container with "
        "the capabilities writing into the host's directories needs); print a JSON report",
    )
    switch(
        "--cni-exclusive",
        "own the CNI config dir: rename every other config file to <name>.minicni_bak, as "
        "Cilium's cni.exclusive does (without it, a config that sorts first keeps the agent "
        "not ready)",
    )
    return parser


def parse_cluster_cidr(text: str) -> ClusterCidrs | None:
    """The --cluster-cidr value: a CIDR, or one of each family comma separated; None for `auto`
    (read from the cluster later)."""
    if text == AUTO:
        return None
    try:
        return ClusterCidrs.parse(text)
    except ValueError as error:
        raise ValueError(f"--cluster-cidr: {error}") from None


def config_from_args(
    args: argparse.Namespace, cluster_cidr: ClusterCidrs | None = None
) -> AgentConfig:
    cluster_cidr = cluster_cidr or parse_cluster_cidr(args.cluster_cidr)
    if cluster_cidr is None:
        raise ValueError("--cluster-cidr auto must be resolved before the configuration")
    mtu = int(args.mtu) if args.mtu else None
    if mtu is not None and not 576 <= mtu <= 65535:
        raise ValueError(f"--mtu {mtu} is out of range")
    if not args.node_name:
        raise ValueError("--node-name is empty")
    return AgentConfig(
        node_name=args.node_name,
        cluster_cidr=cluster_cidr,
        backend=Backend(args.backend),
        cni_conf_dir=Path(args.cni_conf_dir),
        cni_bin_dir=Path(args.cni_bin_dir),
        state_dir=Path(args.state_dir),
        ipam_data_dir=args.ipam_data_dir,
        plugin_install=args.plugin_install,
        plugin_dir=Path(args.plugin_dir),
        plugin_log_file=args.plugin_log_file,
        cni_socket=args.cni_socket,
        firewall=args.firewall,
        mtu=mtu,
        cni_exclusive=args.cni_exclusive,
    )


UNIX_PATH_MAX = 107  # bytes in sockaddr_un's sun_path, less the terminating NUL


def check_socket_path(path: str) -> None:
    if path and not os.path.isabs(path):
        raise ValueError(f"--cni-socket {path!r} must be an absolute path")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(f"--cni-socket is longer than a unix socket path may be ({UNIX_PATH_MAX})")
    if any(char in path for char in "'\\\n\0"):
        # the installed plugin names the socket in a shell script: refused here, at start-up,
        # rather than by the install, where only the log would say so
        raise ValueError(f"--cni-socket {path!r} must not contain a quote, backslash or newline")


def make_source(args: argparse.Namespace) -> NodeSource:
    if args.nodes_file:
        from minicni.agent.service.sources.static_file import StaticFileSource

        return StaticFileSource(Path(args.nodes_file))
    from minicni.agent.service.sources.kube import KubeNodeSource

    return KubeNodeSource(args.kubeconfig)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cluster_cidr = parse_cluster_cidr(args.cluster_cidr)
        if cluster_cidr is None and args.nodes_file:
            raise ValueError(
                "--cluster-cidr auto reads the cluster: it needs the Kubernetes source"
            )
        config_from_args(args, cluster_cidr or ClusterCidrs(ipaddress.IPv4Network("0.0.0.0/0")))
        resync_seconds = float(args.resync_seconds)
        if resync_seconds <= 0:
            raise ValueError("--resync-seconds must be positive")
        check_socket_path(args.cni_socket)
    except ValueError as error:
        parser.error(str(error))
    metrics = Metrics()
    try:
        source = make_source(args)
    except Exception as error:  # no kubeconfig, no in-cluster account: say so, exit non-zero
        log.error("cannot set up the node source: %s: %s", type(error).__name__, error)
        return 1
    try:
        if cluster_cidr is None:
            cluster_cidr = discover_cluster_cidr(source)
            if cluster_cidr is None:
                return 1
        reconciler = Reconciler(config_from_args(args, cluster_cidr), metrics)
        try:
            if args.install_only:
                return run_install(source, reconciler)
            if args.once:
                return run_once(source, reconciler)
            return run_service(args, source, reconciler, metrics, resync_seconds)
        finally:
            reconciler.close()
    finally:
        source.close()


def discover_cluster_cidr(source: NodeSource) -> ClusterCidrs | None:
    """--cluster-cidr auto: the cluster's pod CIDRs (one per family) from its ConfigMaps, retried
    while the API server does not answer; None (logged) when the cluster does not say."""
    from minicni.agent.service.sources.kube import KubeNodeSource, read_cluster_cidr

    assert isinstance(source, KubeNodeSource)
    backoff = Backoff()
    for attempt in range(DISCOVERY_ATTEMPTS):
        try:
            cidr, where = read_cluster_cidr(source.api)
        except LookupError as error:
            log.error("--cluster-cidr auto: %s", error)
            return None
        except Exception as error:  # the API server may not answer yet
            delay = backoff.next_delay()
            log.warning("reading the cluster CIDR failed (%s), retrying in %.1f s", error, delay)
            if attempt + 1 < DISCOVERY_ATTEMPTS:
                time.sleep(delay)
            continue
        log.info("cluster CIDR %s, from %s", cidr, where)
        return cidr
    log.error("--cluster-cidr auto: the API server did not answer; giving up")
    return None


def run_install(source: NodeSource, reconciler: Reconciler) -> int:
    from minicni.agent.service.loop import install

    report = install(source, reconciler, threading.Event())
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if reconciler.installed else 1


def run_once(source: NodeSource, reconciler: Reconciler) -> int:
    from minicni.agent.service.loop import reconcile_once

    report = reconcile_once(source, reconciler)
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


def run_service(
    args: argparse.Namespace,
    source: NodeSource,
    reconciler: Reconciler,
    metrics: Metrics,
    resync_seconds: float,
) -> int:
    from minicni.agent.service.loop import run

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping (routes stay in place)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = None
    if args.health_addr:
        from minicni.agent.service.health import AgentHealth, HealthServer, parse_address

        health = AgentHealth(
            reconciler.not_ready_reasons,
            lambda: reconciler.last_pass,
            source,
            stuck_after=max(STUCK_LOOP_SECONDS, 6 * resync_seconds),
            warnings=reconciler.warnings,
        )
        server = HealthServer(
            parse_address(args.health_addr), metrics, health.live, health.ready, health.warnings
        )
        server.start()
        log.info("serving /healthz, /readyz, /metrics on %s", args.health_addr)
    cni_server = None
    if args.cni_socket:
        from minicni.agent.service.cni_server import CniServer

        cni_server = CniServer(args.cni_socket, args.ipam_data_dir, metrics)
        cni_server.start_when_possible(stop)
    try:
        run(source, reconciler, stop, resync_seconds)
    finally:
        if cni_server is not None:
            cni_server.stop()
        if server is not None:
            server.stop()
    return 0
