"""The Kubernetes node source against an API server on 127.0.0.1 (`lab.fake_apiserver`), through
the kubernetes client's own REST layer: what it asks the server, and what it does when the server
pages, expires a version, falls silent or fails."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import Configuration

from lab.fake_apiserver import FakeApiServer, Request
from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError
from minicni.agent.service.sources.backoff import Backoff
from minicni.agent.service.sources.kube import (
    KubeNodeSource,
    Timeouts,
    core_api,
    network_available_patch,
    read_cluster_cidr,
)

WAIT = 20.0


def node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def numbered(i: int) -> dict[str, Any]:
    return node(f"n{i:04d}", f"172.18.{i // 250}.{i % 250 + 1}", f"10.{i // 250}.{i % 250}.0/24")


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class RecordingBackoff(Backoff):
    """client-go's delays, recorded, and slept a hundredth of (the tests need not wait 30 s)."""

    def __init__(self) -> None:
        super().__init__(rand=lambda: 0.0)
        self.delays: list[float] = []

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.delays.append(delay)
        return delay / 100


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    api = FakeApiServer(bookmark_seconds=60)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def start(server: FakeApiServer) -> Iterator[Callable[..., KubeNodeSource]]:
    sources: list[KubeNodeSource] = []

    def make(**timeouts: float) -> KubeNodeSource:
        settings = {"connect": 2.0, "read": 5.0, "watch_idle": 5.0, **timeouts}
        source = KubeNodeSource(
            None,
            api=core_api(Configuration(host=server.url)),
            timeouts=Timeouts(**settings),
            backoff=RecordingBackoff(),
        )
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()
    server.stop()  # ends open watches, so the threads finish
    for source in sources:
        source._thread.join(10)
        assert not source._thread.is_alive(), "the watcher thread did not stop"


def synced(source: KubeNodeSource) -> bool:
    try:
        source.fetch()
    except SourceError:
        return False
    return True


def names(source: KubeNodeSource) -> set[str]:
    return {entry.name for entry in source.fetch()}


def query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k not in ("timeoutSeconds",)}


