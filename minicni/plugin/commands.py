"""The bridge plugin: ADD, DEL, CHECK and GC, composing the store and the kernel layer (STATUS,
which needs no kernel, is in `status`).

ADD is a transaction: each step that changes something registers its undo on an ExitStack, and any
failure unwinds them all before the error is returned, so a failed ADD leaves no reservation and
no link behind.

Every command takes a `CommandContext` (see `context`): how it reaches the pod's namespace, and
whether it runs in the plugin's own process or in the agent's CNI server.
"""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack, contextmanager

from minicni.cni import errors
from minicni.cni.errors import CniError
from minicni.cni.version import normalize_result
from minicni.ipam.store import AddressStore, RangeFullError
from minicni.log import log
from minicni.net import addresses, links, routes, wire
from minicni.net.rtnl import Rtnl
from minicni.net.sysctl import FORWARDING, ensure_sysctl
from minicni.net.wire import NetlinkError
from minicni.plugin.config import parse_netconf
from minicni.plugin.result import add_result

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

    from minicni.cni.skel import Request
    from minicni.ipam.range import AddressRange
    from minicni.ipam.store import Reservation
    from minicni.net.addresses import KernelAddress
    from minicni.plugin.config import NetConf
    from minicni.plugin.context import CommandContext, PodNetns


@contextmanager
def step(what: str) -> Iterator[None]:
    """Report a kernel or file-system failure as a CNI error that says which step failed."""
    try:
        yield
    except NetlinkError as exc:
        raise CniError(errors.NETLINK_FAILURE, f"{what} failed", str(exc)) from exc
    except OSError as exc:
        raise CniError(errors.IO_FAILURE, f"{what} failed", str(exc)) from exc


def open_host_netlink() -> Rtnl:
    """Strict: the kernel filters dumps by the request (the bridge's addresses, not the node's)."""
    return Rtnl(strict=True)


class HostView:
    """What an ADD reads of the node before it changes anything, read ahead by the agent's
    server while the shim makes the pod's socket (~0.3 ms of the ADD): the node's netlink socket,
    opened, the bridge, and the addresses it holds. Read only: the ADD checks and repairs the
    bridge from it as from its own reads. The server closes the socket when the request is
    done."""

    def __init__(
        self, host: Rtnl, bridge: links.Link | None, bridge_addresses: list[KernelAddress]
    ) -> None:
        self.host = host
        self.bridge = bridge
        self.bridge_addresses = bridge_addresses

    def close(self) -> None:
        self.host.close()


def look_ahead(conf: NetConf) -> HostView | None:
    """The node as an ADD of `conf` first reads it (see `HostView`); None if it cannot be read
    (the ADD then reads it itself, and reports why it could not)."""
    host = open_host_netlink()
    try:
        bridge = links.find_link(host, conf.bridge)
        present: list[KernelAddress] = []
        if bridge is not None and conf.is_default_gateway:
            for version in conf.versions:
                family = wire.AF_INET6 if version == 6 else wire.AF_INET
                present += addresses.dump_addresses(host, family, bridge.index)
    except (OSError, NetlinkError):
        host.close()
        return None
    return HostView(host, bridge, present)


def _pod_fd_quietly(pod_netns: PodNetns | None) -> int | None:
    """For DEL and GC, which go on without the pod's namespace."""
    if pod_netns is None or not pod_netns.path:
        return None
    try:
        return pod_netns.open_fd()
    except OSError:
        return None


def _store(conf: NetConf) -> AddressStore:
    return AddressStore(conf.store_dir)


