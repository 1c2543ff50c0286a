"""Many invocations at once, as a runtime starting a node full of pods does: the store and the
bridge set-up must be safe when the invocations race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Interface

import pytest

from netns_tests.conftest import PLUGIN_PATHS, FakeNode, links_in, ping

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.parametrize("node", PLUGIN_PATHS, indirect=True),
]

PODS = 32


def test_32_parallel_adds_then_32_parallel_dels(node: FakeNode) -> None:
    pods = [(node.pod(), node.container_id()) for _ in range(PODS)]
    # The very first ADDs race to create the bridge and its gateway address too.
    with ThreadPoolExecutor(max_workers=PODS) as pool:
        runs = list(pool.map(lambda p: node.add(p[0], p[1], timeout=120), pods))
    failed = [str(r) for r in runs if r.code != 0]
    assert not failed, failed[0]
    addresses = [str(IPv4Interface(r.json["ips"][0]["address"]).ip) for r in runs]
    assert len(set(addresses)) == PODS, "two pods got the same address"
    assert len(node.reservations()) == PODS
    host_veths = {r.json["interfaces"][1]["name"] for r in runs}
    assert len(host_veths) == PODS
    host_links = links_in(node.host)
    assert all(host_links[name].master == node.bridge for name in host_veths)

    def reaches(i: int) -> bool:
        pod = pods[i][0]
        return ping(pod, "10.99.0.1") and ping(pod, addresses[(i + 1) % PODS])

    with ThreadPoolExecutor(max_workers=8) as pool:
        reached = list(pool.map(reaches, range(PODS)))
    assert all(reached), [addresses[i] for i, ok in enumerate(reached) if not ok]

    with ThreadPoolExecutor(max_workers=PODS) as pool:
        dels = list(pool.map(lambda p: node.run("DEL", None, p[1], p[0], timeout=120), pods))
    failed = [str(r) for r in dels if r.code != 0]
    assert not failed, failed[0]
    assert node.reservations() == {}
    assert not [p for p in node.store_dir.iterdir() if p.name.startswith("owner-")]
    assert not {name for name in links_in(node.host) if name.startswith("veth")}
    assert all("eth0" not in links_in(pod) for pod, _ in pods)
