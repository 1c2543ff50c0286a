"""Nodes from the Kubernetes API: one list, then a watch resumed for as long as the server allows.

A background thread keeps a name -> NodeEntry map current and signals changes; the reconcile loop
reads snapshots of it. Once the node's network is up, the node's `NetworkUnavailable` condition is
set to False (the node controller sets it True on clouds until a network plugin clears it).

Built to what client-go's reflector does, so that 5,000 agents are as cheap for the API server as
5,000 kubelets (`tools/cache/reflector.go`, `tools/pager`):
- the first list asks for `resourceVersion=0` with `limit=500`: served from the API server's watch
  cache (which ignores the limit), or page by page where the cache is off; a relist after a watch
  expired asks for the last version seen, without a limit, so the cache serves it too; only when
  that version is unavailable does a list go to etcd (`resourceVersion` unset, paginated);
- bodies are read as streams and only the fields the agent uses are kept (`kube_stream`): no
  client models, one Node in memory at a time;
- the watch resumes from the last resourceVersion (events and bookmarks move it), with
  `allowWatchBookmarks` and a server-side timeout drawn from [5, 10) minutes; there is no periodic
  relist. 410 Gone relists;
- every request has client-side time-outs: connect, and read -- on a watch, no byte for
  `watch_idle` seconds (the server sends a bookmark every minute) means a dead connection, and the
  watch resumes from the last version on a new one;
- failures back off exponentially with jitter (0.8 s -> 30 s, `backoff.Backoff`);
- `health()` turns bad when the API server has not been heard from for `stale` seconds, or the
  thread stopped making progress.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from minicni.agent.model.nodes import ClusterCidrs, NodeEntry
from minicni.agent.service.sources import SourceError, SourceHealth
from minicni.agent.service.sources.backoff import Backoff
from minicni.agent.service.sources.kube_stream import (
    CHUNK_BYTES,
    ListBody,
    StreamError,
    entry_from_object,
    lines,
    resource_version,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 500
"""client-go's pager default."""
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    """TCP (and TLS) connection set-up."""
    read: float = 60.0
    """Longest silence while reading a list or a patch answer."""
    watch_idle: float = 90.0
    """Longest silence on a watch: the API server sends a bookmark every minute."""
    watch_min: float = 300.0
    """Server-side watch timeout, drawn from [watch_min, 2 * watch_min) as client-go does."""
    stale: float = 180.0
    """No answer from the API server for this long: the node set may be stale (not ready)."""

    @property
    def stuck(self) -> float:
        """No step of the watcher thread for this long: it hangs outside any time-out (not live)."""
        return self.connect + max(self.read, self.watch_idle) + self.stale


class Gone(Exception):
    """410: the resourceVersion asked for is no longer available (compacted)."""


class ShortWatch(Exception):
    """The watch ended at once without an event: retrying straight away would spin."""


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
    """A CoreV1Api from a kubeconfig or the in-cluster account."""
    from kubernetes import client
    from kubernetes import config as kube_config

    loader: Any = kube_config  # untyped library
    configuration: Any = client.Configuration()
    if kubeconfig:
        loader.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            loader.load_incluster_config(client_configuration=configuration)
        except loader.ConfigException:
            loader.load_kube_config(client_configuration=configuration)
    return core_api(configuration)


def core_api(configuration: Any) -> Any:
    """urllib3's own retries off (they retry at once, under our backoff); TCP keepalive on, with
    client-go's timings, so a peer that vanished is noticed even between watch reads."""
    from kubernetes import client

    configuration.retries = False
    configuration.keep_alive = True
    return client.CoreV1Api(client.ApiClient(configuration))


CLUSTER_CIDR_SOURCES = (
    ("kubeadm-config", "ClusterConfiguration", ("networking", "podSubnet")),
    ("kube-proxy", "config.conf", ("clusterCIDR",)),
)
"""Where a cluster says its pod CIDR: kubeadm's ClusterConfiguration (what kube-controller-manager
got as --cluster-cidr), else kube-proxy's configuration (what it treats as pod traffic)."""
MAX_CONFIG_MAP_BYTES = 1 << 20