# -- ADD ------------------------------------------------------------------------------------------
def add(request: Request, ctx: CommandContext) -> dict[str, Any]:
    conf = ctx.netconf or parse_netconf(request.config)
    pod_netns = ctx.pod(request.netns)
    pod_netns.require()
    _finish_recorded_delete(conf, request)
    with ExitStack() as stack:
        with step("opening netlink sockets"):
            host = stack.enter_context(ctx.ahead.host if ctx.ahead else open_host_netlink())
            pod = stack.enter_context(pod_netns.rtnl())
        with step("looking up the pod interface"):
            if links.find_link(pod, request.ifname) is not None:
                raise CniError(
                    errors.INTERFACE_EXISTS,
                    f"interface {request.ifname} already exists in the container",
                    request.netns,
                )
        undo = stack.enter_context(ExitStack())
        reservations = _reserve(conf, request)
        undo.callback(_release, conf, request)
        bridge = _ensure_bridge(host, conf, ctx)
        host_name = links.host_veth_name(request.container_id, request.ifname)
        alias = links.attachment_alias(request.container_id, request.ifname)
        with step("creating the veth pair"):
            mtu = conf.mtu or links.default_route_mtu(host)
            created = _create_veth_pair(host, request, pod_netns, host_name, mtu, bridge.index)
        undo.callback(links.delete_link, host, host_name)
        with step("attaching the host veth to the bridge"):
            host_end = created or _must_find(host, host_name)
            links.bring_up_port(host, host_end.index, conf.hairpin, alias)
        with step("configuring the pod interface"):
            # Not only for its index and MAC: without this lookup the pod end came up with an
            # IPv6 link-local address despite address generation off in the up request (Linux
            # 6.18; the lookup settles the new link's state first). The test of "no IPv6 chatter"
            # in netns_tests/test_kernel_paths.py fails without it.
            pod_end = _must_find(pod, request.ifname)
            links.configure_pod_interface(
                pod,
                pod_end.index,
                [(str(r.address), rng.subnet.prefixlen) for r, rng in reservations],
                [str(rng.gateway) for rng in conf.ranges] if conf.is_default_gateway else [],
                alias,
                ipv6=conf.has_ipv6,
            )
        undo.pop_all()  # success: keep everything
        if ctx.served:  # after the answer: the next ADD's reservation needs no new inode
            ctx.deferred.append(_store(conf).keep_spare)
        log.info(
            "ADD %s/%s: %s on %s",
            request.container_id,
            request.ifname,
            " ".join(str(r.address) for r, _ in reservations),
            host_name,
        )
        return add_result(conf, request, [r for r, _ in reservations], bridge, host_end, pod_end)
    raise AssertionError("unreachable")


def _reserve(conf: NetConf, request: Request) -> list[tuple[Reservation, AddressRange]]:
    """An address of each family, under one lock: if one range is full, the other's address is
    released before the error (the caller's undo releases both after a later failure)."""
    with step(f"reserving an address in {conf.store_dir}"), _store(conf).locked() as store:
        for stale in store.sweep_previous_boots():
            log.info(
                "released %s of %s: reserved before this boot", stale.address, stale.container_id
            )
        reserved = []
        try:
            for address_range in conf.ranges:
                reservation = store.reserve(
                    address_range, request.container_id, request.ifname, request.netns
                )
                reserved.append((reservation, address_range))
        except RangeFullError as exc:
            store.release(request.container_id, request.ifname)
            raise CniError(
                errors.ADDRESS_RANGE_FULL, "no address left for the pod", str(exc)
            ) from None
        except BaseException:
            store.release(request.container_id, request.ifname)
            raise
        return reserved


