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

from minicni import defaults
from minicni.agent.host.launcher import MODES as INSTALL_MODES
from minicni.agent.model.plan import Backend
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.reconciler import Reconciler
from minicni.agent.service.sources import NodeSource

ENV_PREFIX = "MINICNI_"
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
        "the plugin's log file (the conflist's logFile)",
        defaults.LOG_FILE,
    )
    option(
        "--firewall",
        "manage forward/masquerade rules with iptables, or not at all",
        defaults.FIREWALL,
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
        from minicni.agent.service.health import HealthServer, parse_address

        server = HealthServer(parse_address(args.health_addr), metrics, lambda: reconciler.ready)
        server.start()
        log.info("serving /healthz, /readyz, /metrics on %s", args.health_addr)
    try:
        run(source, reconciler, stop, resync_seconds)
    finally:
        if server is not None:
            server.stop()
    return 0
