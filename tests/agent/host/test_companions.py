"""The loopback check: what containerd runs beside us for every sandbox."""

from pathlib import Path

from minicni.agent.host.companions import missing_loopback


def test_a_bin_dir_without_loopback_is_named(tmp_path: Path) -> None:
    warning = missing_loopback(tmp_path)
    assert warning is not None and str(tmp_path) in warning and "'loopback'" in warning


def test_a_loopback_that_cannot_be_executed_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "loopback").write_bytes(b"#!/bin/sh\n")
    assert missing_loopback(tmp_path) is not None
    (tmp_path / "loopback").chmod(0o755)
    assert missing_loopback(tmp_path) is None