def read_cluster_cidr(api: Any, timeouts: Timeouts = Timeouts()) -> tuple[ClusterCidrs, str]:
    """The cluster's pod CIDRs (one per family: `10.244.0.0/16,fd00:10:244::/56` in a dual-stack
    cluster) and where they were found. LookupError when the cluster does not say (no such
    ConfigMap, no field, nothing usable in it); other errors when the API fails."""
    import yaml

    tried = []
    for name, key, path in CLUSTER_CIDR_SOURCES:
        where = f"ConfigMap kube-system/{name} {key}: {'.'.join(path)}"
        try:
            response = api.read_namespaced_config_map(
                name,
                "kube-system",
                _preload_content=False,
                _request_timeout=(timeouts.connect, timeouts.read),
            )
        except Exception as error:
            if _status_of(error) in (403, 404):
                tried.append(f"{name}: {_status_of(error)}")
                continue
            raise
        body = response.read(MAX_CONFIG_MAP_BYTES + 1)
        response.release_conn()
        if len(body) > MAX_CONFIG_MAP_BYTES:
            raise LookupError(f"{where}: larger than a ConfigMap may be")
        data = json.loads(body).get("data") or {}
        value: Any = yaml.safe_load(data.get(key) or "") if isinstance(data, dict) else None
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        cidrs = cluster_cidrs_in(str(value or ""))
        if cidrs is not None:
            return cidrs, where
        tried.append(f"{name}: no CIDR in {'.'.join(path)} ({value!r})")
    raise LookupError(
        "the cluster does not say its pod CIDR (" + "; ".join(tried) + "): set --cluster-cidr "
        "(MINICNI_CLUSTER_CIDR) to kube-controller-manager's --cluster-cidr"
    )


def cluster_cidrs_in(text: str) -> ClusterCidrs | None:
    """The first CIDR of each family in a comma separated list (kube-controller-manager's
    --cluster-cidr form); None if it holds none. What is not a CIDR is passed over."""
    found: dict[int, IPv4Network | IPv6Network] = {}
    for part in text.split(","):
        try:
            network = ip_network(part.strip(), strict=True)
        except ValueError:
            continue
        found.setdefault(network.version, network)
    return ClusterCidrs.of(found.values()) if found else None


@dataclass
class Listing:
    entries: dict[str, NodeEntry]
    resource_version: str
    paginated: bool


