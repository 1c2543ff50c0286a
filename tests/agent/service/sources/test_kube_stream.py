"""List and watch bodies read as streams: whatever the chunking, the same objects; bounded."""

import json
from collections.abc import Iterator

import pytest

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources.kube_stream import (
    ListBody,
    StreamError,
    entry_from_object,
    lines,
)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def node(name: str, ip: str, cidr: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "resourceVersion": "5", "annotations": {"x": '}]{[,"é'}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


NODES = [node(f"n{i}", f"10.0.0.{i}", f"10.244.{i}.0/24") for i in range(1, 6)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 16])
def test_items_and_metadata_whatever_the_chunk_boundaries(size: int) -> None:
    # metadata after items, blanks between tokens, multi-byte UTF-8 cut across chunks
    text = (
        '{ "kind" : "NodeList", "items" : [ '
        + " ,\n ".join(json.dumps(n, ensure_ascii=False) for n in NODES)
        + ' ] , "metadata" : {"resourceVersion": "42", "continue": "abc"} }\n'
    )
    body = ListBody(chunked(text.encode(), size))
    assert list(body.items()) == NODES
    assert body.metadata == {"resourceVersion": "42", "continue": "abc"}
    assert body.fields["kind"] == "NodeList"


def test_empty_and_null_items() -> None:
    for text in (b'{"items":[],"metadata":{}}', b'{"items":null}', b"{}"):
        assert list(ListBody(chunked(text, 3)).items()) == []


def test_numbers_cut_at_a_chunk_end_are_read_whole() -> None:
    body = ListBody(chunked(b'{"metadata":{"n":12345},"items":[1234,5]}', 2))
    assert list(body.items()) == [1234, 5]
    assert body.metadata == {"n": 12345}


@pytest.mark.parametrize(
    "text",
    [
        b'{"items":[{"a":1},',  # cut short
        b'{"items":[{"a":1}]',  # no closing brace
        b'{"items":[{"a":1}]} trailing',
        b'["not", "a", "list object"]',
        b'{"items":[{"a":1} {"b":2}]}',
        b"",
    ],
)
def test_malformed_bodies_are_errors(text: bytes) -> None:
    with pytest.raises(StreamError):
        list(ListBody(chunked(text, 4)).items())


def test_an_item_over_the_limit_is_refused_without_buffering_on() -> None:
    huge = b'{"items":[{"pad":"' + b"x" * 100_000 + b'"}]}'
    read: list[int] = []

    def counting() -> Iterator[bytes]:
        for chunk in chunked(huge, 1000):
            read.append(len(chunk))
            yield chunk

    with pytest.raises(StreamError, match="exceeds"):
        list(ListBody(counting(), limit=10_000).items())
    assert sum(read) < 30_000  # stopped soon after the limit, not at the end of the body


def test_watch_lines_across_chunks_and_limit() -> None:
    events = b'{"type":"ADDED"}\n\n{"type":"DELETED"}\n{"type":"BOOKMARK"}'
    assert list(lines(chunked(events, 5))) == [
        b'{"type":"ADDED"}',
        b'{"type":"DELETED"}',
        b'{"type":"BOOKMARK"}',
    ]
    with pytest.raises(StreamError):
        list(lines(chunked(b"x" * 5000, 100), limit=1000))


def test_entry_internal_ip_and_pod_cidrs() -> None:
    obj = {
        "metadata": {"name": "kind-worker"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "kind-worker"},
                {"type": "InternalIP", "address": "172.18.0.3"},
            ]
        },
    }
    assert entry_from_object(obj) == NodeEntry("kind-worker", "172.18.0.3", ("10.244.1.0/24",))


def test_entry_dual_stack_prefers_ipv4_and_keeps_all_cidrs() -> None:
    obj = {
        "metadata": {"name": "n1"},
        "spec": {
            "podCIDR": "fd00:10:244:1::/64",
            "podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"],
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "fc00::3"},
                {"type": "InternalIP", "address": "172.18.0.3"},
                {"type": "ExternalIP", "address": "1.2.3.4"},
            ]
        },
    }
    entry = entry_from_object(obj)
    assert entry.internal_ip == "172.18.0.3"
    assert entry.addresses == ("172.18.0.3", "fc00::3")  # both InternalIPs, no ExternalIP
    assert entry.pod_cidrs == ("fd00:10:244:1::/64", "10.244.1.0/24")


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"name": "n1"}},
        {"metadata": {"name": "n1"}, "spec": None, "status": None},
        {
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": "10.0.0.0/24"},
            "status": {"addresses": 7},
        },
        {"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP"}, "x"]}},
    ],
)
def test_entry_with_missing_or_mistyped_fields(obj: object) -> None:
    assert entry_from_object(obj) == NodeEntry("n1", None, ())


def test_entry_of_a_non_object() -> None:
    assert entry_from_object(["not", "a", "node"]) == NodeEntry("", None, ())
