"""Nodes from a JSON or YAML file, re-read whenever it changes.

Format (it mirrors the Node fields that matter):
`{"nodes": [{"name": "n1", "internalIP": "192.168.50.11", "podCIDR": "10.244.1.0/24"}, ...]}`;
the lists `podCIDRs` (as in a Node's spec) and `internalIPs` (a Node's InternalIP addresses) are
read beside them, for a dual-stack node:
`{"name": "n1", "internalIPs": ["192.168.81.11", "fd00:81::11"], "podCIDRs": ["10.244.1.0/24",
"fd00:10:244:1::/64"]}`.

The file is untrusted input: it is read only if it is a regular file of at most MAX_FILE_BYTES,
and YAML aliases (the "billion laughs" bomb: 500 bytes that expand to gigabytes) are refused.
It should be replaced atomically (write a new file, rename it over the old one); a writer that
rewrites it in place can be caught half-way with a shorter but valid list, so a node that
vanishes from the file is kept for VANISH_GRACE_SECONDS before its routes are withdrawn.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from minicni.agent.model.nodes import NodeEntry
from minicni.agent.service.sources import SourceError, SourceHealth

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# ~100 bytes a node: 4 MiB holds 40,000 nodes, eight times the most a Kubernetes cluster has.
MAX_FILE_BYTES = 4 << 20
# Longer than an in-place rewrite takes to finish and be re-read (a poll is 0.5 s), short enough
# that a node that really left loses its routes soon after.
VANISH_GRACE_SECONDS = 5.0


def parse_document(text: str) -> Any:
    """JSON, else YAML (a superset; imported only when needed), without aliases."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SourceError("nested too deeply") from None
    except json.JSONDecodeError as json_error:
        try:
            import yaml
        except ImportError:
            raise SourceError(f"not valid JSON ({json_error}) and PyYAML is missing") from None
        try:
            return yaml.load(text, Loader=_no_alias_loader())  # a SafeLoader subclass
        except yaml.YAMLError as yaml_error:
            raise SourceError(f"neither JSON nor YAML: {yaml_error}") from None
        except RecursionError:
            raise SourceError("nested too deeply") from None
        except ValueError as error:  # an integer of more than 4300 digits
            raise SourceError(f"not a usable YAML value: {error}") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise SourceError(f"not a usable JSON value: {error}") from None


@cache
def _no_alias_loader() -> Any:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """yaml.SafeLoader that refuses `*alias` references before anything is expanded."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"YAML aliases are not accepted (*{event.anchor}): write every node out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_bounded(path: Path) -> str:
    """The file's text, if it is a regular file of at most MAX_FILE_BYTES (never blocking on a
    FIFO or a device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise SourceError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise SourceError(f"{path} is not UTF-8: {error}") from None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def entry_from_mapping(raw: Any) -> NodeEntry:
    """One list item; structural problems surface as empty fields that validation reports."""
    if not isinstance(raw, dict):
        return NodeEntry(name="", internal_ip=None)
    cidrs: list[str] = []
    listed = raw.get("podCIDRs")
    if isinstance(listed, list):
        cidrs += [str(cidr) for cidr in listed]
    single = _text(raw.get("podCIDR"))
    if single and single not in cidrs:
        cidrs.insert(0, single)
    addresses = raw.get("internalIPs")
    return NodeEntry(
        name=_text(raw.get("name")) or "",
        internal_ip=_text(raw.get("internalIP")),
        pod_cidrs=tuple(cidrs),
        internal_ips=(
            tuple(text for text in map(_text, addresses) if text)
            if isinstance(addresses, list)
            else ()
        ),
    )


def entries_from_document(document: Any) -> list[NodeEntry]:
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise SourceError('expected an object with a "nodes" list')
    return [entry_from_mapping(item) for item in document["nodes"]]


class StaticFileSource:
    def __init__(self, path: Path, vanish_grace: float = VANISH_GRACE_SECONDS) -> None:
        self.path = path
        self.vanish_grace = vanish_grace
        self._seen: tuple[int, int, int] | None = None
        self._listed: dict[str, NodeEntry] = {}  # by name, as the file last listed them
        self._vanished: dict[str, tuple[NodeEntry, float]] = {}  # name -> (entry, withdraw at)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def fetch(self) -> list[NodeEntry]:
        self._seen = self._signature()
        # Before reading: when the file turns out unusable, the end of a grace must still be one
        # change, not a change on every poll.
        self._drop_expired()
        text = read_bounded(self.path)
        try:
            entries = entries_from_document(parse_document(text))
        except SourceError as error:
            raise SourceError(f"{self.path}: {error}") from None
        except (RecursionError, ValueError) as error:  # str() of an absurd value
            raise SourceError(f"{self.path}: unusable entry: {type(error).__name__}") from None
        return entries + self._kept_for_grace(entries)

    def _kept_for_grace(self, entries: list[NodeEntry]) -> list[NodeEntry]:
        """Entries of nodes that left the file less than `vanish_grace` seconds ago."""
        now = time.monotonic()
        listed = {entry.name: entry for entry in entries if entry.name}
        for name, entry in self._listed.items():
            if name not in listed and name not in self._vanished:
                self._vanished[name] = (entry, now + self.vanish_grace)
                log.warning(
                    "node %r vanished from %s: withdrawn in %.0f s unless it comes back "
                    "(replace the file atomically: write a new one and rename it)",
                    name,
                    self.path,
                    self.vanish_grace,
                )
        for name in [name for name in self._vanished if name in listed]:
            del self._vanished[name]
        self._drop_expired()
        self._listed = listed
        return [entry for entry, _ in self._vanished.values()]

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for name in [name for name, (_, deadline) in self._vanished.items() if deadline <= now]:
            del self._vanished[name]

    def _grace_ended(self) -> bool:
        return any(deadline <= time.monotonic() for _, deadline in self._vanished.values())

    def changed(self) -> bool:
        return self._signature() != self._seen or self._grace_ended()

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        remaining = timeout
        while remaining > 0 and not stop.is_set():
            if self.changed():
                return True
            step = min(POLL_SECONDS, remaining)
            stop.wait(step)
            remaining -= step
        return self.changed()

    def report_ready(self, node_name: str) -> None:
        """Nothing to tell a file."""

    def health(self) -> SourceHealth:
        """A file that cannot be read is reported by each reconcile, which keeps the last good
        node set; nothing here can hang."""
        return SourceHealth()

    def close(self) -> None:
        """Nothing to release."""