def test_first_list_asks_the_watch_cache_and_gets_every_node_in_one_piece(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    for i in range(1200):
        server.put(numbered(i), record=False)
    source = start()
    wait_until(lambda: synced(source), "the first list")
    lists = server.requests_of("list")
    # resourceVersion=0: any cached state will do, so the API server's watch cache answers and
    # etcd is not touched (it ignores the limit; see the next test for a server that pages)
    assert [query(r) for r in lists] == [{"resourceVersion": "0", "limit": "500"}]
    assert len(source.fetch()) == 1200
    assert NodeEntry("n0251", "172.18.1.2", ("10.1.1.0/24",)) in source.fetch()


def test_first_list_follows_pages_where_the_server_pages(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.cache_ignores_limit = False  # a server without a watch cache
    for i in range(1200):
        server.put(numbered(i), record=False)
    source = start()
    wait_until(lambda: synced(source), "the paged list")
    lists = [query(r) for r in server.requests_of("list")]
    assert len(lists) == 3
    assert lists[0] == {"resourceVersion": "0", "limit": "500"}
    for later in lists[1:]:  # the server refuses a version together with a continue token
        assert set(later) == {"continue", "limit"}
    assert len(source.fetch()) == 1200


def test_watch_asks_for_bookmarks_and_resumes_from_the_last_version_without_relisting(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.bookmark_seconds = 0.2
    server.put(numbered(1))
    source = start(watch_min=1.0)  # the server ends each watch after 1 or 2 s
    wait_until(lambda: synced(source), "the first list")
    listed_at = server.requests_of("list")[0]
    # other objects change: the resourceVersion (etcd's revision) moves on, no Node event says so
    moved_to = server.bump()
    wait_until(lambda: len(server.requests_of("watch")) >= 3, "three watches")
    watches = server.requests_of("watch")
    assert all(w.query["allowWatchBookmarks"] == "true" for w in watches)
    assert all(1 <= int(w.query["timeoutSeconds"]) < 2 for w in watches)
    assert watches[0].query["resourceVersion"] == str(server.list_version(listed_at))
    # a bookmark carried the new version: the next watch starts there, the server need not replay
    assert int(watches[-1].query["resourceVersion"]) >= moved_to
    assert len(server.requests_of("list")) == 1  # no periodic relist


def test_watch_events_change_the_node_set(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    server.put(numbered(2))
    source = start()
    wait_until(lambda: synced(source), "the first list")  # fetch() clears the change signal
    server.put(numbered(3))
    moved = numbered(1)
    moved["status"]["addresses"][0]["address"] = "172.18.9.9"
    server.put(moved)
    server.delete("n0002")
    assert source.wait(WAIT, threading.Event()) is True  # the reconcile loop is woken
    wait_until(lambda: names(source) == {"n0001", "n0003"}, "the events")
    assert NodeEntry("n0001", "172.18.9.9", ("10.0.1.0/24",)) in source.fetch()
    assert len(server.requests_of("list")) == 1


def test_an_expired_watch_relists_at_the_last_version_from_the_cache(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    source = start(watch_min=1.0)
    wait_until(lambda: synced(source), "the first list")
    seen = server.requests_of("list")[0]
    # a change the watch cannot deliver (history compacted), then 410 Gone on the next watch
    server.put(numbered(2), record=False)
    server.compact()
    wait_until(lambda: len(server.requests_of("list")) == 2, "a relist after 410")
    relist = query(server.requests_of("list")[1])
    # not older than what we had: the watch cache serves it; no limit, or it would go to etcd
    assert relist == {"resourceVersion": str(server.list_version(seen))}
    wait_until(lambda: names(source) == {"n0001", "n0002"}, "the relisted node set")


def test_a_silent_watch_connection_is_dropped_and_the_watch_resumed(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    server.stall_watches = 1  # headers, then nothing: a half-open connection
    source = start(watch_idle=1.0)
    wait_until(lambda: synced(source), "the first list")
    wait_until(lambda: len(server.requests_of("watch")) == 1, "the stalled watch")
    server.put(numbered(2))
    wait_until(lambda: "n0002" in names(source), "the event after the stall")
    first, second = server.requests_of("watch")[:2]
    assert first.query["resourceVersion"] == second.query["resourceVersion"]
    assert len(server.requests_of("list")) == 1


def test_failures_back_off_exponentially_with_client_go_delays(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    server.fail_requests = 5
    source = start()
    wait_until(lambda: synced(source), "a list after the failures")
    assert len(server.requests_of("list")) == 6
    backoff = source._backoff
    assert isinstance(backoff, RecordingBackoff)
    assert backoff.delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8])


def test_health_turns_bad_while_the_api_server_is_silent_and_recovers(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    source = start()
    assert not source.health().ready and "no node list yet" in source.health().reason
    wait_until(lambda: synced(source), "the first list")
    assert source.health().ready
    source.close()

    server.stall_watches = 1
    stalled = start(watch_idle=3.0, stale=1.0)
    wait_until(lambda: synced(stalled), "the first list")
    wait_until(lambda: not stalled.health().ready, "the source to turn stale")
    health = stalled.health()
    assert health.live  # a restart would not help: the API server is what is silent
    assert "no answer from the API server" in health.reason
    # the silent watch is dropped after watch_idle, a new one answers: ready again
    wait_until(lambda: stalled.health().ready, "the source to recover")


def test_report_ready_patches_the_condition_by_strategic_merge(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    server.put(numbered(1))
    source = start()
    source.report_ready("n0001")
    (patch,) = server.requests_of("patch")
    assert patch.path == "/api/v1/nodes/n0001/status"
    # a JSON merge patch would replace kubelet's conditions with this one; strategic merge
    # merges conditions by type
    assert patch.content_type == "application/strategic-merge-patch+json"
    name, body = server.patches[0]
    (condition,) = body["status"]["conditions"]
    assert (name, condition["type"], condition["status"]) == (
        "n0001",
        "NetworkUnavailable",
        "False",
    )


def test_report_ready_failure_is_a_source_error(
    server: FakeApiServer, start: Callable[..., KubeNodeSource]
) -> None:
    source = start()
    wait_until(lambda: synced(source), "the first list")
    server.fail_patches = 1  # not any request: the source's own watch could take the failure
    with pytest.raises(SourceError):
        source.report_ready("n0001")


def test_network_available_patch() -> None:
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    condition = network_available_patch(now)["status"]["conditions"][0]
    assert condition["type"] == "NetworkUnavailable"
    assert condition["status"] == "False"
    assert condition["lastTransitionTime"] == "2024-05-01T12:00:00Z"


KUBEADM = {
    "ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
    "networking:\n  dnsDomain: cluster.local\n  podSubnet: fd00:10:244::/56,10.244.0.0/16\n"
    "  serviceSubnet: 10.96.0.0/16\n"
}
KUBE_PROXY = {
    "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
    'clusterCIDR: "10.85.0.0/16"\nmode: iptables\n'
}


def api_for(server: FakeApiServer) -> Any:
    return core_api(Configuration(host=server.url))


def test_cluster_cidr_from_kubeadm_config_both_of_dual_stack(server: FakeApiServer) -> None:
    server.config_maps = {"kubeadm-config": KUBEADM, "kube-proxy": KUBE_PROXY}
    cidr, where = read_cluster_cidr(api_for(server))
    assert str(cidr) == "10.244.0.0/16,fd00:10:244::/56"
    assert "kube-system/kubeadm-config" in where


def test_cluster_cidr_from_kube_proxy_without_kubeadm(server: FakeApiServer) -> None:
    server.config_maps = {"kube-proxy": KUBE_PROXY}
    cidr, where = read_cluster_cidr(api_for(server))
    assert (str(cidr), "clusterCIDR" in where) == ("10.85.0.0/16", True)


def test_cluster_cidr_unknown_says_what_was_tried_and_what_to_set(server: FakeApiServer) -> None:
    server.config_maps = {"kube-proxy": {"config.conf": "clusterCIDR: ''\n"}}
    with pytest.raises(LookupError) as raised:
        read_cluster_cidr(api_for(server))
    message = str(raised.value)
    assert "kubeadm-config: 404" in message and "MINICNI_CLUSTER_CIDR" in message
