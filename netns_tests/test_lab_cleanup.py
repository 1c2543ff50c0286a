"""The lab's last step, removing a work directory, as a failed CI run met it: podman's storage
had mounted itself again below the lab's directory, and the lab could only say "could not
remove". It unmounts what is below, never deletes through a mount into the host's files, and
says what stood in the way."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.runtimes.cri.cleanup import mounts_under, remove_tree


def test_a_bind_mount_below_is_unmounted_and_its_source_kept(tmp_path: Path) -> None:
    source = tmp_path / "host-files"
    source.mkdir()
    (source / "precious").write_text("keep me")
    tree = tmp_path / "work"
    target = tree / "podman" / "root" / "overlay"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        assert remove_tree(str(tree)) == []
    finally:
        if mounts_under(str(tree)):
            subprocess.run(["umount", "-l", str(target)], check=False)
    assert not tree.exists()
    assert (source / "precious").read_text() == "keep me"


def test_a_tree_it_cannot_remove_is_named_with_the_reason(tmp_path: Path) -> None:
    tree = tmp_path / "work"
    stuck = tree / "stuck"
    stuck.mkdir(parents=True)
    (stuck / "file").write_text("x")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)  # not even root may unlink in it
    try:
        problems = remove_tree(str(tree), attempts=2)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert len(problems) == 1
    assert problems[0].startswith(f"could not remove {tree} (")
    assert f"{stuck}/file" in problems[0] and "Operation not permitted" in problems[0]
    assert remove_tree(str(tree)) == []