def _status_of(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def _body_chunks(response: Any) -> Iterator[bytes]:
    chunks: Iterator[bytes] = response.stream(CHUNK_BYTES, decode_content=True)
    return chunks


def list_nodes(api: Any, version: str, page_size: int, timeouts: Timeouts) -> Listing:
    """All nodes, as client-go's pager lists them: pages of `page_size` (0: one response)
    following `continue`, with `resourceVersion` only on the first request (the API server refuses
    both together). A continue token that expired (410) falls back to one full list at `version`,
    as the pager's FullListIfExpired does. Raises Gone when `version` itself is unavailable."""
    entries: dict[str, NodeEntry] = {}
    token: str | None = None
    paginated = False
    while True:
        arguments: dict[str, Any] = {
            "_preload_content": False,
            "_request_timeout": (timeouts.connect, timeouts.read),
        }
        if token:
            arguments["_continue"] = token
        elif version:
            arguments["resource_version"] = version
        if page_size:
            arguments["limit"] = page_size
        try:
            response = api.list_node(**arguments)
        except Exception as error:
            status = _status_of(error)
            if status == 410 and token:
                log.info("list continuation expired: listing again in one piece")
                entries, token, page_size, paginated = {}, None, 0, False
                continue
            if status in (410, 504):  # expired, or too large a version (not yet in the cache)
                raise Gone(f"resourceVersion {version!r} unavailable ({status})") from error
            raise
        body = ListBody(_body_chunks(response))
        try:
            for item in body.items():
                entry = entry_from_object(item)
                entries[entry.name] = entry
        except BaseException:
            response.close()  # unread data left: the connection cannot be reused
            raise
        response.release_conn()
        token = body.metadata.get("continue") or None
        if token is None:
            listed = body.metadata.get("resourceVersion")
            if not isinstance(listed, str) or not listed:
                raise StreamError("the list carries no resourceVersion")
            return Listing(entries, listed, paginated)
        paginated = True


class KubeNodeSource:
    def __init__(
        self,
        kubeconfig: str | None,
        *,
        api: Any = None,
        timeouts: Timeouts = Timeouts(),
        page_size: int = PAGE_SIZE,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api if api is not None else load_core_api(kubeconfig)
        self._timeouts = timeouts
        self._page_size = page_size
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeEntry] = {}
        self._synced = False
        self._version = ""
        self._version_unavailable = False
        self._paginated = False
        self._last_error = "no node list yet"
        self._last_contact = clock()
        self._last_step = clock()
        self.lists = 0
        self.watches = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-nodes", daemon=True)
        self._thread.start()

    @property
    def api(self) -> Any:
        return self._api

    # -- the NodeSource protocol -----------------------------------------------------------------
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
            response = self._api.patch_node_status(
                node_name,
                network_available_patch(now),
                _content_type=STRATEGIC_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=(self._timeouts.connect, self._timeouts.read),
            )
            response.release_conn()
            log.info("set NetworkUnavailable=False on node %s", node_name)
        except Exception as error:  # the API may be briefly unreachable; the next resync retries
            log.warning("could not set NetworkUnavailable=False on %s: %s", node_name, error)
            raise SourceError(str(error)) from error

    def health(self) -> SourceHealth:
        now = self._clock()
        with self._lock:
            silent = now - self._last_contact
            idle = now - self._last_step
            synced, error = self._synced, self._last_error
        if not self._thread.is_alive() and not self._stop.is_set():
            return SourceHealth(False, False, "node source: the watcher thread died")
        if idle > self._timeouts.stuck:
            return SourceHealth(False, False, f"node source: no progress for {idle:.0f} s")
        if not synced:
            return SourceHealth(True, False, f"node source: no node list yet ({error})")
        if silent > self._timeouts.stale:
            return SourceHealth(
                True,
                False,
                f"node source: no answer from the API server for {silent:.0f} s ({error})",
            )
        return SourceHealth()

    def close(self) -> None:
        self._stop.set()

    # -- the watcher thread --------------------------------------------------------------------
    def _run(self) -> None:
        listed = False
        while not self._stop.is_set():
            self._step()
            if not listed:
                try:
                    self._relist()
                    listed = True
                except Exception as error:  # keep the last node set; retry after a backoff
                    self._failed(error, "list")
                continue
            try:
                self._watch()
            except Gone as error:  # relist at once: the cache serves it (see _relist_version)
                log.info("node watch: %s; listing again", error)
                listed = False
            except Exception as error:  # resume from the last version after a backoff
                self._failed(error, "watch")

    def _step(self) -> None:
        with self._lock:
            self._last_step = self._clock()

    def _contact(self) -> None:
        now = self._clock()
        with self._lock:
            self._last_contact = now
            self._last_step = now

    def _failed(self, error: Exception, what: str) -> None:
        text = f"{type(error).__name__}: {error}"
        with self._lock:
            self._last_error = text
        delay = self._backoff.next_delay()
        log.warning("node %s failed, retrying in %.1f s: %s", what, delay, text)
        self._stop.wait(delay)

    def _relist_version(self) -> str:
        """client-go's relistResourceVersion: "0" (any cached state) at first, then the last
        version seen (not older than it, still from the cache), "" (etcd) when that is gone."""
        if self._version_unavailable:
            return ""
        return self._version or "0"

    def _page_size_for(self, version: str) -> int:
        """No limit when asking for a version newer than 0, so the watch cache can serve it
        (it delegates limited lists to etcd), unless the first list came back in pages (no
        watch cache): then pages it is."""
        if self._paginated or version in ("", "0"):
            return self._page_size
        return 0

    def _relist(self) -> None:
        version = self._relist_version()
        try:
            listing = list_nodes(self._api, version, self._page_size_for(version), self._timeouts)
        except Gone:
            self._version_unavailable = True
            listing = list_nodes(self._api, "", self._page_size, self._timeouts)
        self.lists += 1
        if version == "0" and listing.paginated:
            self._paginated = True
        self._version_unavailable = False
        self._version = listing.resource_version
        with self._lock:
            if listing.entries != self._nodes or not self._synced:
                self._changed.set()
            self._nodes = listing.entries
            self._synced = True
            self._last_error = ""
        self._contact()
        log.info("listed %d nodes at resourceVersion %s", len(listing.entries), self._version)

    def _watch(self) -> None:
        """One watch from the last version, until the server ends it or it falls silent."""
        timeouts = self._timeouts
        started = self._clock()
        response = self._api.list_node(
            watch=True,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=int(timeouts.watch_min * (1.0 + random.random())),
            _preload_content=False,
            _request_timeout=(timeouts.connect, timeouts.watch_idle),
        )
        self.watches += 1
        self._contact()
        events = 0
        try:
            for line in lines(_body_chunks(response)):
                self._contact()
                self._handle_event(line)
                events += 1
                if self._stop.is_set():
                    return
        finally:
            response.close()
        if events == 0 and self._clock() - started < 1.0:
            raise ShortWatch("the watch ended at once without an event")

    def _handle_event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError as error:
            raise StreamError(f"watch event is not JSON: {error}") from None
        kind = event.get("type") if isinstance(event, dict) else None
        node = event.get("object") if isinstance(event, dict) else None
        if kind == "ERROR":
            code = node.get("code") if isinstance(node, dict) else None
            message = node.get("message") if isinstance(node, dict) else None
            if code == 410:
                raise Gone(f"watch expired: {message}")
            raise StreamError(f"watch error {code}: {message}")
        version = resource_version(node)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._apply_event(kind, entry_from_object(node))
        elif kind != "BOOKMARK":
            raise StreamError(f"unknown watch event type {kind!r}")
        if version:
            self._version = version

    def _apply_event(self, kind: str, entry: NodeEntry) -> None:
        with self._lock:
            before = self._nodes.get(entry.name)
            if kind == "DELETED":
                self._nodes.pop(entry.name, None)
            else:
                self._nodes[entry.name] = entry
            if self._nodes.get(entry.name) != before:
                self._changed.set()
