"""A small stand-in for kube-apiserver's Node endpoints on 127.0.0.1, for tests and benchmarks.

It answers what the agent's node source asks, with the real server's semantics where they matter:
- `GET /api/v1/nodes` lists. `resourceVersion=0` is served "from the watch cache": the limit is
  ignored and the whole list comes in one response, as kube-apiserver does before 1.33
  (`cacher.shouldDelegateList`); any other request honours `limit` and `continue` (the "etcd"
  path). A continue token or a resourceVersion older than the compaction point is answered with
  410 Expired.
- `GET /api/v1/nodes?watch=1` streams newline-delimited events (chunked) after `resourceVersion`:
  ADDED/MODIFIED/DELETED, a BOOKMARK every `bookmark_seconds` when `allowWatchBookmarks` is set,
  an `ERROR` event carrying a 410 Status when the version is older than the compaction point; it
  ends after `timeoutSeconds`.
- `PATCH /api/v1/nodes/<name>/status` records the body and answers 200.
- `GET /api/v1/namespaces/kube-system/configmaps/<name>` answers from `config_maps`, else 404.
Faults, set on the object: `stall_watches` (send the headers, then silence: what a half-open
connection looks like to the client), `fail_requests` (answer 500), `fail_patches` (answer 500
to status PATCHes only: a test of them is not raced by the client's own watch), `gone_watches`
(the next watches get an ERROR 410 event). Every request is recorded (method, path, query).

`python -m lab.fake_apiserver --nodes 5000 --node-bytes 13500` serves synthetic nodes and prints
the port; the benchmark runs it in its own process so its memory is not the client's.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONFIG_MAPS = "/api/v1/namespaces/kube-system/configmaps/"
LIST_PREFIX = b'{"kind":"NodeList","apiVersion":"v1","metadata":'


def synthetic_node(
    index: int, node_bytes: int = 13_500, resource_version: int = 1
) -> dict[str, Any]:
    """A Node shaped like a kubeadm worker's (labels, annotations, managed fields, conditions,
    images), padded with image entries to about `node_bytes` of JSON."""
    name = f"node-{index:05d}"
    high, low = divmod(index, 250)
    stamp = "2026-01-01T00:00:00Z"
    node: dict[str, Any] = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "resourceVersion": str(resource_version),
            "creationTimestamp": stamp,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "n2-standard-8",
                "topology.kubernetes.io/region": "europe-west1",
                "topology.kubernetes.io/zone": f"europe-west1-{'bcd'[index % 3]}",
            },
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": stamp,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:annotations": {".": {}, "f:node.alpha.kubernetes.io/ttl": {}}
                        },
                        "f:spec": {
                            "f:podCIDR": {},
                            "f:podCIDRs": {".": {}, f'v:"10.{high}.{low}.0/24"': {}},
                        },
                    },
                }
                for manager in ("kubeadm", "kube-controller-manager", "kubelet")
            ],
        },
        "spec": {
            "podCIDR": f"10.{high}.{low}.0/24",
            "podCIDRs": [f"10.{high}.{low}.0/24"],
            "providerID": f"gce://project/europe-west1-b/{name}",
        },
        "status": {
            "capacity": {
                "cpu": "8",
                "ephemeral-storage": "101430960Ki",
                "memory": "32876072Ki",
                "pods": "110",
            },
            "allocatable": {
                "cpu": "7910m",
                "ephemeral-storage": "93478772582",
                "memory": "29876072Ki",
                "pods": "110",
            },
            "conditions": [
                {
                    "type": kind,
                    "status": "False" if kind != "Ready" else "True",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": f"Kubelet{kind}",
                    "message": f"kubelet reports {kind}",
                }
                for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"172.16.{high}.{low + 2}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{index:032x}",
                "systemUUID": f"{index:032x}",
                "bootID": f"{index:032x}",
                "kernelVersion": "6.1.0-28-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.31.4",
                "kubeProxyVersion": "v1.31.4",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [],
        },
    }
    images: list[dict[str, Any]] = node["status"]["images"]
    size = len(json.dumps(node, separators=(",", ":")))
    serial = 0
    while size < node_bytes:
        digest = f"{index:08x}{serial:056x}"
        image = {
            "names": [
                f"registry.example.org/team-{serial % 17}/service-{serial}@sha256:{digest}",
                f"registry.example.org/team-{serial % 17}/service-{serial}:v1.{serial}.0",
            ],
            "sizeBytes": 10_000_000 + serial,
        }
        images.append(image)
        size += len(json.dumps(image, separators=(",", ":"))) + 1
        serial += 1
    return node


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str = ""
    answered: str = ""  # the resourceVersion a list was answered at (for its watch-from)


@dataclass
class _Stored:
    version: int
    body: bytes


@dataclass
class FakeApiServer:
    """Node storage with a resourceVersion counter and an event log, served over HTTP."""

    bookmark_seconds: float = 60.0
    cache_ignores_limit: bool = True
    stall_watches: int = 0
    gone_watches: int = 0
    fail_requests: int = 0
    fail_patches: int = 0
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    """kube-system ConfigMaps by name: their `data`."""
    requests: list[Request] = field(default_factory=list)
    patches: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._nodes: dict[str, _Stored] = {}
        self._events: list[tuple[int, bytes]] = []
        self._version = 1
        self._compacted = 0
        self._closing = threading.Event()
        self._server: _Server | None = None

    # -- the store ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._version

    def put(self, node: dict[str, Any], *, record: bool = True) -> int:
        """Add or replace a node (its resourceVersion is set here); returns the new version."""
        with self._lock:
            self._version += 1
            node["metadata"]["resourceVersion"] = str(self._version)
            name = node["metadata"]["name"]
            kind = "MODIFIED" if name in self._nodes else "ADDED"
            body = encode(node)
            self._nodes[name] = _Stored(self._version, body)
            if record:
                self._events.append(
                    (self._version, b'{"type":"%s","object":%s}\n' % (kind.encode(), body))
                )
            self._lock.notify_all()
            return self._version

    def delete(self, name: str) -> int:
        with self._lock:
            stored = self._nodes.pop(name)
            self._version += 1
            document = json.loads(stored.body)
            document["metadata"]["resourceVersion"] = str(self._version)
            self._events.append(
                (self._version, b'{"type":"DELETED","object":%s}\n' % encode(document))
            )
            self._lock.notify_all()
            return self._version

    def compact(self) -> None:
        """Forget every event so far, as etcd compaction does: older versions answer 410."""
        with self._lock:
            self._compacted = self._version
            self._events.clear()

    def requests_of(self, kind: str) -> list[Request]:
        """kind: "list", "watch" or "patch"."""
        with self._lock:
            recorded = list(self.requests)
        if kind == "patch":
            return [r for r in recorded if r.method == "PATCH"]
        watching = kind == "watch"
        return [
            r
            for r in recorded
            if r.method == "GET" and (r.query.get("watch") in ("1", "true")) == watching
        ]

    # -- serving -----------------------------------------------------------------------------
    def start(self) -> int:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(
            target=self._server.serve_forever, name="fake-apiserver", daemon=True
        ).start()
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._closing.set()
        with self._lock:
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _record(
        self, method: str, path: str, query: dict[str, str], content_type: str = ""
    ) -> Request:
        request = Request(method, path, query, content_type)
        with self._lock:
            self.requests.append(request)
        return request

    def bump(self) -> int:
        """Move the resourceVersion on, as changes to other objects do (it is etcd's revision)."""
        with self._lock:
            self._version += 1
            self._lock.notify_all()
            return self._version

    @staticmethod
    def list_version(request: Request) -> int:
        return int(request.answered)

    def _take_fault(self, name: str) -> bool:
        with self._lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def list_pages(
        self, query: dict[str, str]
    ) -> tuple[int, bytes, list[bytes]] | tuple[int, bytes]:
        """(200, metadata, items) or (status, Status body)."""
        version = query.get("resourceVersion", "")
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self._lock:
            if token and version:
                return 400, _status(
                    400,
                    "BadRequest",
                    "specifying resource version is not allowed when using continue",
                )
            if version not in ("", "0") and int(version) > self._version:
                return 504, _status(504, "Timeout", "Too large resource version")
            if limit and (version != "0" or not self.cache_ignores_limit):
                start = ""
                if token:
                    decoded = json.loads(base64.b64decode(token))
                    if decoded["rv"] < self._compacted:
                        return 410, _status(
                            410, "Expired", "The provided continue parameter is too old"
                        )
                    start = decoded["start"]
                names = sorted(name for name in self._nodes if name > start)
                page, rest = names[:limit], names[limit:]
                metadata: dict[str, Any] = {"resourceVersion": str(self._version)}
                if rest:
                    metadata["continue"] = base64.b64encode(
                        encode({"rv": self._version, "start": page[-1]})
                    ).decode()
                    metadata["remainingItemCount"] = len(rest)
                return 200, encode(metadata), [self._nodes[name].body for name in page]
            items = [self._nodes[name].body for name in sorted(self._nodes)]
            return 200, encode({"resourceVersion": str(self._version)}), items

    def watch_events(self, query: dict[str, str]) -> Iterator[bytes]:
        """The event lines a watch sends, until its timeout or the server stops."""
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        next_bookmark = time.monotonic() + self.bookmark_seconds
        with self._lock:
            if since < self._compacted or self._take_fault("gone_watches"):
                gone = _status(
                    410, "Expired", f"too old resource version: {since} ({self._compacted})"
                )
                yield b'{"type":"ERROR","object":%s}\n' % gone
                return
        while not self._closing.is_set():
            with self._lock:
                pending = [line for version, line in self._events if version > since]
                if pending:
                    since = max(version for version, _ in self._events)
                else:
                    now = time.monotonic()
                    if now >= deadline:
                        return
                    if bookmarks and now >= next_bookmark:
                        next_bookmark = now + self.bookmark_seconds
                        since = self._version
                        yield (
                            encode(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": "Node",
                                        "apiVersion": "v1",
                                        "metadata": {"resourceVersion": str(self._version)},
                                    },
                                }
                            )
                            + b"\n"
                        )
                        continue
                    self._lock.wait(min(deadline, next_bookmark) - now)
                    continue
            yield from pending


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (as the agent does with a silent watch) is normal."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _status(code: int, reason: str, message: str) -> bytes:
    return encode(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _query(self) -> tuple[str, dict[str, str]]:
            parts = urlsplit(self.path)
            return parts.path, {key: values[-1] for key, values in parse_qs(parts.query).items()}

        def do_GET(self) -> None:
            path, query = self._query()
            request = api._record("GET", path, query)
            if path.startswith(CONFIG_MAPS):
                found = api.config_maps.get(path.removeprefix(CONFIG_MAPS))
                if found is None:
                    self._send(404, _status(404, "NotFound", path))
                else:
                    self._send(
                        200, encode({"kind": "ConfigMap", "apiVersion": "v1", "data": found})
                    )
            elif path != "/api/v1/nodes":
                self._send(404, _status(404, "NotFound", path))
            elif api._take_fault("fail_requests"):
                self._send(500, _status(500, "InternalError", "injected failure"))
            elif query.get("watch") in ("1", "true"):
                self._watch(query)
            else:
                self._list(query, request)

        def do_PATCH(self) -> None:
            path, query = self._query()
            content_type = self.headers.get("Content-Type", "")
            api._record("PATCH", path, query, content_type)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = path.strip("/").split("/")
            if len(parts) != 5 or parts[:3] != ["api", "v1", "nodes"] or parts[4] != "status":
                self._send(404, _status(404, "NotFound", path))
                return
            if api._take_fault("fail_requests") or api._take_fault("fail_patches"):
                self._send(500, _status(500, "InternalError", "injected failure"))
                return
            document = json.loads(body)
            if content_type == "application/json-patch+json" and not isinstance(document, list):
                message = (
                    "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
                )
                self._send(400, _status(400, "BadRequest", message))
                return
            with api._lock:
                api.patches.append((parts[3], document))
            self._send(
                200, encode({"kind": "Node", "apiVersion": "v1", "metadata": {"name": parts[3]}})
            )

        def _list(self, query: dict[str, str], request: Request) -> None:
            answer = api.list_pages(query)
            if answer[0] != 200:
                self._send(answer[0], answer[1])
                return
            _, metadata, items = answer  # type: ignore[misc]
            request.answered = json.loads(metadata)["resourceVersion"]
            length = len(LIST_PREFIX) + len(metadata) + len(b',"items":[') + len(b"]}")
            length += sum(len(item) for item in items) + max(0, len(items) - 1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            out = self.wfile
            out.write(LIST_PREFIX + metadata + b',"items":[')
            for index, item in enumerate(items):
                if index:
                    out.write(b",")
                out.write(item)
            out.write(b"]}")

        def _watch(self, query: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            if api._take_fault("stall_watches"):
                api._closing.wait()  # the connection stays open and silent
                return
            try:
                for line in api.watch_events(query):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away
            self.close_connection = True

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: tests read `api.requests`."""

    return Handler


def kubeconfig_for(url: str) -> dict[str, Any]:
    """A kubeconfig that points the kubernetes client at `url` with no credentials."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--node-bytes", type=int, default=13_500)
    args = parser.parse_args(argv)
    api = FakeApiServer()
    for index in range(args.nodes):
        api.put(synthetic_node(index, args.node_bytes), record=False)
    port = api.start()
    print(port, flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
