"""Nodes from the Kubernetes API: list, then watch, with a full relist every few minutes.

A background thread keeps a name -> NodeEntry map current and signals changes; the reconcile loop
reads snapshots of it. Once the node's network is up, the node's `NetworkUnavailable` condition is
set to False (the node controller sets it True on clouds until a network plugin clears it).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from ipaddress import IPv4Address, ip_address
from typing import Any

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError

log = logging.getLogger(__name__)

RELIST_SECONDS = 300.0
"""Watch events keep the node map current; a relist this often repairs anything a watch missed.
The agent's own resync (every --resync-seconds) re-checks the kernel against this map, so it
need not cost the API server a full list each time."""
RETRY_SECONDS = 5.0


def _ipv4_first(addresses: list[str]) -> str | None:
    """Prefer an IPv4 address (the planning is IPv4); else the first one, which validation
    reports as not IPv4."""
    for text in addresses:
        try:
            if isinstance(ip_address(text), IPv4Address):
                return text
        except ValueError:
            continue
    return addresses[0] if addresses else None


def entry_from_node(node: Any) -> NodeEntry:
    """Translate a kubernetes `V1Node` into the planning input."""
    name = node.metadata.name if node.metadata and node.metadata.name else ""
    internal = [
        address.address
        for address in ((node.status.addresses if node.status else None) or [])
        if address.type == "InternalIP" and address.address
    ]
    spec = node.spec
    cidrs: list[str] = []
    if spec is not None:
        # `pod_cidrs` in the newer (pydantic) generated models, `pod_cid_rs` in older ones
        cidrs = list(getattr(spec, "pod_cidrs", None) or getattr(spec, "pod_cid_rs", None) or [])
        if spec.pod_cidr and spec.pod_cidr not in cidrs:
            cidrs.insert(0, spec.pod_cidr)
    return NodeEntry(name=name, internal_ip=_ipv4_first(internal), pod_cidrs=tuple(cidrs))


def network_available_patch(now: datetime.datetime) -> dict[str, Any]:
    """Strategic-merge patch for the node status: conditions merge by `type`."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "conditions": [
                {
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "MinicniIsUp",
                    "message": "minicni-agent programmed this node's routes",
                    "lastTransitionTime": stamp,
                    "lastHeartbeatTime": stamp,
                }
            ]
        }
    }


def load_core_api(kubeconfig: str | None) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config  # untyped library
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api()


class KubeNodeSource:
    def __init__(
        self, kubeconfig: str | None, relist_seconds: float = RELIST_SECONDS, api: Any = None
    ) -> None:
        self._api = api if api is not None else load_core_api(kubeconfig)
        self._relist_seconds = relist_seconds
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeEntry] = {}
        self._synced = False
        self._last_error = "no node list yet"
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-nodes", daemon=True)
        self._thread.start()

    def fetch(self) -> list[NodeEntry]:
        with self._lock:
            if not self._synced:
                raise SourceError(f"Kubernetes API: {self._last_error}")
            self._changed.clear()
            return list(self._nodes.values())

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._changed.wait(min(remaining, 0.5)):
                return True
        return False

    def report_ready(self, node_name: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        try:
            self._api.patch_node_status(node_name, network_available_patch(now))
            log.info("set NetworkUnavailable=False on node %s", node_name)
        except Exception as error:  # the API may be briefly unreachable; the next resync retries
            log.warning("could not set NetworkUnavailable=False on %s: %s", node_name, error)
            raise SourceError(str(error)) from error

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._relist()
                self._watch(version)
            except Exception as error:  # keep the last node set; retry after a pause
                with self._lock:
                    self._last_error = str(error)
                log.warning("node watch failed, retrying in %.0f s: %s", RETRY_SECONDS, error)
                self._stop.wait(RETRY_SECONDS)

    def _relist(self) -> str:
        listing = self._api.list_node()
        fresh = {entry.name: entry for entry in map(entry_from_node, listing.items)}
        with self._lock:
            if fresh != self._nodes or not self._synced:
                self._changed.set()
            self._nodes = fresh
            self._synced = True
        return str(listing.metadata.resource_version)

    def _watch(self, version: str) -> None:
        """Apply watch events until the relist period ends, then return for a relist."""
        from kubernetes import watch as kube_watch

        watch: Any = kube_watch  # untyped library
        deadline = time.monotonic() + self._relist_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            stream = watch.Watch().stream(
                self._api.list_node,
                resource_version=version,
                timeout_seconds=max(1, int(remaining)),
            )
            for event in stream:
                if event["type"] == "ERROR":
                    return  # e.g. 410 Gone: relist
                node = event["object"]
                version = node.metadata.resource_version or version
                self._apply_event(event["type"], entry_from_node(node))
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return

    def _apply_event(self, kind: str, entry: NodeEntry) -> None:
        with self._lock:
            before = self._nodes.get(entry.name)
            if kind == "DELETED":
                self._nodes.pop(entry.name, None)
            else:
                self._nodes[entry.name] = entry
            if self._nodes.get(entry.name) != before:
                self._changed.set()
