"""The address store in a temporary directory: round robin, a full range, release, the boot sweep,
and reservations from several processes at once."""

from __future__ import annotations

import json
import multiprocessing
import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from minicni.ipam.range import AddressRange
from minicni.ipam.store import (
    BOOT_ID_FILE,
    LAST_RESERVED,
    SPARE_FILE,
    AddressStore,
    RangeFullError,
    Reservation,
)


def address_range(cidr: str = "10.1.0.0/29", first: str = "", last: str = "") -> AddressRange:
    subnet = IPv4Network(cidr)
    return AddressRange(
        subnet=subnet,
        first=IPv4Address(first) if first else subnet.network_address + 1,
        last=IPv4Address(last) if last else subnet.broadcast_address - 1,
        gateway=subnet.network_address + 1,
    )


@pytest.fixture
def store(tmp_path: Path) -> AddressStore:
    return AddressStore(str(tmp_path / "net"), boot_id="boot-1")


def reserve(store: AddressStore, rng: AddressRange, cid: str, ifname: str = "eth0") -> Reservation:
    with store.locked():
        return store.reserve(rng, cid, ifname, f"/run/netns/{cid}")


def test_the_cursor_is_rewritten_in_place_and_exactly(store: AddressStore) -> None:
    """The round-robin cursor keeps its file (no rename per ADD) and holds exactly the last
    address handed out, also when it is shorter than the one before."""
    rng = address_range("10.1.0.0/24", first="10.1.0.98", last="10.1.0.101")
    cursor = Path(store.directory, LAST_RESERVED)
    reserve(store, rng, "c1")
    inode = cursor.stat().st_ino
    for cid, expected in (("c2", "10.1.0.99"), ("c3", "10.1.0.100"), ("c4", "10.1.0.101")):
        reserve(store, rng, cid)
        assert cursor.read_bytes() == expected.encode()
    with store.locked():
        store.release("c1", "eth0")
    reserve(store, rng, "c5")  # wraps around to the freed, shorter 10.1.0.98
    assert cursor.read_bytes() == b"10.1.0.98"
    assert cursor.stat().st_ino == inode


def test_first_reservation_skips_the_gateway_and_is_written_down(store: AddressStore) -> None:
    r = reserve(store, address_range(), "c1")
    assert r == Reservation(IPv4Address("10.1.0.2"), "c1", "eth0", "/run/netns/c1", "boot-1")
    data = json.loads(Path(store.directory, "10.1.0.2").read_text())
    assert data == {
        "containerID": "c1",
        "ifname": "eth0",
        "netns": "/run/netns/c1",
        "bootID": "boot-1",
        "address": "10.1.0.2",
    }
    owner = Path(store.directory, "owner-c1@eth0")
    assert not owner.is_symlink() and owner.samefile(Path(store.directory, "10.1.0.2"))
    assert Path(store.directory, LAST_RESERVED).read_text().strip() == "10.1.0.2"
    with store.locked():
        assert store.find("c1", "eth0") == r
        assert store.find("c1", "eth1") is None
        assert store.find("c2", "eth0") is None


def test_same_owner_gets_the_same_address(store: AddressStore) -> None:
    rng = address_range()
    first = reserve(store, rng, "c1")
    assert reserve(store, rng, "c1") == first
    assert reserve(store, rng, "c1", "net1").address != first.address


def test_round_robin_does_not_reuse_a_just_freed_address(store: AddressStore) -> None:
    rng = address_range()
    a = reserve(store, rng, "a").address
    b = reserve(store, rng, "b").address
    with store.locked():
        store.release("a", "eth0")
    c = reserve(store, rng, "c").address
    assert (str(a), str(b), str(c)) == ("10.1.0.2", "10.1.0.3", "10.1.0.4")


def test_round_robin_wraps_around(store: AddressStore) -> None:
    rng = address_range()  # .2 .. .6 usable
    got = [str(reserve(store, rng, f"c{i}").address) for i in range(5)]
    assert got == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
    with store.locked():
        store.release("c1", "eth0")  # .3
    assert str(reserve(store, rng, "again").address) == "10.1.0.3"


def test_gateway_inside_range_is_never_handed_out(store: AddressStore) -> None:
    subnet = IPv4Network("10.1.0.0/29")
    rng = AddressRange(
        subnet, IPv4Address("10.1.0.1"), IPv4Address("10.1.0.6"), IPv4Address("10.1.0.4")
    )
    got = {str(reserve(store, rng, f"c{i}").address) for i in range(rng.size)}
    assert got == {"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6"}


