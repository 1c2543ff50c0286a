"""Kubernetes list and watch bodies read as streams, one object in memory at a time.

A list of 5,000 Nodes of 13.5 KB is about 70 MB of JSON; decoding it whole, and then into the
kubernetes client's models, cost the agent 430-560 MB. Here a list body is read in chunks and its
`items` are decoded one by one with the C JSON decoder, each reduced to the three fields the agent
plans with (`NodeEntry`) before the next is read; a watch body is read line by line. Every object
is bounded in size, so a broken or hostile server cannot make the agent buffer without limit.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, ip_address
from typing import Any

from minicni.agent.model.nodes import NodeEntry

MAX_OBJECT_BYTES = 4 << 20
"""No Node comes near: etcd refuses objects over 1.5 MiB."""
CHUNK_BYTES = 64 << 10
_WHITESPACE = " \t\r\n"
_DECODER = json.JSONDecoder()


class StreamError(ValueError):
    """The body is not the JSON expected, or an object in it is larger than allowed."""


class _Text:
    """Decoded text of a byte stream, filled on demand; `pos` is the read position."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks = iter(chunks)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._limit = limit
        self.text = ""
        self.pos = 0
        self.eof = False

    def _more(self) -> bool:
        """Append the next chunk (the consumed prefix is dropped first); False at the end."""
        if self.pos:
            self.text = self.text[self.pos :]
            self.pos = 0
        if len(self.text) > self._limit:
            raise StreamError(f"an object in the body exceeds {self._limit} bytes")
        for chunk in self._chunks:
            if chunk:
                self.text += self._decoder.decode(chunk)
                return True
        self.text += self._decoder.decode(b"", final=True)
        self.eof = True
        return False

    def peek(self) -> str:
        """The next non-blank character, "" at the end of the stream."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self._more():
                return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, allowed: str) -> str:
        char = self.peek()
        if not char or char not in allowed:
            raise StreamError(f"expected one of {allowed!r}, found {char or 'the end'!r}")
        self.pos += 1
        return char

    def value(self) -> Any:
        """Decode the JSON value at the read position. A partial buffer either fails to decode
        or (a number cut short) ends exactly at its end: then more is read, at least doubling
        what is buffered each time, so a large object costs linear time."""
        self.peek()
        while True:
            if not self.eof:
                try:
                    value, end = _DECODER.raw_decode(self.text, self.pos)
                    if end < len(self.text):
                        self.pos = end
                        return value
                except json.JSONDecodeError:
                    pass
                wanted = max(1, 2 * (len(self.text) - self.pos))
                while len(self.text) - self.pos < wanted and self._more():
                    pass
                continue
            try:
                value, self.pos = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                raise StreamError(f"invalid JSON: {error}") from None
            return value


class ListBody:
    """A list response (`{"metadata": {...}, "items": [...], ...}`) read item by item.

    `items()` yields each item; once it is exhausted, `fields` holds the other top-level keys
    (`metadata` with `resourceVersion` and `continue`), in whatever order they came.
    """

    def __init__(self, chunks: Iterable[bytes], limit: int = MAX_OBJECT_BYTES) -> None:
        self._text = _Text(chunks, limit)
        self.fields: dict[str, Any] = {}

    def items(self) -> Iterator[Any]:
        text = self._text
        text.take("{")
        if text.peek() == "}":
            text.pos += 1
        else:
            while True:
                key = text.value()
                if not isinstance(key, str):
                    raise StreamError("expected an object key")
                text.take(":")
                if key == "items" and text.peek() == "[":
                    yield from self._array()
                else:
                    self.fields[key] = text.value()
                if text.take(",}") == "}":
                    break
        if text.peek():
            raise StreamError("data after the end of the list")

    def _array(self) -> Iterator[Any]:
        text = self._text
        text.take("[")
        if text.peek() == "]":
            text.pos += 1
            return
        while True:
            yield text.value()
            if text.take(",]") == "]":
                return

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.fields.get("metadata")
        return metadata if isinstance(metadata, dict) else {}


def lines(chunks: Iterable[bytes], limit: int = MAX_OBJECT_BYTES) -> Iterator[bytes]:
    """Newline-delimited records of a watch body, each at most `limit` bytes."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise StreamError(f"a watch event exceeds {limit} bytes")
    if buffer.strip():
        yield bytes(buffer)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def _ipv4_first(addresses: list[str]) -> str | None:
    """An IPv4 address first (what an IPv4 node set always planned with); else the first one."""
    for text in addresses:
        try:
            if isinstance(ip_address(text), IPv4Address):
                return text
        except ValueError:
            continue
    return addresses[0] if addresses else None


def entry_from_object(node: Any) -> NodeEntry:
    """A Node's JSON object -> the planning input. Fields of the wrong type count as absent:
    validation then reports the node, it never reaches the kernel."""
    metadata = _mapping(node, "metadata")
    spec = _mapping(node, "spec")
    status = _mapping(node, "status")
    name = metadata.get("name")
    addresses = status.get("addresses")
    internal = [
        address["address"]
        for address in (addresses if isinstance(addresses, list) else [])
        if isinstance(address, dict)
        and address.get("type") == "InternalIP"
        and isinstance(address.get("address"), str)
        and address["address"]
    ]
    listed = spec.get("podCIDRs")
    cidrs = [c for c in (listed if isinstance(listed, list) else []) if isinstance(c, str) and c]
    single = spec.get("podCIDR")
    if isinstance(single, str) and single and single not in cidrs:
        cidrs.insert(0, single)
    return NodeEntry(
        name=name if isinstance(name, str) else "",
        internal_ip=_ipv4_first(internal),
        pod_cidrs=tuple(cidrs),
        internal_ips=tuple(internal) if len(internal) > 1 else (),
    )


def resource_version(node: Any) -> str | None:
    version = _mapping(node, "metadata").get("resourceVersion")
    return version if isinstance(version, str) and version else None
