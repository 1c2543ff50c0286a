"""Benchmark: reconcile 1,000 and 5,000 remote nodes inside a network namespace made for it.

`python -m lab.bench.agent` (root; `make bench-agent`). For every size it times, with the agent's
own code path (validation, plan, netlink apply; conflist into a temporary directory):
  - from empty: every route (and with --backend vxlan every FDB and neighbour entry and every
    route in our policy table, to the peers' node IPs) programmed;
  - no change: a resync that finds everything in place;
  - churn: 10 % of the nodes replaced by new ones;
and, unless --no-firewall, the iptables chains with one RETURN rule per node (from empty and
no-change). Targets: 1,000 nodes from empty < 1 s, no-change resync < 50 ms. The namespace, and
so everything programmed, is removed at the end, also on failure. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minicni.agent.apply.firewall import IptablesFirewall
from minicni.agent.model.nodes import ClusterCidrs, NodeEntry
from minicni.agent.model.plan import Backend
from minicni.agent.service.config import AgentConfig
from minicni.agent.service.metrics import Metrics
from minicni.agent.service.reconciler import Reconciler
from minicni.net import netns

CLUSTER_CIDR = ClusterCidrs(ipaddress.IPv4Network("10.0.0.0/8"))
UNDERLAY = ipaddress.IPv4Network("172.31.0.0/16")
SELF_IP = "172.31.0.1"


def node_entries(count: int, first: int = 0) -> list[NodeEntry]:
    """`self` plus `count` remote nodes: node i has 172.31.x.y and pod CIDR 10.x.y.0/24."""
    entries = [NodeEntry("self", SELF_IP, ("10.255.255.0/24",))]
    for i in range(first + 1, first + count + 1):
        high, low = divmod(i, 250)
        entries.append(
            NodeEntry(f"n{i}", f"172.31.{high}.{low + 2}", (f"10.{high}.{low + 2}.0/24",))
        )
    return entries


def build_underlay() -> None:
    """A veth pair whose near end holds the node address: every bench peer is on-link."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer="eth1")
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth0, address=SELF_IP, prefixlen=UNDERLAY.prefixlen)
        for name in ("lo", "eth0", "eth1"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def timed(reconciler: Reconciler, entries: list[NodeEntry]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    report = reconciler.reconcile(entries)
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"reconcile failed: {report.errors[:3]}")
    return elapsed, report.as_dict()


def bench_size(count: int, backend: Backend, workdir: Path, repeats: int) -> dict[str, Any]:
    config = AgentConfig(
        node_name="self",
        cluster_cidr=CLUSTER_CIDR,
        backend=backend,
        cni_conf_dir=workdir / "net.d",
        state_dir=workdir / "state",
        plugin_install="none",
        firewall="none",
    )
    reconciler = Reconciler(config, Metrics())
    try:
        entries = node_entries(count)
        reconciler.reconcile(node_entries(0))  # VXLAN device, conflist: not what we time
        empty, report = timed(reconciler, entries)
        nochange = [timed(reconciler, entries)[0] for _ in range(repeats)]
        churned = entries[: 1 + count - count // 10] + node_entries(count // 10, count)[1:]
        churn, churn_report = timed(reconciler, churned)
        return {
            "nodes": count,
            "backend": backend.value,
            "from_empty_s": round(empty, 4),
            "routes_added": report["routes_added"],
            "peer_node_routes_added": report["peer_node_route_changes"],
            "vxlan_changes": report["vxlan_changes"],
            "no_change_median_s": round(statistics.median(nochange), 4),
            "no_change_max_s": round(max(nochange), 4),
            "churn_10pct_s": round(churn, 4),
            "churn_routes_deleted": churn_report["routes_deleted"],
            "churn_routes_added": churn_report["routes_added"],
        }
    finally:
        reconciler.close()


def bench_firewall(count: int, repeats: int) -> dict[str, Any]:
    firewall = IptablesFirewall()
    ips = [ipaddress.IPv4Address(entry.internal_ip or "") for entry in node_entries(count)]
    started = time.perf_counter()
    firewall.apply(CLUSTER_CIDR, ips)
    empty = time.perf_counter() - started
    nochange = []
    for _ in range(repeats):
        started = time.perf_counter()
        if firewall.apply(CLUSTER_CIDR, ips):
            raise RuntimeError("an in-sync firewall was rewritten")
        nochange.append(time.perf_counter() - started)
    return {
        "nodes": count,
        "firewall_from_empty_s": round(empty, 4),
        "firewall_no_change_median_s": round(statistics.median(nochange), 4),
    }


def run(
    sizes: Sequence[int], backends: Sequence[Backend], repeats: int, firewall: bool
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for backend in backends:
        for count in sizes:
            results.append(
                _in_fresh_namespace(lambda w, c=count, b=backend: bench_size(c, b, w, repeats))
            )
            _print(results[-1])
    if firewall:
        for count in sizes:
            results.append(_in_fresh_namespace(lambda w, c=count: bench_firewall(c, repeats)))
            _print(results[-1])
    return results


def _in_fresh_namespace(job: Any) -> dict[str, Any]:
    name = f"agbench-{secrets.token_hex(3)}"
    path = netns.create(name)
    workdir = Path(tempfile.mkdtemp(prefix="minicni-bench-"))
    try:
        with netns.enter(path):
            build_underlay()
            result: dict[str, Any] = job(workdir)
            return result
    finally:
        netns.remove(name)
        shutil.rmtree(workdir, ignore_errors=True)


def _print(result: dict[str, Any]) -> None:
    if "backend" in result:
        print(
            f"{result['nodes']:>6} nodes {result['backend']:>7}: from empty "
            f"{result['from_empty_s'] * 1000:8.1f} ms ({result['routes_added']} routes"
            f" + {result['peer_node_routes_added']} peer node routes), "
            f"no-change resync median {result['no_change_median_s'] * 1000:6.1f} ms "
            f"(max {result['no_change_max_s'] * 1000:.1f}), "
            f"10% churn {result['churn_10pct_s'] * 1000:7.1f} ms",
            flush=True,
        )
    else:
        print(
            f"{result['nodes']:>6} nodes iptables: from empty "
            f"{result['firewall_from_empty_s'] * 1000:8.1f} ms, no-change "
            f"{result['firewall_no_change_median_s'] * 1000:6.1f} ms",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.agent", description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--backend",
        choices=["host-gw", "vxlan", "both"],
        default="both",
        help="host-gw: one route per node; vxlan: route + FDB + neighbour per node",
    )
    parser.add_argument("--repeats", type=int, default=10, help="no-change resyncs to time")
    parser.add_argument("--no-firewall", action="store_true", help="skip the iptables figures")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    backends = (
        [Backend.HOST_GW, Backend.VXLAN] if args.backend == "both" else [Backend(args.backend)]
    )
    results = run(args.nodes, backends, args.repeats, not args.no_firewall)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