def test_range_full(store: AddressStore) -> None:
    rng = address_range()
    for i in range(rng.size):
        reserve(store, rng, f"c{i}")
    with pytest.raises(RangeFullError, match=r"10\.1\.0\.1-10\.1\.0\.6"):
        reserve(store, rng, "one-too-many")
    with store.locked():
        assert store.find("one-too-many", "eth0") is None
        assert len(store.reservations()) == rng.size
        store.release("c3", "eth0")
    assert str(reserve(store, rng, "fits-now").address) == "10.1.0.5"


def test_last_reserved_outside_a_changed_range_starts_at_the_beginning(
    store: AddressStore,
) -> None:
    reserve(store, address_range("10.9.0.0/24"), "old")
    assert str(reserve(store, address_range("10.1.0.0/29"), "new").address) == "10.1.0.2"


def test_release(store: AddressStore) -> None:
    rng = address_range()
    r = reserve(store, rng, "c1")
    with store.locked():
        assert store.release("c1", "eth0") == [r]
        assert store.release("c1", "eth0") == []
        assert store.find("c1", "eth0") is None
        assert store.reservations() == []
    left = sorted(os.listdir(store.directory))
    assert left == sorted(["lock", LAST_RESERVED, SPARE_FILE])  # the spare: see below


def test_a_released_reservation_is_the_next_ones_file(store: AddressStore) -> None:
    """The file a release frees becomes the spare, which the next reservation rewrites: no inode
    made or freed on either path, and nothing of the old content left."""
    rng = address_range()
    reserve(store, rng, "c1-with-a-much-longer-container-id")
    inode = Path(store.directory, "10.1.0.2").stat().st_ino
    with store.locked():
        store.release("c1-with-a-much-longer-container-id", "eth0")
    spare = Path(store.directory, SPARE_FILE)
    assert (spare.stat().st_ino, spare.stat().st_nlink) == (inode, 1)
    taken = reserve(store, rng, "c2")
    address = Path(store.directory, "10.1.0.3")
    assert address.stat().st_ino == inode and address.stat().st_nlink == 2
    assert json.loads(address.read_text())["containerID"] == "c2"  # whole, no tail of c1's
    assert not spare.exists()
    with store.locked():
        assert store.find("c2", "eth0") == taken


def test_a_spare_with_another_name_is_never_rewritten(store: AddressStore) -> None:
    """A spare that is also a reservation's (or a DEL record's) name, as a crash or a hand could
    leave it: rewriting it would change that reservation. It is dropped, and a file made."""
    rng = address_range()
    kept = reserve(store, rng, "kept")
    address = Path(store.directory, "10.1.0.2")
    before = address.read_bytes()
    os.link(address, Path(store.directory, SPARE_FILE))
    new = reserve(store, rng, "new")
    assert address.read_bytes() == before
    assert Path(store.directory, "10.1.0.3").stat().st_ino != address.stat().st_ino
    assert not Path(store.directory, SPARE_FILE).exists()
    with store.locked():
        assert (store.find("kept", "eth0"), store.find("new", "eth0")) == (kept, new)


def test_a_release_keeps_one_spare_and_the_agent_makes_it_ahead(store: AddressStore) -> None:
    rng = address_range()
    for cid in ("c1", "c2"):
        reserve(store, rng, cid)
    inode = Path(store.directory, "10.1.0.2").stat().st_ino
    with store.locked():
        store.release("c1", "eth0")
        store.release("c2", "eth0")  # a spare already: this one's file goes
    spare = Path(store.directory, SPARE_FILE)
    assert spare.stat().st_ino == inode
    store.keep_spare()  # there is one: kept as it is
    assert spare.stat().st_ino == inode
    reserve(store, rng, "c3")
    assert not spare.exists()
    store.keep_spare()
    assert spare.stat().st_size == 0 and spare.stat().st_nlink == 1
    assert Path(store.directory, "10.1.0.4").stat().st_ino != spare.stat().st_ino
    AddressStore(str(Path(store.directory) / "missing")).keep_spare()  # no store: nothing
    assert not Path(store.directory, "missing").exists()


