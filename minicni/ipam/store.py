"""Address reservations on disk, one file per address, as host-local keeps them.

Layout of `<dataDir>/<network name>/`:
  `10.244.1.7`          the reservation: JSON with containerID, ifname, netns, bootID
  `owner-<cid>-<ifname>` a symlink to the address file, so DEL finds its address without a scan
  `last_reserved_ip.0`  where the round-robin search resumes (a freed address is not reused at once)
  `lock`                flock'ed for every change, so concurrent plugin invocations serialise
  `boot_id`             the boot the store was last used in; a new boot triggers the stale sweep
  `deleting-<cid>@<ifname>` a DEL answered before it finished (the agent's CNI server answers
                        once this is written, then deletes the links and releases the address):
                        JSON with containerID and ifname; removed by the release

Every change happens under the lock, so the two files of a reservation are consistent for any
reader holding it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from ipaddress import IPv4Address

from minicni import fastjson
from minicni.digest import sha256_hex
from minicni.fileutil import write_atomic
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from minicni.ipam.range import AddressRange

LAST_RESERVED = "last_reserved_ip.0"
BOOT_ID_FILE = "boot_id"
LOCK_FILE = "lock"
OWNER_PREFIX = "owner-"
DELETING_PREFIX = "deleting-"
SYSTEM_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_NAME_MAX = 255  # bytes in one file name (Linux NAME_MAX)


class RangeFullError(Exception):
    """No free address is left in the range."""


class Reservation(Record):
    __slots__ = ("address", "boot_id", "container_id", "ifname", "netns")

    def __init__(
        self,
        address: IPv4Address,
        container_id: str,
        ifname: str,
        netns: str = "",
        boot_id: str = "",
    ) -> None:
        self.address = address
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.boot_id = boot_id


def current_boot_id() -> str:
    try:
        with open(SYSTEM_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


class AddressStore:
    def __init__(self, directory: str, boot_id: str | None = None) -> None:
        self.directory = directory
        self.boot_id = current_boot_id() if boot_id is None else boot_id

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[AddressStore]:
        """Hold the store's exclusive lock (blocking) for the body."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        fd = os.open(self._path(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)  # closing releases the flock

    # -- queries (call with the lock held) --------------------------------------------------
    def find(self, container_id: str, ifname: str) -> Reservation | None:
        try:
            target = os.readlink(self._path(_owner_name(container_id, ifname)))
        except FileNotFoundError:
            return None
        reservation = self._read(target)
        if reservation is None or (reservation.container_id, reservation.ifname) != (
            container_id,
            ifname,
        ):
            return None
        return reservation

    def reservations(self) -> list[Reservation]:
        found = []
        for entry in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if _is_address(entry):
                reservation = self._read(entry)
                if reservation is not None:
                    found.append(reservation)
        return found

    # -- changes (call with the lock held) --------------------------------------------------
    def reserve(
        self, address_range: AddressRange, container_id: str, ifname: str, netns: str
    ) -> Reservation:
        """Reserve the next free address after the last one handed out (round robin)."""
        existing = self.find(container_id, ifname)
        if existing is not None:
            return existing
        for address in _round_robin(address_range, self._last_reserved(address_range)):
            reservation = Reservation(address, container_id, ifname, netns, self.boot_id)
            if self._create_exclusive(reservation):
                try:
                    self._link_owner(reservation)
                except BaseException:
                    _unlink_quietly(self._path(str(address)))  # no half-made reservation
                    raise
                write_atomic(self._path(LAST_RESERVED), str(address).encode(), durable=False)
                return reservation
        raise RangeFullError(
            f"no free address in {address_range.first}-{address_range.last} "
            f"({address_range.size} addresses, all reserved)"
        )

    def release(self, container_id: str, ifname: str) -> Reservation | None:
        """Free the attachment's address; this also ends a DEL recorded by `mark_deleting`."""
        reservation = self.find(container_id, ifname)
        _unlink_quietly(self._path(_owner_name(container_id, ifname)))
        if reservation is not None:
            _unlink_quietly(self._path(str(reservation.address)))
        _unlink_quietly(self._path(_deleting_name(container_id, ifname)))
        return reservation

    # -- DELs answered before they finished ----------------------------------------------------
    def mark_deleting(self, container_id: str, ifname: str) -> None:
        """Record that the attachment's DEL was answered and must be finished (lock held).

        Written, not fsynced: it must outlive the process that answered (a kill -9 leaves it
        in the page cache), not the node: after a crash the links are gone with the boot and the
        reservation goes with the sweep of `sweep_previous_boots`.
        """
        body = fastjson.dumps({"containerID": container_id, "ifname": ifname}).encode()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path(_deleting_name(container_id, ifname)), flags, 0o600)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)

    def is_deleting(self, container_id: str, ifname: str) -> bool:
        """Whether a recorded DEL of the attachment is unfinished (one lstat; no lock needed)."""
        return os.path.lexists(self._path(_deleting_name(container_id, ifname)))

    def pending_deletes(self) -> list[tuple[str, str]]:
        """(container ID, ifname) of every recorded DEL not finished yet."""
        pending = []
        for entry in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if not entry.startswith(DELETING_PREFIX):
                continue
            try:
                with open(self._path(entry), "rb") as f:
                    data = fastjson.loads(f.read(4096))
                pending.append((str(data["containerID"]), str(data["ifname"])))
            except (OSError, ValueError, KeyError, TypeError):
                _unlink_quietly(self._path(entry))  # unreadable: it can name no attachment
        return pending

    def release_where(self, stale: Callable[[Reservation], bool]) -> list[Reservation]:
        """Release every reservation for which `stale` is true."""
        released = [r for r in self.reservations() if stale(r)]
        for reservation in released:
            self.release(reservation.container_id, reservation.ifname)
            _unlink_quietly(self._path(str(reservation.address)))
        return released

    def sweep_previous_boots(self) -> list[Reservation]:
        """After a reboot, release what pods of an earlier boot left behind.

        A reservation survives only if it was made in this boot or its netns still exists (a
        runtime may keep bind-mounted namespaces on persistent storage). Cheap when nothing
        changed: one small file read.
        """
        if not self.boot_id or _read_text(self._path(BOOT_ID_FILE)) == self.boot_id:
            return []
        released = self.release_where(
            lambda r: r.boot_id != self.boot_id and not (r.netns and os.path.exists(r.netns))
        )
        write_atomic(self._path(BOOT_ID_FILE), self.boot_id.encode(), durable=False)
        return released

    # -- files -------------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self, name: str) -> Reservation | None:
        try:
            with open(self._path(os.path.basename(name))) as f:
                data = fastjson.loads(f.read())
            return Reservation(
                address=IPv4Address(os.path.basename(name)),
                container_id=str(data["containerID"]),
                ifname=str(data["ifname"]),
                netns=str(data.get("netns", "")),
                boot_id=str(data.get("bootID", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _create_exclusive(self, reservation: Reservation) -> bool:
        body = fastjson.dumps(
            {
                "containerID": reservation.container_id,
                "ifname": reservation.ifname,
                "netns": reservation.netns,
                "bootID": reservation.boot_id,
            }
        )
        try:
            fd = os.open(
                self._path(str(reservation.address)),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o644,
            )
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return True

    def _link_owner(self, reservation: Reservation) -> None:
        link = self._path(_owner_name(reservation.container_id, reservation.ifname))
        _unlink_quietly(link)
        os.symlink(str(reservation.address), link)

    def _last_reserved(self, address_range: AddressRange) -> IPv4Address | None:
        try:
            last = IPv4Address(_read_text(self._path(LAST_RESERVED)))
        except ValueError:
            return None
        return last if address_range.first <= last <= address_range.last else None


def _round_robin(address_range: AddressRange, last: IPv4Address | None) -> Iterator[IPv4Address]:
    first, end = int(address_range.first), int(address_range.last)
    start = first if last is None else int(last) + 1
    count = end - first + 1
    for step in range(count):
        candidate = IPv4Address(first + (start - first + step) % count)
        if candidate != address_range.gateway:
            yield candidate


def _owner_name(container_id: str, ifname: str) -> str:
    return _attachment_file(OWNER_PREFIX, container_id, ifname)


def _deleting_name(container_id: str, ifname: str) -> str:
    return _attachment_file(DELETING_PREFIX, container_id, ifname)


def _attachment_file(prefix: str, container_id: str, ifname: str) -> str:
    # Both parts are validated (no "/"), and container IDs never contain "@".
    name = f"{prefix}{container_id}@{ifname}"
    if len(name.encode()) <= _NAME_MAX:
        return name
    # The spec puts no limit on container IDs, the file system does. `find` compares the owner
    # recorded in the address file, so even a digest collision could not hand over a reservation.
    return f"{prefix}sha256-{sha256_hex(name.encode())}"


def _is_address(name: str) -> bool:
    try:
        IPv4Address(name)
    except ValueError:
        return False
    return True


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
