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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from minicni.agent.metrics import Metrics
from minicni.agent.plan import Backend
from minicni.agent.reconciler import AgentConfig, Reconciler
from minicni.agent.sources import NodeSource

ENV_PREFIX = "MINICNI_"
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
        parser.add_argument(flag, default=value, choices=choices, help=f"{help} [{env_name(flag)}]")

    option("--node-name", "this node's name", environ.get("NODE_NAME") or socket.gethostname())
    option(
        "--cluster-cidr",
        "the cluster's pod CIDR (every node's podCIDR lies in it)",
        "10.244.0.0/16",
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
    option("--cni-conf-dir", "where the conflist is written", "/etc/cni/net.d")
    option("--cni-bin-dir", "where the plugin is installed", "/opt/cni/bin")
    option("--state-dir", "where the agent keeps its last good node set", "/var/lib/minicni")
    option(
        "--ipam-data-dir",
        "the plugin's address store (the conflist's dataDir)",
        "/var/lib/cni/networks",
    )
    option(
        "--plugin-install",
        "how to install the plugin into the CNI bin dir",
        "bundle",
        choices=["bundle", "launcher", "none"],
    )
    option("--plugin-dir", "where the plugin's runtime lives on the host", "/opt/minicni")
    option(
        "--plugin-log-file",
        "the plugin's log file (the conflist's logFile)",
        "/var/log/minicni.log",
    )
    option(
        "--firewall",
        "manage forward/masquerade rules with iptables, or not at all",
        "iptables",
        choices=["iptables", "none"],
    )
    option("--mtu", "pod MTU (default: the underlay's, less 50 for vxlan and auto)")
    option("--health-addr", "host:port for /healthz, /readyz, /metrics; empty to disable", ":9099")
    option("--resync-seconds", "full reconcile period", "10")
    option("--log-level", "DEBUG, INFO, WARNING or ERROR", "INFO")
    parser.add_argument(
        "--once",
        action="store_true",
        default=environ.get(env_name("--once"), "").lower() in TRUE_WORDS,
        help=f"reconcile once, print a JSON report, exit 0 if all went well [{env_name('--once')}]",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    try:
        cluster_cidr = ipaddress.IPv4Network(args.cluster_cidr, strict=True)
    except ValueError as error:
        raise ValueError(f"--cluster-cidr: {error}") from None
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
        firewall=args.firewall,
        mtu=mtu,
    )


def make_source(args: argparse.Namespace) -> NodeSource:
    if args.nodes_file:
        from minicni.agent.sources.static_file import StaticFileSource

        return StaticFileSource(Path(args.nodes_file))
    from minicni.agent.sources.kube import KubeNodeSource

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
        config = config_from_args(args)
        resync_seconds = float(args.resync_seconds)
        if resync_seconds <= 0:
            raise ValueError("--resync-seconds must be positive")
    except ValueError as error:
        parser.error(str(error))
    metrics = Metrics()
    try:
        source = make_source(args)
    except Exception as error:  # no kubeconfig, no in-cluster account: say so, exit non-zero
        log.error("cannot set up the node source: %s: %s", type(error).__name__, error)
        return 1
    reconciler = Reconciler(config, metrics)
    try:
        if args.once:
            return run_once(source, reconciler)
        return run_service(args, source, reconciler, metrics, resync_seconds)
    finally:
        source.close()
        reconciler.close()


def run_once(source: NodeSource, reconciler: Reconciler) -> int:
    from minicni.agent.service import reconcile_once

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
    from minicni.agent.service import run

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping (routes stay in place)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = None
    if args.health_addr:
        from minicni.agent.health import AgentHealth, HealthServer, parse_address

        health = AgentHealth(
            reconciler.not_ready_reasons,
            lambda: reconciler.last_pass,
            source,
            stuck_after=max(STUCK_LOOP_SECONDS, 6 * resync_seconds),
        )
        server = HealthServer(parse_address(args.health_addr), metrics, health.live, health.ready)
        server.start()
        log.info("serving /healthz, /readyz, /metrics on %s", args.health_addr)
    try:
        run(source, reconciler, stop, resync_seconds)
    finally:
        if server is not None:
            server.stop()
    return 0
