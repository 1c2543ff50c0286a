"""The `portmap` plugin in the CNI bin dir, and the CNI versions it speaks.

hostPort needs `portmap` chained after the plugin (kindnet and flannel chain it; kind nodes and the
cni-plugins release ship it). A chained plugin must accept the version the runtime picks for the
whole list, so the conflist offers only the versions both speak: asked once per binary (VERSION,
which has no side effects), again only when the file changes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

PORTMAP = "portmap"
TIMEOUT_SECONDS = 10
MAX_OUTPUT_BYTES = 64 << 10

Signature = tuple[int, int, int]


def _signature(path: Path) -> Signature | None:
    try:
        status = path.stat()
    except OSError:
        return None
    if not status.st_mode & 0o111:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def ask_versions(path: Path) -> tuple[str, ...]:
    """The versions `path` reports for CNI_COMMAND=VERSION; raises ValueError if it does not."""
    done = subprocess.run(
        [str(path)],
        input=b'{"cniVersion":"1.0.0"}',
        env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin")},
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0 or len(done.stdout) > MAX_OUTPUT_BYTES:
        raise ValueError(f"{path} VERSION failed (exit {done.returncode})")
    answer = json.loads(done.stdout)
    versions = answer.get("supportedVersions") if isinstance(answer, dict) else None
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ValueError(f"{path} VERSION answered without supportedVersions")
    return tuple(versions)


class PortmapProbe:
    """Remembers the answer for the binary as it is on disk."""

    def __init__(self, bin_dir: Path) -> None:
        self.path = bin_dir / PORTMAP
        self._seen: Signature | None = None
        self._versions: tuple[str, ...] | None = None

    def versions(self) -> tuple[str, ...] | None:
        """None when there is no usable portmap in the bin dir."""
        signature = _signature(self.path)
        if signature != self._seen:
            self._seen = signature
            self._versions = None
            if signature is not None:
                try:
                    self._versions = ask_versions(self.path)
                    log.info("chaining %s (CNI %s)", self.path, ", ".join(self._versions))
                except (OSError, ValueError, subprocess.SubprocessError) as error:
                    log.warning("not chaining %s: %s", self.path, error)
        return self._versions