def _create_veth_pair(
    host: Rtnl,
    request: Request,
    pod_netns: PodNetns,
    host_name: str,
    mtu: int,
    bridge_index: int,
) -> links.Link | None:
    """Create the pair; a link already holding the host name is replaced only if minicni made
    it for this very attachment (an ADD killed half-way, a sandbox re-created under the same
    container ID). Any other link is left alone, and ADD fails with code 104. Returns the host
    end when the kernel announced it (see `links.create_veth_pair`)."""
    alias = links.attachment_alias(request.container_id, request.ifname)
    pod_ns = pod_netns.open_fd()
    try:
        try:
            return links.create_veth_pair(
                host, host_name, request.ifname, pod_ns, mtu, bridge_index
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        existing = links.find_link(host, host_name)
        if existing is None:  # the name taken was the pod end's, since the check at the start
            raise CniError(
                errors.INTERFACE_EXISTS,
                f"interface {request.ifname} already exists in the container",
                repr(request.netns),
            )
        if not links.is_attachment_veth(host, existing, alias, pod_ns):
            raise CniError(
                errors.HOST_LINK_CONFLICT,
                f"host interface {host_name} exists and was not made by minicni for this pod: "
                "left alone",
                f"a {existing.kind or 'plain'} link with alias {existing.alias!r}; "
                "remove or rename it, then retry",
            )
        log.info("replacing %s, left by an earlier ADD of this pod", host_name)
        links.delete_link(host, host_name)
        return links.create_veth_pair(host, host_name, request.ifname, pod_ns, mtu, bridge_index)
    finally:
        os.close(pod_ns)


def _delete_host_veth(
    host: Rtnl, container_id: str, ifname: str, pod_netns: PodNetns | None
) -> bool:
    """Delete the attachment's host veth if minicni made it; a foreign link is left alone."""
    name = links.host_veth_name(container_id, ifname)
    link = links.find_link(host, name)
    if link is None or not _is_ours(host, link, container_id, ifname, pod_netns):
        return False
    return links.delete_link(host, name)


def _is_ours(
    host: Rtnl, link: links.Link, container_id: str, ifname: str, pod_netns: PodNetns | None
) -> bool:
    """Whether minicni made `link` for this attachment (see `links.is_attachment_veth`); a link
    it did not make is logged, and left alone."""
    pod_ns = _pod_fd_quietly(pod_netns)
    try:
        alias = links.attachment_alias(container_id, ifname)
        ours = links.is_attachment_veth(host, link, alias, pod_ns)
    finally:
        if pod_ns is not None:
            os.close(pod_ns)
    if not ours:
        log.warning(
            "leaving %s alone: a %s link minicni did not make for %s/%s (alias %r)",
            link.name,
            link.kind or "plain",
            container_id,
            ifname,
            link.alias,
        )
    return ours


def _release(conf: NetConf, request: Request) -> list[Reservation]:
    return _release_attachment(conf, request.container_id, request.ifname)


def _release_attachment(conf: NetConf, container_id: str, ifname: str) -> list[Reservation]:
    with _store(conf).locked() as store:
        return store.release(container_id, ifname)


def _ensure_bridge(host: Rtnl, conf: NetConf, ctx: CommandContext) -> links.Link:
    """The bridge, holding the gateway of each family (an IPv6 one without duplicate address
    detection: pods use it at once), and forwarding on for each family (in-process; served, the
    agent's server checked it before it took the request)."""
    ahead = ctx.ahead
    with step(f"setting up bridge {conf.bridge}"):
        present = None  # the bridge's addresses, when read ahead: ensure_address dumps them
        if ahead and ahead.bridge and links.bridge_in_order(ahead.bridge):
            bridge, present = ahead.bridge, ahead.bridge_addresses
        else:
            bridge = links.ensure_bridge(host, conf.bridge)
        if conf.is_default_gateway:
            for address_range in conf.ranges:
                changes = addresses.ensure_address(
                    host,
                    bridge.index,
                    str(address_range.gateway),
                    address_range.subnet.prefixlen,
                    present,
                )
                if changes.removed:
                    log.warning("removed stale addresses %s from %s", changes.removed, conf.bridge)
    if ctx.writes_sysctls:
        for version in conf.versions:
            with step(f"enabling IPv{version} forwarding"):
                ensure_sysctl(FORWARDING[version], "1")
    return bridge


def _must_find(rtnl: Rtnl, name: str) -> links.Link:
    link = links.find_link(rtnl, name)
    if link is None:
        raise NetlinkError(19, f"{name} vanished")
    return link


# -- DEL ------------------------------------------------------------------------------------------
def delete(request: Request, ctx: CommandContext) -> None:
    """Best effort and repeatable: links first (so an address is never reused while still on a
    live interface), then the reservation, even when the netns is long gone.

    Served by the agent, the DEL is answered as soon as it is recorded in the store (a
    `deleting-` record): the kernel takes tens of milliseconds to unregister a veth (an RCU
    barrier), which the runtime need not wait for. The links and the address go after the answer
    (`ctx.deferred`), the address only once its link is gone. Until then the record stands, and
    whoever next meets the attachment finishes the DEL first (`_finish_recorded_delete`): the
    server's next request for it (which waits for the deferred work), an in-process ADD, CHECK
    or DEL, GC, or the agent at its next start.
    """
    conf = ctx.netconf or parse_netconf(request.config)
    pod_netns = ctx.pod(request.netns) if request.netns else None
    cid, ifname = request.container_id, request.ifname
    if not ctx.served:
        _delete_now(conf, cid, ifname, pod_netns)
        return
    with step(f"recording the DEL in {conf.store_dir}"), _store(conf).locked() as store:
        store.mark_deleting(cid, ifname)
    ctx.deferred.append(lambda: _finish_served_delete(conf, cid, ifname, pod_netns))


def _delete_now(conf: NetConf, container_id: str, ifname: str, pod_netns: PodNetns | None) -> None:
    host_name = links.host_veth_name(container_id, ifname)
    with step(f"deleting {host_name}"), open_host_netlink() as host:
        removed = _delete_host_veth(host, container_id, ifname, pod_netns)
    if not removed and pod_netns is not None:
        _delete_pod_end(pod_netns, container_id, ifname)
    with step("releasing the address"):
        released = _release_attachment(conf, container_id, ifname)
    _log_released(container_id, ifname, released)


def _finish_served_delete(
    conf: NetConf, container_id: str, ifname: str, pod_netns: PodNetns | None
) -> None:
    """The work of a served DEL, after its answer, done only while its record stands: whoever
    finished the DEL meanwhile (an in-process ADD, while the agent was refusing work) may already
    have made a new veth of the same name, and a new reservation, which must stay. The host veth
    is looked up under the store's lock, with the record standing (an ADD finishes the record
    before it makes its veth), and deleted by that index after (unregistering it takes the kernel
    tens of milliseconds, which no other pod's ADD should wait for)."""
    store = _store(conf)
    host_name = links.host_veth_name(container_id, ifname)
    with step(f"looking up {host_name}"), store.locked():
        if not store.is_deleting(container_id, ifname):
            return
        with open_host_netlink() as host:
            host_end = links.find_link(host, host_name)
            if host_end is not None and not _is_ours(
                host, host_end, container_id, ifname, pod_netns
            ):
                host_end = None  # a link minicni did not make: left alone (and logged)
    index = host_end.index if host_end is not None else None
    removed = False
    if index is not None:
        with step(f"deleting link {index}"), open_host_netlink() as host:
            removed = links.delete_link(host, index=index)
    if not removed and pod_netns is not None:
        _delete_pod_end(pod_netns, container_id, ifname)
    with step("releasing the address"), store.locked():
        if not store.is_deleting(container_id, ifname):
            return
        released = store.release(container_id, ifname)
    _log_released(container_id, ifname, released)


def _log_released(container_id: str, ifname: str, released: list[Reservation]) -> None:
    log.info(
        "DEL %s/%s: released %s",
        container_id,
        ifname,
        " ".join(str(r.address) for r in released) or "nothing",
    )


def _finish_recorded_delete(conf: NetConf, request: Request) -> None:
    """An earlier DEL of this attachment was answered but not finished (the agent was stopped
    meanwhile): finish it now, so it cannot later take what this command makes. The pod side is
    left alone: the namespace may be a new sandbox's. Cheap when there is none: one lstat."""
    store = _store(conf)
    if store.is_deleting(request.container_id, request.ifname):
        with step("finishing an earlier DEL"):
            _finish_recorded(store, request.container_id, request.ifname)


def _finish_recorded(store: AddressStore, container_id: str, ifname: str) -> bool:
    """Finish a recorded DEL, all of it under the store's lock: no ADD of the attachment can
    reserve and make its veth in between. False when it was finished meanwhile."""
    with store.locked():
        if not store.is_deleting(container_id, ifname):
            return False
        log.info("finishing the recorded DEL of %s/%s", container_id, ifname)
        with open_host_netlink() as host:
            _delete_host_veth(host, container_id, ifname, None)
        released = store.release(container_id, ifname)
    _log_released(container_id, ifname, released)
    return True


def finish_recorded_deletes(store_dir: str) -> list[str]:
    """Every DEL recorded in the store and not finished, finished now (by the agent at start-up,
    and by GC). Returns the attachments finished, as `container/ifname`."""
    store = AddressStore(store_dir)
    with store.locked():
        pending = store.pending_deletes()
    return [f"{cid}/{ifname}" for cid, ifname in pending if _finish_recorded(store, cid, ifname)]


def _delete_pod_end(pod_netns: PodNetns, container_id: str, ifname: str) -> None:
    """Remove a pod-side veth whose host end is gone or was moved away, if it carries this
    attachment's mark: the name CNI_IFNAME alone does not make a link minicni's."""
    if pod_netns.socketless:  # served DEL: reached from the node by the namespace's id
        alias = links.attachment_alias(container_id, ifname)
        with step(f"deleting {ifname} in the container"), open_host_netlink() as host:
            fd = pod_netns.open_fd()
            try:
                links.delete_marked_link_in(host, fd, ifname, alias)
            finally:
                os.close(fd)
        return
    try:
        pod = pod_netns.rtnl()
    except OSError as exc:
        # Gone, or an empty file left where a runtime had mounted it: its links went with it.
        log.info("DEL %s: netns %s is gone (%s)", container_id, pod_netns.path, exc)
        return
    with step(f"deleting {ifname} in the container"), pod:
        link = links.find_link(pod, ifname)
        alias = links.attachment_alias(container_id, ifname)
        if link is not None and link.kind == "veth" and link.alias == alias:
            links.delete_link(pod, ifname)


# -- CHECK ----------------------------------------------------------------------------------------
def check(request: Request, ctx: CommandContext) -> None:
    conf = ctx.netconf or parse_netconf(request.config)
    if conf.prev_result is None:
        raise CniError(
            errors.INVALID_NETWORK_CONFIG, "invalid network config: CHECK needs prevResult"
        )
    prev = normalize_result(dict(conf.prev_result))
    pod_netns = ctx.pod(request.netns)
    pod_netns.require()
    _finish_recorded_delete(conf, request)
    with step("reading the container's interfaces"), pod_netns.rtnl() as pod:
        pod_end = links.find_link(pod, request.ifname)
        if pod_end is None:
            _check_failed(f"interface {request.ifname} is missing in the container")
        assert pod_end is not None
        interfaces = prev.get("interfaces", [])
        for position, interface in enumerate(interfaces):
            if interface.get("sandbox") and interface.get("name") == request.ifname:
                if interface.get("mac") and interface["mac"] != pod_end.mac:
                    _check_failed(
                        f"{request.ifname} has MAC {pod_end.mac}, expected {interface['mac']}"
                    )
                pod_position = position
                break
        else:
            _check_failed(f"prevResult lists no sandbox interface named {request.ifname}")
        present = addresses.interface_addresses(pod, pod_end.index)
        expected_ips = [
            ip for ip in prev.get("ips", []) if ip.get("interface", pod_position) == pod_position
        ]
        for ip in expected_ips:
            if ip["address"] not in present:
                _check_failed(f"address {ip['address']} is missing on {request.ifname}")
        for route in prev.get("routes", []):
            if not routes.has_route(pod, route["dst"], route.get("gw")):
                _check_failed(
                    f"route {route['dst']} via {route.get('gw')} is missing in the container"
                )
    with step("reading the reservation"), _store(conf).locked() as store:
        reservations = store.find_all(request.container_id, request.ifname)
    reserved: dict[int, Reservation] = {r.address.version: r for r in reservations}
    for address_range in conf.ranges:
        family = f"IPv{address_range.version}"
        reservation = reserved.get(address_range.version)
        if reservation is None:
            _check_failed(
                f"no {family} address is reserved for {request.container_id}/{request.ifname}"
            )
        assert reservation is not None
        if not any(ip["address"].split("/")[0] == str(reservation.address) for ip in expected_ips):
            _check_failed(f"the reserved address {reservation.address} is not in prevResult")
    host_name = links.host_veth_name(request.container_id, request.ifname)
    with step("reading the host veth"), open_host_netlink() as host:
        host_end = links.find_link(host, host_name)
        bridge = links.find_link(host, conf.bridge)
    if host_end is None or bridge is None or host_end.master != bridge.index:
        _check_failed(f"host veth {host_name} is missing or not attached to {conf.bridge}")


def _check_failed(msg: str) -> None:
    raise CniError(errors.CHECK_FAILED, msg)


# -- GC -------------------------------------------------------------------------------------------
def gc(request: Request, ctx: CommandContext) -> None:
    conf = ctx.netconf or parse_netconf(request.config)
    valid = _valid_attachments(request.config)
    with step("finishing recorded DELs"):
        finish_recorded_deletes(conf.store_dir)
    with step("releasing stale reservations"), _store(conf).locked() as store:
        stale = store.release_where(lambda r: (r.container_id, r.ifname) not in valid)
    if stale:
        with step("deleting stale host veths"), open_host_netlink() as host:
            for reservation in stale:
                if reservation.container_id:  # empty: an unreadable file, owner unknown
                    pod_netns = ctx.pod(reservation.netns) if reservation.netns else None
                    _delete_host_veth(host, reservation.container_id, reservation.ifname, pod_netns)
    for reservation in stale:
        log.info(
            "GC released %s of %s/%s",
            reservation.address,
            reservation.container_id,
            reservation.ifname,
        )


def _valid_attachments(config: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(containerID, ifname) pairs the runtime still uses, from the key libcni injects."""
    key = "cni.dev/valid-attachments"
    if key not in config and "cni.dev/attachments" in config:
        key = "cni.dev/attachments"  # the name the 1.1.0 spec text used at first
    if key not in config:
        raise CniError(
            errors.INVALID_NETWORK_CONFIG,
            "invalid network config: GC needs cni.dev/valid-attachments",
            "a list of {containerID, ifname}",
        )
    # libcni marshals an empty Go slice as null: no attachment is valid any more.
    attachments = [] if config[key] is None else config[key]
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise CniError(
            errors.INVALID_NETWORK_CONFIG,
            f"invalid network config: {key}",
            "a list of {containerID, ifname}",
        )
    return {(str(a.get("containerID")), str(a.get("ifname"))) for a in attachments}