def test_release_of_unknown_owner_on_a_fresh_store(tmp_path: Path) -> None:
    fresh = AddressStore(str(tmp_path / "never-used"), boot_id="b")
    with fresh.locked():
        assert fresh.release("nobody", "eth0") == []
        assert fresh.reservations() == []


def test_release_leaves_other_interfaces_of_the_container(store: AddressStore) -> None:
    rng = address_range()
    reserve(store, rng, "c1", "eth0")
    net1 = reserve(store, rng, "c1", "net1")
    with store.locked():
        store.release("c1", "eth0")
        assert store.reservations() == [net1]


def test_release_where(store: AddressStore) -> None:
    rng = address_range()
    keep = reserve(store, rng, "keep")
    for cid in ("gone-1", "gone-2"):
        reserve(store, rng, cid)
    with store.locked():
        released = store.release_where(lambda r: r.container_id.startswith("gone"))
        assert sorted(r.container_id for r in released) == ["gone-1", "gone-2"]
        assert store.reservations() == [keep]
        assert store.find("gone-1", "eth0") is None
    assert not [n for n in os.listdir(store.directory) if n.startswith("owner-gone")]


def test_boot_sweep(tmp_path: Path) -> None:
    directory = str(tmp_path / "net")
    live_netns = tmp_path / "live-netns"
    live_netns.touch()
    rng = address_range()
    before = AddressStore(directory, boot_id="boot-old")
    with before.locked():
        assert before.sweep_previous_boots() == []  # first use: records the boot
        gone = before.reserve(rng, "gone", "eth0", str(tmp_path / "deleted-netns"))
        no_netns = before.reserve(rng, "no-netns", "eth0", "")
        kept = before.reserve(rng, "kept", "eth0", str(live_netns))
    assert Path(directory, BOOT_ID_FILE).read_text().strip() == "boot-old"

    after = AddressStore(directory, boot_id="boot-new")
    with after.locked():
        current = after.reserve(rng, "current", "eth0", str(tmp_path / "not-yet-created"))
    with after.locked():
        released = after.sweep_previous_boots()
        assert sorted(r.address for r in released) == sorted([gone.address, no_netns.address])
        assert sorted(r.container_id for r in after.reservations()) == ["current", "kept"]
        assert after.find("kept", "eth0") == kept
        assert after.find("current", "eth0") == current
        assert after.sweep_previous_boots() == []  # once per boot
    assert Path(directory, BOOT_ID_FILE).read_text().strip() == "boot-new"


def test_no_sweep_without_a_boot_id(tmp_path: Path) -> None:
    directory = str(tmp_path / "net")
    with AddressStore(directory, boot_id="old").locked() as old:
        old.sweep_previous_boots()
        old.reserve(address_range(), "c", "eth0", "/nonexistent")
    with AddressStore(directory, boot_id="").locked() as unknown:
        assert unknown.sweep_previous_boots() == []
        assert len(unknown.reservations()) == 1


def test_real_boot_id_is_read() -> None:
    boot_id = AddressStore("/nonexistent").boot_id
    assert boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_long_container_id(store: AddressStore) -> None:
    """Container IDs have no length limit in the spec; the store must not turn one into an
    over-long file name, nor leave a half-made reservation when it cannot write one."""
    rng = address_range()
    cid = "c" * 300
    r = reserve(store, rng, cid)
    with store.locked():
        assert store.find(cid, "eth0") == r
        assert store.find("c" * 299, "eth0") is None
        assert store.release(cid, "eth0") == [r]
        assert store.reservations() == []


