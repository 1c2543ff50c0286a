"""The one atomic writer: readers see the old file or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

from minicni.fileutil import write_atomic


def test_write_atomic_replaces_the_inode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "10-minicni.conflist"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    # A reader holding the old file keeps reading the old content: the new file is a new inode.
    with open(target, "rb") as reader:
        assert write_atomic(str(target), b"new") is True
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10-minicni.conflist"]
