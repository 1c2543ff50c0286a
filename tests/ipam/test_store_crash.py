"""The store under crashes, a full disk and planted files: a kill at any file-system call of a
reservation leaves nothing that a DEL (release) cannot remove, a failed write leaves nothing at
all, and no store file is opened through a symlink or as a FIFO."""

from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from minicni.ipam.range import AddressRange
from minicni.ipam.store import (
    BOOT_ID_FILE,
    LAST_RESERVED,
    LAST_RESERVED6,
    LOCK_FILE,
    SPARE_FILE,
    AddressStore,
)

RANGE = AddressRange(
    IPv4Network("10.1.0.0/29"),
    IPv4Address("10.1.0.2"),
    IPv4Address("10.1.0.6"),
    IPv4Address("10.1.0.1"),
)
BOOKKEEPING = {LOCK_FILE, LAST_RESERVED, BOOT_ID_FILE, SPARE_FILE}
# Every call through which the store changes or opens a file (the ones a kill can interrupt).
FS_CALLS = (
    "open",
    "fdopen",
    "write",
    "pwrite",
    "ftruncate",
    "symlink",
    "link",
    "rename",
    "replace",
    "unlink",
)


def _kill_at(call_number: int) -> None:
    """In a forked child: SIGKILL ourselves at the `call_number`-th file-system call."""
    counter = [0]

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counter[0] += 1
            if counter[0] == call_number:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return counted

    for name in FS_CALLS:
        setattr(os, name, wrap(getattr(os, name)))


RANGE6 = AddressRange(
    IPv6Network("fd00:1::/125"),
    IPv6Address("fd00:1::2"),
    IPv6Address("fd00:1::7"),
    IPv6Address("fd00:1::1"),
)


