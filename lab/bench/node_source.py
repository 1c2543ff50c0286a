"""Benchmark: the Kubernetes node source listing 5,000 synthetic 13.5 KB Nodes.

`python -m lab.bench.node_source` (no root). A fake API server (`lab.fake_apiserver`) runs in a
process of its own on 127.0.0.1 with the nodes; each measured client runs in a fresh process too,
so the figures are that process's alone: resident memory after importing the kubernetes client,
and for each list the wall time, the CPU time, and the peak resident memory while it ran
(VmHWM, reset before each list through /proc/self/clear_refs).

Modes:
  lean           the agent's lists (`minicni.agent.service.sources.kube.list_nodes`): the first at
                 resourceVersion=0 (the watch cache answers in one piece, as kube-apiserver before
                 1.33 does), the relist after a 410 at the last version seen (also the cache), and
                 a list from "etcd" (no version: pages of 500)
  client-models  the kubernetes client's `list_node()`, every Node deserialised into its models,
                 then reduced to the same entries: what the agent did before issue 15
The DaemonSet's memory limit is 384 Mi. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LIMIT_MIB = 384


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _measure(label: str, action: Any) -> dict[str, Any]:
    _reset_peak()
    before = _status_kib("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    result = action()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "what": label,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rss_before_mib": round(before / 1024, 1),
        "peak_mib": round(_status_kib("VmHWM") / 1024, 1),
        "peak_delta_mib": round((_status_kib("VmHWM") - before) / 1024, 1),
        "nodes": len(result[0]),
        "_keep": result,
    }


def child(mode: str, url: str) -> dict[str, Any]:
    """Runs in its own process: import, then the lists of `mode`."""
    from kubernetes import client

    configuration = client.Configuration(host=url)
    configuration.retries = False
    api = client.CoreV1Api(client.ApiClient(configuration))
    from minicni.agent.service.sources.kube import Timeouts, list_nodes

    figures: dict[str, Any] = {"mode": mode, "rss_after_import_mib": _status_kib("VmRSS") / 1024}
    runs: list[dict[str, Any]] = []
    kept: list[Any] = []  # the agent holds its node map while it relists
    if mode == "lean":
        timeouts = Timeouts(read=120.0)
        first = _measure("list rv=0 (cache)", lambda: _lean(list_nodes(api, "0", 500, timeouts)))
        version = first["_keep"][1]
        runs.append(first)
        kept.append(first.pop("_keep"))
        for label, rv, size in (
            ("relist rv=last (cache)", version, 0),
            ("list rv='' (pages)", "", 500),
        ):
            run = _measure(
                label, lambda rv=rv, size=size: _lean(list_nodes(api, rv, size, timeouts))
            )
            kept.append(run.pop("_keep"))
            runs.append(run)
    else:
        from kubernetes.client import V1Node

        for label in ("list (client models)", "relist (client models)"):
            run = _measure(
                label, lambda: _models(api.list_node(_request_timeout=(10, 120)), V1Node)
            )
            kept.append(run.pop("_keep"))
            runs.append(run)
    figures["runs"] = runs
    return figures


def _lean(listing: Any) -> tuple[Any, str]:
    return listing.entries, listing.resource_version


def _models(listing: Any, node_type: Any) -> tuple[Any, str]:
    """The old path: V1Node models -> the same three fields."""
    from minicni.agent.model.nodes import NodeEntry

    entries = {}
    for node in listing.items:
        assert isinstance(node, node_type)
        internal = [a.address for a in (node.status.addresses or []) if a.type == "InternalIP"]
        cidrs = tuple(getattr(node.spec, "pod_cidrs", None) or [])
        entries[node.metadata.name] = NodeEntry(node.metadata.name, internal[0], cidrs)
    return entries, str(listing.metadata.resource_version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="node source list benchmark")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--node-bytes", type=int, default=13_500)
    parser.add_argument("--modes", default="lean,client-models")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.url)))
        return 0
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.fake_apiserver",
            "--nodes",
            str(args.nodes),
            "--node-bytes",
            str(args.node_bytes),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    results = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        print(
            f"{args.nodes} nodes of ~{args.node_bytes} bytes served on {url}; "
            f"DaemonSet memory limit {LIMIT_MIB} Mi"
        )
        for mode in args.modes.split(","):
            done = subprocess.run(
                [sys.executable, "-m", "lab.bench.node_source", "--child", mode, "--url", url],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{mode}: failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
                continue
            figures = json.loads(done.stdout)
            results.append(figures)
            imported = figures["rss_after_import_mib"]
            print(f"\n{mode}: resident after importing the client {imported:.1f} MiB")
            print(f"  {'':26} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9} {'+MiB':>7} {'nodes':>6}")
            for run in figures["runs"]:
                print(
                    f"  {run['what']:26} {run['wall_s']:7.2f} {run['cpu_s']:7.2f} "
                    f"{run['peak_mib']:9.1f} {run['peak_delta_mib']:7.1f} {run['nodes']:6d}"
                )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