@pytest.mark.parametrize("call", ["rename", "link"])
def test_a_failed_owner_or_address_name_leaves_nothing(
    store: AddressStore, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """If the owner name (rename) or the address name (link) cannot be made (a full directory
    block, a file system at its link limit), neither name nor the temporary file stays: else
    the address leaks, or the next DEL finds an owner of an address that is not there."""

    def refused(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, call, refused)
    with pytest.raises(OSError), store.locked():
        store.reserve(address_range(), "c", "eth0", "")
    monkeypatch.undo()
    with store.locked():
        assert store.reservations() == []
        assert store.find("c", "eth0") is None
    assert not {n for n in os.listdir(store.directory) if n.startswith(("owner-", ".", "10."))}
    assert str(reserve(store, address_range(), "c").address) == "10.1.0.2"


def _store_of_an_earlier_version(store: AddressStore, cid: str, address: str) -> None:
    """What versions before the owner became a second name wrote: an address file without the
    address in it, and the owner a symlink to it."""
    os.makedirs(store.directory, exist_ok=True)
    record = {"containerID": cid, "ifname": "eth0", "netns": "", "bootID": "boot-1"}
    Path(store.directory, address).write_text(json.dumps(record))
    os.symlink(address, os.path.join(store.directory, f"owner-{cid}@eth0"))


def test_a_store_of_an_earlier_version_is_found_kept_and_released(store: AddressStore) -> None:
    _store_of_an_earlier_version(store, "old", "10.1.0.2")
    with store.locked():
        found = store.find("old", "eth0")
        assert found is not None and str(found.address) == "10.1.0.2"
        assert store.release_where(lambda r: False) == []  # GC's debris pass keeps its owner
        assert os.path.islink(os.path.join(store.directory, "owner-old@eth0"))
    new = reserve(store, address_range(), "new")
    assert str(new.address) == "10.1.0.3"
    with store.locked():
        assert [str(r.address) for r in store.release("old", "eth0")] == ["10.1.0.2"]
        assert store.find("new", "eth0") == new
    assert not Path(store.directory, "owner-old@eth0").exists()
    assert not Path(store.directory, "10.1.0.2").exists()


def test_an_owner_left_by_an_interrupted_release_never_claims_the_address_again(
    store: AddressStore,
) -> None:
    """A release killed between the address file and the owner leaves the owner; once another
    pod holds that address, the owner's content still names it, but it is no longer that
    file's second name: the old attachment does not find it, nor does releasing it free it."""
    rng = address_range("10.1.0.0/30")  # one address: 10.1.0.2
    reserve(store, rng, "gone")
    os.unlink(os.path.join(store.directory, "10.1.0.2"))  # the release, killed half-way
    taken = reserve(store, rng, "next")
    assert str(taken.address) == "10.1.0.2"
    with store.locked():
        assert store.find("gone", "eth0") is None
        assert store.release("gone", "eth0") == []
        assert store.find("next", "eth0") == taken
        store.release_where(lambda r: False)
    assert Path(store.directory, "10.1.0.2").exists()


def test_an_address_file_without_its_owner_is_found_by_the_owner_it_records(
    store: AddressStore,
) -> None:
    """An owner lost (removed by hand, or by the debris pass of an earlier version, which took
    only symlinks for owners): DEL still frees the address, and leaves other pods' alone."""
    reserve(store, address_range(), "lost")
    kept = reserve(store, address_range(), "kept")
    os.unlink(os.path.join(store.directory, "owner-lost@eth0"))
    with store.locked():
        assert store.find("lost", "eth0") is None
        assert [str(r.address) for r in store.release("lost", "eth0")] == ["10.1.0.2"]
        assert store.reservations() == [kept]


# -- several processes at once ---------------------------------------------------------------
def _reserve_many(directory: str, worker: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = AddressStore(directory, boot_id="b")
    rng = address_range("10.2.0.0/24")
    got = []
    for i in range(count):
        with store.locked():
            got.append(str(store.reserve(rng, f"w{worker}-{i}", "eth0", "").address))
    out.put(got)


def test_concurrent_reservations_from_several_processes(tmp_path: Path) -> None:
    directory = str(tmp_path / "net")
    workers, each = 6, 20
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    processes = [
        context.Process(target=_reserve_many, args=(directory, w, each, out))
        for w in range(workers)
    ]
    for p in processes:
        p.start()
    results = [out.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    addresses = [a for got in results for a in got]
    assert len(addresses) == workers * each
    assert len(set(addresses)) == workers * each, "two owners got the same address"
    store = AddressStore(directory, boot_id="b")
    with store.locked():
        owners = {(r.container_id, str(r.address)) for r in store.reservations()}
    assert len(owners) == workers * each
    assert {a for _, a in owners} == set(addresses)


def _churn(directory: str, worker: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Pods that start and stop, as a node's do: reserve, release every other one."""
    store = AddressStore(directory, boot_id="b")
    rng = address_range("10.3.0.0/24")
    kept = []
    for i in range(count):
        cid = f"w{worker}-{i}-" + "x" * (i % 7 * 9)  # reservations of different lengths
        with store.locked():
            reservation = store.reserve(rng, cid, "eth0", f"/run/netns/{cid}")
        if i % 2:
            with store.locked():
                assert store.release(cid, "eth0") == [reservation]
        else:
            kept.append((cid, str(reservation.address)))
    out.put(kept)


def _keep_spares(directory: str, stop: Any) -> None:
    """The agent after each ADD, as often as it can: a spare, made without the lock."""
    store = AddressStore(directory, boot_id="b")
    while not stop.is_set():
        store.keep_spare()


def test_spares_made_while_others_reserve_keep_every_reservation_whole(tmp_path: Path) -> None:
    """The spare is taken and rewritten under the lock, but made (and replaced by a release)
    around other processes' reservations: no reservation is ever written into another's file,
    nor emptied."""
    directory = str(tmp_path / "net")
    os.makedirs(directory)
    workers, each = 4, 40
    context = multiprocessing.get_context("fork")
    out, stop = context.Queue(), context.Event()
    maker = context.Process(target=_keep_spares, args=(directory, stop), daemon=True)
    processes = [
        context.Process(target=_churn, args=(directory, w, each, out), daemon=True)
        for w in range(workers)
    ]
    try:
        for p in [maker, *processes]:
            p.start()
        for p in processes:
            p.join(timeout=60)
    finally:
        stop.set()
        maker.join(timeout=10)
        for p in [maker, *processes]:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in [*processes, maker]] == [0] * (workers + 1)
    kept = {pair for _ in processes for pair in out.get(timeout=10)}
    store = AddressStore(directory, boot_id="b")
    with store.locked():
        found = {(r.container_id, str(r.address)) for r in store.reservations()}
        assert found == kept  # every kept pod holds its own address, and nothing else is held
        for cid, address in kept:
            owner = Path(directory, f"owner-{cid}@eth0")
            assert owner.stat().st_ino == Path(directory, address).stat().st_ino
            assert json.loads(owner.read_text())["containerID"] == cid
    assert Path(directory, SPARE_FILE).stat().st_nlink == 1


# -- dual-stack: an address of each family per attachment ----------------------------------------
def range6(cidr: str = "fd00:1::/125") -> AddressRange:
    from ipaddress import IPv6Network

    subnet = IPv6Network(cidr)
    return AddressRange(subnet, subnet[1], subnet[-1], subnet[1])


def test_each_family_has_its_own_owner_link_and_round_robin(store: AddressStore) -> None:
    from minicni.ipam.store import LAST_RESERVED6

    four, six = address_range(), range6()
    with store.locked():
        a4 = store.reserve(four, "c1", "eth0", "/n")
        a6 = store.reserve(six, "c1", "eth0", "/n")
        assert (str(a4.address), str(a6.address)) == ("10.1.0.2", "fd00:1::2")
        assert store.find("c1", "eth0") == a4 and store.find("c1", "eth0", 6) == a6
        assert store.find_all("c1", "eth0") == [a4, a6]
        assert store.reserve(six, "c1", "eth0", "/n") == a6  # the same owner, the same address
        store.release("c1", "eth0")
        b6 = store.reserve(six, "c2", "eth0", "/n")
    assert str(b6.address) == "fd00:1::3"  # IPv6's round robin goes on from fd00:1::2
    names = set(os.listdir(store.directory))
    assert {"fd00:1::3", "owner6-c2@eth0", LAST_RESERVED6} <= names
    assert Path(store.directory, LAST_RESERVED).read_text().strip() == "10.1.0.2"
    assert Path(store.directory, LAST_RESERVED6).read_text().strip() == "fd00:1::3"


def test_releasing_an_attachment_frees_both_families_and_sweeps_see_both(
    store: AddressStore,
) -> None:
    with store.locked():
        store.reserve(address_range(), "c1", "eth0", "/n")
        store.reserve(range6(), "c1", "eth0", "/n")
        keep = store.reserve(range6(), "c2", "eth0", "/n")
        released = store.release("c1", "eth0")
        assert [str(r.address) for r in released] == ["10.1.0.2", "fd00:1::2"]
        assert store.reservations() == [keep]
        gone = store.release_where(lambda r: r.container_id == "c2")
        assert gone == [keep] and store.find("c2", "eth0", 6) is None
    assert not [n for n in os.listdir(store.directory) if n.startswith("owner")]


def test_an_ipv6_range_fills_up_on_its_own(store: AddressStore) -> None:
    six = range6("fd00:1::/126")  # ::1 gateway, ::2 and ::3 for pods
    with store.locked():
        store.reserve(six, "c1", "eth0", "/n")
        store.reserve(six, "c2", "eth0", "/n")
        with pytest.raises(RangeFullError):
            store.reserve(six, "c3", "eth0", "/n")
        assert store.reserve(address_range(), "c3", "eth0", "/n")  # IPv4 still has room


def test_the_reboot_sweep_releases_both_families_of_a_pod_of_an_earlier_boot(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path / "net")
    before = AddressStore(directory, boot_id="boot-1")
    with before.locked():
        before.sweep_previous_boots()
        before.reserve(address_range(), "old", "eth0", "/run/netns/gone-with-the-boot")
        before.reserve(range6(), "old", "eth0", "/run/netns/gone-with-the-boot")
    after = AddressStore(directory, boot_id="boot-2")
    with after.locked():
        swept = after.sweep_previous_boots()
        assert sorted(str(r.address) for r in swept) == ["10.1.0.2", "fd00:1::2"]
        assert after.reservations() == []
    assert not [n for n in os.listdir(directory) if n.startswith("owner")]


def test_a_recorded_delete_is_pending_until_the_release(store: AddressStore) -> None:
    reserve(store, address_range(), "c1")
    with store.locked():
        store.mark_deleting("c1", "eth0")
        assert store.is_deleting("c1", "eth0") and not store.is_deleting("c1", "net1")
        assert store.pending_deletes() == [("c1", "eth0")]
        store.release("c1", "eth0")
        assert store.pending_deletes() == [] and not store.is_deleting("c1", "eth0")
        assert store.reservations() == []


def test_a_recorded_delete_is_its_reservations_second_name(store: AddressStore) -> None:
    """No new file to allocate on the DEL's answer: the record is a hard link to the
    reservation, which names the attachment; recording it again writes nothing through it."""
    reserve(store, address_range(), "c1")
    address = Path(store.directory, "10.1.0.2")
    before = address.read_bytes()
    with store.locked():
        store.mark_deleting("c1", "eth0")
        store.mark_deleting("c1", "eth0")
        record = Path(store.directory, "deleting-c1@eth0")
        assert record.stat().st_ino == address.stat().st_ino
        assert address.read_bytes() == before
        assert store.pending_deletes() == [("c1", "eth0")]
        store.release("c1", "eth0")
    assert not record.exists() and not address.exists()


def test_a_recorded_delete_without_a_reservation_is_a_file_of_its_own(
    store: AddressStore,
) -> None:
    with store.locked():
        store.mark_deleting("c9", "eth0")
        record = Path(store.directory, "deleting-c9@eth0")
        assert json.loads(record.read_text()) == {"containerID": "c9", "ifname": "eth0"}
        assert record.stat().st_nlink == 1
        assert store.pending_deletes() == [("c9", "eth0")]


def test_a_delete_recorded_twice_is_one_whole_record(store: AddressStore) -> None:
    """A DEL repeated before the first finished records it again; a record torn by a kill (or
    planted) is rewritten whole."""
    reserve(store, address_range(), "c1")
    with store.locked():
        store.mark_deleting("c1", "eth0")
        record = Path(store.directory, "deleting-c1@eth0")
        record.write_text('{"containerID": "c1", "ifname": "eth0", "torn and much longer')
        store.mark_deleting("c1", "eth0")
        assert json.loads(record.read_text()) == {"containerID": "c1", "ifname": "eth0"}
        assert store.pending_deletes() == [("c1", "eth0")]


def test_a_recorded_delete_of_a_long_container_id_is_named_by_its_digest(
    store: AddressStore,
) -> None:
    cid = "c" * 300
    with store.locked():
        store.mark_deleting(cid, "eth0")
        assert store.pending_deletes() == [(cid, "eth0")]
        (marker,) = [n for n in os.listdir(store.directory) if n.startswith("deleting-")]
        assert len(marker) < 255 and "sha256" in marker
        store.release(cid, "eth0")
        assert not store.is_deleting(cid, "eth0")


def test_an_unreadable_delete_record_names_nothing_and_goes(store: AddressStore) -> None:
    os.makedirs(store.directory)
    Path(store.directory, "deleting-x@eth0").write_text("{not json")
    with store.locked():
        assert store.pending_deletes() == []
    assert not Path(store.directory, "deleting-x@eth0").exists()
