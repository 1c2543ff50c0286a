"""The sandbox ("pause") image, built offline: there is no registry to pull from.

An OCI image layout in one tarball, with one uncompressed layer holding Debian's busybox-static as
`/bin/busybox`; the sandbox process is `busybox sleep`, which does nothing for as long as the pod
lives (containerd stops a sandbox with SIGKILL, so it needs no signal handling). Every byte is
deterministic (fixed times, owners and order), so the same busybox always gives the same digests
and a second import is a no-op. The tarball is imported with `ctr images import` into the `k8s.io`
namespace, where the CRI plugin looks for its `sandbox_image`; the name comes from the
`io.containerd.image.name` annotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
from dataclasses import dataclass

BUSYBOX = "/bin/busybox"
IMAGE_NAME = "minicni.lab/pause:busybox"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace of every CRI object
# ~68 years: "forever" for busybox's sleep, which takes seconds as an unsigned long
SANDBOX_COMMAND = ("/bin/busybox", "sleep", "2147483647")
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
IMPORT_TIMEOUT = 120.0


class PauseImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def static_busybox(path: str = BUSYBOX) -> str:
    """`path` if it is a static x86-64/arm64 ELF (runs in an image without a libc), else raise."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(64)
            if header[:5] != b"\x7fELF\x02":
                raise PauseImageError(f"{path} is not a 64-bit ELF executable")
            (phoff,) = struct.unpack_from("<Q", header, 32)
            entry_size, entries = struct.unpack_from("<HH", header, 54)
            stream.seek(phoff)
            table = stream.read(entry_size * entries)
    except FileNotFoundError:
        raise PauseImageError(f"{path} is missing: apt-get install busybox-static") from None
    pt_interp = 3
    kinds = {struct.unpack_from("<I", table, i * entry_size)[0] for i in range(entries)}
    if pt_interp in kinds:
        raise PauseImageError(f"{path} is dynamically linked: apt-get install busybox-static")
    return path


def _tar_entry(
    name: str, kind: bytes, mode: int, data: bytes = b""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.size = len(data)
    return info, data


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def layer(busybox: bytes) -> Blob:
    """The image's root file system: /bin/busybox and the empty dirs a runtime mounts over."""
    entries = [_tar_entry(d, tarfile.DIRTYPE, 0o755) for d in ("bin", "dev", "etc", "proc", "sys")]
    entries.append(_tar_entry("bin/busybox", tarfile.REGTYPE, 0o755, busybox))
    return Blob(MEDIA_LAYER, _tar(entries))


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def image_tarball(busybox_path: str = BUSYBOX, name: str = IMAGE_NAME) -> bytes:
    """The OCI image layout (oci-layout, index.json, blobs/sha256/*) as one tar archive."""
    with open(static_busybox(busybox_path), "rb") as stream:
        root = layer(stream.read())
    config = Blob(
        MEDIA_CONFIG,
        _json(
            {
                "architecture": architecture(),
                "os": "linux",
                "config": {"Entrypoint": list(SANDBOX_COMMAND), "WorkingDir": "/"},
                "rootfs": {"type": "layers", "diff_ids": [root.digest]},
            }
        ),
    )
    manifest = Blob(
        MEDIA_MANIFEST,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config.descriptor(),
                "layers": [root.descriptor()],
            }
        ),
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **manifest.descriptor(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
                "platform": {"architecture": architecture(), "os": "linux"},
            }
        ],
    }
    entries = [
        _tar_entry("oci-layout", tarfile.REGTYPE, 0o644, _json({"imageLayoutVersion": "1.0.0"})),
        _tar_entry("index.json", tarfile.REGTYPE, 0o644, _json(index)),
        _tar_entry("blobs", tarfile.DIRTYPE, 0o755),
        _tar_entry("blobs/sha256", tarfile.DIRTYPE, 0o755),
    ]
    for blob in (root, config, manifest):
        digest = blob.digest.split(":", 1)[1]
        entries.append(_tar_entry(f"blobs/sha256/{digest}", tarfile.REGTYPE, 0o644, blob.data))
    return _tar(entries)


def write_image_tarball(path: str, busybox_path: str = BUSYBOX, name: str = IMAGE_NAME) -> str:
    data = image_tarball(busybox_path, name)
    with open(path, "wb") as stream:
        stream.write(data)
    return path


def import_image(address: str, tarball: str, snapshotter: str) -> None:
    """Load the image into a running containerd's k8s.io namespace and unpack it for
    `snapshotter`, as the CRI plugin needs it to start sandboxes."""
    argv = [
        "ctr", "--address", address, "--namespace", CRI_NAMESPACE,
        "images", "import", "--snapshotter", snapshotter, tarball,
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise PauseImageError(
            f"ctr images import did not finish in {IMPORT_TIMEOUT:.0f} s"
        ) from err
    if done.returncode != 0:
        raise PauseImageError(
            f"ctr images import {tarball} failed ({done.returncode}): {done.stderr.strip()}"
        )