def _reserve_killed(
    directory: str, call_number: int, boot_id: str, ranges: tuple[AddressRange, ...] = (RANGE,)
) -> bool:
    """Reserve (an address of each range, under one lock, as a dual-stack ADD does) in a child
    killed at the given call; True if the kill happened."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _kill_at(call_number)
            store = AddressStore(directory, boot_id=boot_id)
            with store.locked():
                store.sweep_previous_boots()
                for address_range in ranges:
                    store.reserve(address_range, "victim", "eth0", "/run/netns/victim")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


def _leftovers(directory: str) -> set[str]:
    return set(os.listdir(directory)) - BOOKKEEPING if os.path.isdir(directory) else set()


def _with_a_spare(directory: str, boot_id: str) -> None:
    """A store whose last release left its file as the spare (a reservation rewrites it)."""
    store = AddressStore(directory, boot_id=boot_id)
    with store.locked():
        store.sweep_previous_boots()
        store.reserve(RANGE, "earlier-pod-with-a-long-name", "eth0", "/run/netns/earlier")
        store.release("earlier-pod-with-a-long-name", "eth0")
    assert os.path.exists(os.path.join(directory, SPARE_FILE))


@pytest.mark.parametrize("boot", ["same-boot", "after-reboot", "with-a-spare"])
def test_a_kill_at_any_call_of_reserve_leaves_nothing_release_misses(
    tmp_path: Path, boot: str
) -> None:
    killed_somewhere = False
    for call_number in range(1, 200):
        directory = str(tmp_path / f"kill-{boot}-{call_number}")
        if boot == "after-reboot":  # the sweep runs (and writes boot_id) before the reservation
            with AddressStore(directory, boot_id="earlier-boot").locked() as earlier:
                earlier.sweep_previous_boots()
        if boot == "with-a-spare":
            _with_a_spare(directory, "this-boot")
        if not _reserve_killed(directory, call_number, boot_id="this-boot"):
            break  # the reservation ran to its end without reaching this call
        killed_somewhere = True
        store = AddressStore(directory, boot_id="this-boot")
        with store.locked():
            store.release("victim", "eth0")
        assert _leftovers(directory) == set(), f"killed at call {call_number}"
        # And no address leaked: the range's five fill up again (the round robin may go on).
        with store.locked():
            assert store.reservations() == []
            taken = {str(store.reserve(RANGE, f"next{n}", "eth0", "").address) for n in range(5)}
        assert taken == {f"10.1.0.{n}" for n in range(2, 7)}
    assert killed_somewhere


def test_a_kill_anywhere_in_a_dual_stack_reservation_leaves_nothing_release_misses(
    tmp_path: Path,
) -> None:
    bookkeeping = BOOKKEEPING | {LAST_RESERVED6}
    killed_in_ipv6 = False
    for call_number in range(1, 300):
        directory = str(tmp_path / f"kill-{call_number}")
        if not _reserve_killed(directory, call_number, "b", ranges=(RANGE, RANGE6)):
            break
        killed_in_ipv6 |= os.path.lexists(os.path.join(directory, "10.1.0.2"))
        store = AddressStore(directory, boot_id="b")
        with store.locked():
            store.release("victim", "eth0")
        assert set(os.listdir(directory)) - bookkeeping == set(), f"killed at call {call_number}"
        with store.locked():  # both families free again (the round robins may go on)
            assert store.reservations() == []
            taken = {str(store.reserve(RANGE6, f"next{n}", "eth0", "").address) for n in range(6)}
        assert taken == {f"fd00:1::{n}" for n in range(2, 8)}
    assert killed_in_ipv6  # some kill came after the IPv4 address was in place


def test_release_finds_a_reservation_whose_owner_link_was_never_made(tmp_path: Path) -> None:
    """What an earlier version left when killed at the owner symlink: a complete address file
    naming its owner, and no link."""
    store = AddressStore(str(tmp_path / "net"), boot_id="b")
    with store.locked():
        Path(store.directory, "10.1.0.4").write_text(
            json.dumps({"containerID": "c1", "ifname": "eth0", "netns": "", "bootID": "b"})
        )
        released = store.release("c1", "eth0")
    assert [str(r.address) for r in released] == ["10.1.0.4"]
    assert _leftovers(store.directory) == set()


@pytest.mark.parametrize("content", ["", '{"containerID": "c1", "ifn'], ids=["empty", "partial"])
def test_gc_and_the_boot_sweep_remove_empty_and_partial_address_files(
    tmp_path: Path, content: str
) -> None:
    for sweep in (False, True):
        store = AddressStore(str(tmp_path / f"net-{sweep}"), boot_id="now")
        with store.locked():
            store.sweep_previous_boots()
        Path(store.directory, "10.1.0.3").write_text(content)
        Path(store.directory, ".last_reserved_ip.0.abc123.tmp").write_text("10.1.0")
        if sweep:
            Path(store.directory, BOOT_ID_FILE).write_text("earlier")
        with store.locked():
            if sweep:
                store.sweep_previous_boots()
            else:
                store.release_where(lambda r: True)
        assert _leftovers(store.directory) == set()
        with store.locked():
            assert str(store.reserve(RANGE, "c", "eth0", "").address) == "10.1.0.2"
            assert str(store.reserve(RANGE, "d", "eth0", "").address) == "10.1.0.3"


def test_gc_removes_owner_links_that_lead_nowhere(tmp_path: Path) -> None:
    store = AddressStore(str(tmp_path / "net"), boot_id="b")
    with store.locked():
        kept = store.reserve(RANGE, "kept", "eth0", "")
    os.symlink("10.1.0.5", os.path.join(store.directory, "owner-dangling@eth0"))
    with store.locked():
        store.release_where(lambda r: False)
        assert store.reservations() == [kept]
    assert _leftovers(store.directory) == {"10.1.0.2", "owner-kept@eth0"}


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the address file's content cannot be written. ADD must fail and leave no
    address file, owner link or temporary file behind (else the address leaks for good)."""
    store = AddressStore(str(tmp_path / "net"), boot_id="b")
    with store.locked():
        store.sweep_previous_boots()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, *args: Any, **kwargs: Any) -> None:
            self.file = real_fdopen(fd, *args, **kwargs)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def no_space(fd: int, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", FullDisk)
    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space"), store.locked():
        store.reserve(RANGE, "c", "eth0", "")
    monkeypatch.undo()
    assert _leftovers(store.directory) == set()


def test_a_failed_write_into_the_spare_leaves_only_the_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = str(tmp_path / "net")
    _with_a_spare(directory, "b")
    store = AddressStore(directory, boot_id="b")

    def no_space(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(OSError, match="No space"), store.locked():
        store.reserve(RANGE, "c", "eth0", "")
    monkeypatch.undo()
    assert _leftovers(directory) == set() and os.path.exists(os.path.join(directory, SPARE_FILE))
    with store.locked():
        assert store.reservations() == []


@pytest.mark.parametrize("name", [LOCK_FILE, LAST_RESERVED, "10.1.0.2", SPARE_FILE])
def test_a_planted_symlink_is_never_followed(tmp_path: Path, name: str) -> None:
    target = tmp_path / "target-outside"
    store = AddressStore(str(tmp_path / "net"), boot_id="b")
    os.makedirs(store.directory)
    os.symlink(str(target), os.path.join(store.directory, name))
    try:
        with store.locked():
            store.reserve(RANGE, "c", "eth0", "")
            store.release("c", "eth0")
        store.keep_spare()
    except OSError as exc:
        assert name == LOCK_FILE
        assert "symlink" in str(exc) and LOCK_FILE in str(exc)
    assert not target.exists()


def test_a_planted_fifo_does_not_block(tmp_path: Path) -> None:
    store = AddressStore(str(tmp_path / "net"), boot_id="b")
    os.makedirs(store.directory)
    os.mkfifo(os.path.join(store.directory, LOCK_FILE))
    with pytest.raises(OSError, match="not a regular file"), store.locked():
        pass
    os.unlink(os.path.join(store.directory, LOCK_FILE))
    os.mkfifo(os.path.join(store.directory, "10.1.0.2"))
    os.mkfifo(os.path.join(store.directory, LAST_RESERVED))
    os.mkfifo(os.path.join(store.directory, SPARE_FILE))
    with store.locked():
        assert store.reservations() == []  # read without blocking, and skipped
        assert str(store.reserve(RANGE, "c", "eth0", "").address) == "10.1.0.3"
