"""A DEL the agent answered before it finished (a `deleting-` record in the store): whoever next
meets the attachment finishes it first, and the address is freed only once its link is gone.
Here the record is left the way an agent killed right after its answer leaves it."""

from __future__ import annotations

import json
import os

import pytest

from minicni.ipam.store import AddressStore
from minicni.net import netns
from minicni.plugin import served
from netns_tests.conftest import FakeNode, links_in

pytestmark = pytest.mark.root


def record_delete(node: FakeNode, container_id: str, ifname: str = "eth0") -> None:
    store = AddressStore(str(node.store_dir))
    with store.locked():
        store.mark_deleting(container_id, ifname)


def deleting_records(node: FakeNode) -> list[str]:
    return [p.name for p in node.store_dir.iterdir() if p.name.startswith("deleting-")]


def test_an_in_process_del_finishes_a_recorded_one(node: FakeNode) -> None:
    pod, cid = node.pod(), node.container_id()
    added = node.add(pod, cid)
    assert added.code == 0, added
    record_delete(node, cid)
    deleted = node.run("DEL", None, cid, pod)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert added.json["interfaces"][1]["name"] not in links_in(node.host)
    assert node.reservations() == {} and deleting_records(node) == []


def test_an_add_of_the_same_attachment_finishes_the_recorded_del_first(node: FakeNode) -> None:
    """The record must not outlive the new ADD: finished later, it would take the new pod's
    link and address."""
    old_pod, cid = node.pod(), node.container_id()
    old = node.add(old_pod, cid)
    assert old.code == 0, old
    record_delete(node, cid)
    new_pod = node.pod()
    new = node.add(new_pod, cid)
    assert new.code == 0, new
    assert deleting_records(node) == []
    assert "eth0" not in links_in(old_pod)  # the old pair went with the recorded DEL
    assert links_in(new_pod)["eth0"].mac == new.json["interfaces"][2]["mac"]
    (address,) = node.reservations()
    assert new.json["ips"][0]["address"].startswith(address + "/")
    assert node.run("DEL", None, cid, new_pod).code == 0


def test_a_served_dels_late_work_leaves_what_a_new_add_made(node: FakeNode) -> None:
    """A served DEL's work after its answer runs only while its record stands: an in-process ADD
    of the same attachment that finished the record meanwhile keeps its new veth (same name) and
    its address. Here the agent's server is the test itself, holding the late work back."""
    old_pod, cid = node.pod(), node.container_id()
    assert node.add(old_pod, cid).code == 0
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": cid, "CNI_NETNS": old_pod,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}  # fmt: skip
    netns_file = os.open(old_pod, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netns.enter(node.host):
            answer = served.serve(env, json.dumps(node.config()).encode(), None, 0,
                                  netns_file=netns_file)  # fmt: skip
        assert (answer.code, answer.stdout) == (0, b"") and node.deleting(cid, "eth0")
        new_pod = node.pod()
        new = node.add(new_pod, cid)
        assert new.code == 0, new
        with netns.enter(node.host):
            for work in answer.deferred:
                work()
    finally:
        os.close(netns_file)
    host_end, _, pod_end = new.json["interfaces"]
    assert host_end["name"] in links_in(node.host)
    assert links_in(new_pod)["eth0"].mac == pod_end["mac"]
    (address,) = node.reservations()
    assert new.json["ips"][0]["address"].startswith(address + "/")
    assert deleting_records(node) == []
    assert node.run("DEL", None, cid, new_pod).code == 0
