"""The offline pause image: a deterministic OCI layout holding a static busybox, named for
containerd's import; a dynamic or missing busybox is refused with the package to install."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lab.runtimes.cri import pause


def _fake_static_elf(path: Path) -> Path:
    """A 64-bit ELF header with one PT_LOAD and no PT_INTERP: 'static' as far as the check goes."""
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    program = bytearray(56)
    struct.pack_into("<I", program, 0, 1)  # PT_LOAD
    path.write_bytes(bytes(header + program) + b"payload")
    return path


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {
            m.name: archive.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            for m in archive.getmembers()
        }


def test_pause_image_is_an_oci_layout_naming_the_image(tmp_path: Path) -> None:
    busybox = _fake_static_elf(tmp_path / "busybox")
    data = pause.image_tarball(str(busybox), "example/pause:1")
    assert data == pause.image_tarball(str(busybox), "example/pause:1")  # deterministic
    files = _members(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "example/pause:1"

    def blob(descriptor: dict[str, Any]) -> bytes:
        content = files[f"blobs/sha256/{descriptor['digest'].split(':')[1]}"]
        assert "sha256:" + hashlib.sha256(content).hexdigest() == descriptor["digest"]
        assert len(content) == descriptor["size"]
        return content

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    [layer_descriptor] = manifest["layers"]
    layer = blob(layer_descriptor)
    assert config["config"]["Entrypoint"][0] == "/bin/busybox"
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]  # uncompressed layer
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        member = archive.getmember("bin/busybox")
        assert member.mode & 0o111 and (member.uid, member.mtime) == (0, 0)
        assert archive.extractfile(member).read() == busybox.read_bytes()  # type: ignore[union-attr]


def test_pause_image_refuses_a_dynamic_or_missing_busybox(tmp_path: Path) -> None:
    dynamic = _fake_static_elf(tmp_path / "dynamic")
    raw = bytearray(dynamic.read_bytes())
    struct.pack_into("<I", raw, 64, 3)  # the one program header becomes PT_INTERP
    dynamic.write_bytes(bytes(raw))
    with pytest.raises(pause.PauseImageError, match="dynamically linked"):
        pause.image_tarball(str(dynamic))
    with pytest.raises(pause.PauseImageError, match="busybox-static"):
        pause.image_tarball(str(tmp_path / "absent"))
