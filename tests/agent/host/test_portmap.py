"""Asking the portmap binary which CNI versions it speaks, once per binary on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from minicni.agent.host.portmap import PortmapProbe

DEBIAN_PORTMAP = Path("/usr/lib/cni/portmap")


def fake_portmap(bin_dir: Path, answer: str, code: int = 0) -> Path:
    path = bin_dir / "portmap"
    log = bin_dir / "calls"
    script = f"echo \"$CNI_COMMAND\" >> {log}\ncat > /dev/null\necho '{answer}'\nexit {code}\n"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return log


def test_versions_are_asked_once_per_binary(tmp_path: Path) -> None:
    calls = fake_portmap(tmp_path, '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}')
    probe = PortmapProbe(tmp_path)
    assert probe.versions() == ("0.4.0", "1.0.0")
    assert probe.versions() == ("0.4.0", "1.0.0")
    assert calls.read_text() == "VERSION\n"


def test_missing_failing_or_garbled_portmap_is_not_chained(tmp_path: Path) -> None:
    probe = PortmapProbe(tmp_path)
    assert probe.versions() is None
    fake_portmap(tmp_path, "not json")
    assert PortmapProbe(tmp_path).versions() is None
    fake_portmap(tmp_path, '{"supportedVersions":["1.0.0"]}', code=1)
    assert PortmapProbe(tmp_path).versions() is None
    (tmp_path / "portmap").chmod(0o644)
    assert PortmapProbe(tmp_path).versions() is None


@pytest.mark.skipif(not DEBIAN_PORTMAP.exists(), reason="no /usr/lib/cni/portmap")
def test_the_reference_portmap_answers(tmp_path: Path) -> None:
    (tmp_path / "portmap").symlink_to(DEBIAN_PORTMAP)
    versions = PortmapProbe(tmp_path).versions()
    assert versions is not None and "1.0.0" in versions
