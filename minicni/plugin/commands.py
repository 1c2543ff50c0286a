"""The bridge plugin: ADD, DEL, CHECK and GC, composing the store and the kernel layer (STATUS,
which needs no kernel, is in `status`).

ADD is a transaction: each step that changes something registers its undo on an ExitStack, and any
failure unwinds them all before the error is returned, so a failed ADD leaves no reservation and
no link behind.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from minicni.cni import errors
from minicni.cni.errors import CniError
from minicni.cni.skel import Request
from minicni.cni.version import normalize_result
from minicni.ipam.store import AddressStore, RangeFullError, Reservation
from minicni.net import addresses, links, netns, routes
from minicni.net.rtnl import Rtnl
from minicni.net.sysctl import ensure_sysctl
from minicni.net.wire import NetlinkError
from minicni.plugin.config import NetConf, parse_netconf
from minicni.plugin.result import add_result

log = logging.getLogger("minicni")


@contextmanager
def step(what: str) -> Iterator[None]:
    """Report a kernel or file-system failure as a CNI error that says which step failed."""
    try:
        yield
    except NetlinkError as exc:
        raise CniError(errors.NETLINK_FAILURE, f"{what} failed", str(exc)) from exc
    except OSError as exc:
        raise CniError(errors.IO_FAILURE, f"{what} failed", str(exc)) from exc


def open_netlink(netns_path: str | None = None) -> Rtnl:
    if netns_path is None:
        return Rtnl()
    with netns.enter(netns_path):
        return Rtnl()


def require_netns(path: str) -> None:
    """CNI_NETNS names a network namespace other than the plugin's own; checked without ever
    blocking (a FIFO) or opening anything else."""
    try:
        fd = netns.open_netns(path)
    except (FileNotFoundError, NotADirectoryError):
        raise CniError(
            errors.UNKNOWN_CONTAINER, "network namespace does not exist", repr(path)
        ) from None
    except netns.NotNetworkNamespace as exc:
        raise CniError(
            errors.INVALID_ENVIRONMENT, f"CNI_NETNS {exc.strerror}", repr(path)
        ) from None
    except OSError as exc:
        raise CniError(
            errors.INVALID_ENVIRONMENT, f"CNI_NETNS cannot be opened: {exc.strerror}", repr(path)
        ) from None
    try:
        ours = os.stat(netns.current_netns_path())
        theirs = os.fstat(fd)
    finally:
        os.close(fd)
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        raise CniError(8, "CNI_NETNS is the plugin's own network namespace", repr(path))


def _open_netns_quietly(path: str) -> int | None:
    """For DEL and GC, which go on without the pod's namespace."""
    if not path:
        return None
    try:
        return netns.open_netns(path)
    except OSError:
        return None


def _store(conf: NetConf) -> AddressStore:
    return AddressStore(conf.store_dir)


# -- ADD ------------------------------------------------------------------------------------------
def add(request: Request) -> dict[str, Any]:
    conf = parse_netconf(request.config)
    require_netns(request.netns)
    with ExitStack() as stack:
        with step("opening netlink sockets"):
            host = stack.enter_context(open_netlink())
            pod = stack.enter_context(open_netlink(request.netns))
        with step("looking up the pod interface"):
            if links.find_link(pod, request.ifname) is not None:
                raise CniError(
                    errors.INTERFACE_EXISTS,
                    f"interface {request.ifname} already exists in the container",
                    request.netns,
                )
        undo = stack.enter_context(ExitStack())
        reservation = _reserve(conf, request)
        undo.callback(_release, conf, request)
        bridge = _ensure_bridge(host, conf)
        host_name = links.host_veth_name(request.container_id, request.ifname)
        alias = links.attachment_alias(request.container_id, request.ifname)
        with step("creating the veth pair"):
            mtu = conf.mtu or links.default_route_mtu(host)
            _create_veth_pair(host, request, host_name, alias, mtu, bridge.index)
        undo.callback(links.delete_link, host, host_name)
        with step("attaching the host veth to the bridge"):
            links.set_alias(host, host_name, alias)
            host_end = _must_find(host, host_name)
            if conf.hairpin:
                links.set_hairpin(host, host_end.index)
        with step("configuring the pod interface"):
            pod_end = _must_find(pod, request.ifname)
            links.configure_pod_interface(
                pod,
                pod_end.index,
                str(reservation.address),
                conf.range.subnet.prefixlen,
                str(conf.range.gateway) if conf.is_default_gateway else None,
                alias,
            )
        undo.pop_all()  # success: keep everything
        log.info(
            "ADD %s/%s: %s on %s",
            request.container_id,
            request.ifname,
            reservation.address,
            host_name,
        )
        return add_result(conf, request, reservation, bridge, host_end, pod_end)
    raise AssertionError("unreachable")


def _reserve(conf: NetConf, request: Request) -> Reservation:
    with step(f"reserving an address in {conf.store_dir}"), _store(conf).locked() as store:
        for stale in store.sweep_previous_boots():
            log.info(
                "released %s of %s: reserved before this boot", stale.address, stale.container_id
            )
        try:
            return store.reserve(conf.range, request.container_id, request.ifname, request.netns)
        except RangeFullError as exc:
            raise CniError(
                errors.ADDRESS_RANGE_FULL, "no address left for the pod", str(exc)
            ) from None


def _create_veth_pair(
    host: Rtnl, request: Request, host_name: str, alias: str, mtu: int, bridge_index: int
) -> None:
    """Create the pair; a link already holding the host name is replaced only if minicni made
    it for this very attachment (an ADD killed half-way, a sandbox re-created under the same
    container ID). Any other link is left alone, and ADD fails with code 104."""
    pod_ns = netns.open_netns(request.netns)
    try:
        try:
            links.create_veth_pair(host, host_name, request.ifname, pod_ns, mtu, bridge_index)
            return
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
        links.create_veth_pair(host, host_name, request.ifname, pod_ns, mtu, bridge_index)
    finally:
        os.close(pod_ns)


def _delete_host_veth(host: Rtnl, container_id: str, ifname: str, netns_path: str) -> bool:
    """Delete the attachment's host veth if minicni made it; a foreign link is left alone."""
    name = links.host_veth_name(container_id, ifname)
    link = links.find_link(host, name)
    if link is None:
        return False
    pod_ns = _open_netns_quietly(netns_path)
    try:
        alias = links.attachment_alias(container_id, ifname)
        ours = links.is_attachment_veth(host, link, alias, pod_ns)
    finally:
        if pod_ns is not None:
            os.close(pod_ns)
    if not ours:
        log.warning(
            "leaving %s alone: a %s link minicni did not make for %s/%s (alias %r)",
            name,
            link.kind or "plain",
            container_id,
            ifname,
            link.alias,
        )
        return False
    return links.delete_link(host, name)


def _release(conf: NetConf, request: Request) -> Reservation | None:
    with _store(conf).locked() as store:
        return store.release(request.container_id, request.ifname)


def _ensure_bridge(host: Rtnl, conf: NetConf) -> links.Link:
    with step(f"setting up bridge {conf.bridge}"):
        bridge = links.ensure_bridge(host, conf.bridge)
        if conf.is_default_gateway:
            changes = addresses.ensure_address(
                host, bridge.index, str(conf.range.gateway), conf.range.subnet.prefixlen
            )
            if changes.removed:
                log.warning("removed stale addresses %s from %s", changes.removed, conf.bridge)
    with step("enabling IPv4 forwarding"):
        ensure_sysctl("net.ipv4.ip_forward", "1")
    return bridge


def _must_find(rtnl: Rtnl, name: str) -> links.Link:
    link = links.find_link(rtnl, name)
    if link is None:
        raise NetlinkError(19, f"{name} vanished")
    return link


# -- DEL ------------------------------------------------------------------------------------------
def delete(request: Request) -> None:
    """Best effort and repeatable: links first (so an address is never reused while still on a
    live interface), then the reservation, even when the netns is long gone."""
    conf = parse_netconf(request.config)
    host_name = links.host_veth_name(request.container_id, request.ifname)
    with step(f"deleting {host_name}"), open_netlink() as host:
        removed = _delete_host_veth(host, request.container_id, request.ifname, request.netns)
    if not removed and request.netns:
        _delete_pod_end(request)
    with step("releasing the address"):
        released = _release(conf, request)
    log.info(
        "DEL %s/%s: released %s",
        request.container_id,
        request.ifname,
        released.address if released else "nothing",
    )


def _delete_pod_end(request: Request) -> None:
    """Remove a pod-side veth whose host end is gone or was moved away, if it carries this
    attachment's mark: the name CNI_IFNAME alone does not make a link minicni's."""
    try:
        pod = open_netlink(request.netns)
    except OSError as exc:
        # Gone, or an empty file left where a runtime had mounted it: its links went with it.
        log.info("DEL %s: netns %s is gone (%s)", request.container_id, request.netns, exc)
        return
    with step(f"deleting {request.ifname} in the container"), pod:
        link = links.find_link(pod, request.ifname)
        alias = links.attachment_alias(request.container_id, request.ifname)
        if link is not None and link.kind == "veth" and link.alias == alias:
            links.delete_link(pod, request.ifname)


# -- CHECK ----------------------------------------------------------------------------------------
def check(request: Request) -> None:
    conf = parse_netconf(request.config)
    if conf.prev_result is None:
        raise CniError(
            errors.INVALID_NETWORK_CONFIG, "invalid network config: CHECK needs prevResult"
        )
    prev = normalize_result(dict(conf.prev_result))
    require_netns(request.netns)
    with step("reading the container's interfaces"), open_netlink(request.netns) as pod:
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
        reservation = store.find(request.container_id, request.ifname)
    if reservation is None:
        _check_failed(f"no address is reserved for {request.container_id}/{request.ifname}")
    assert reservation is not None
    if not any(ip["address"].split("/")[0] == str(reservation.address) for ip in expected_ips):
        _check_failed(f"the reserved address {reservation.address} is not in prevResult")
    host_name = links.host_veth_name(request.container_id, request.ifname)
    with step("reading the host veth"), open_netlink() as host:
        host_end = links.find_link(host, host_name)
        bridge = links.find_link(host, conf.bridge)
    if host_end is None or bridge is None or host_end.master != bridge.index:
        _check_failed(f"host veth {host_name} is missing or not attached to {conf.bridge}")


def _check_failed(msg: str) -> None:
    raise CniError(errors.CHECK_FAILED, msg)


# -- GC -------------------------------------------------------------------------------------------
def gc(request: Request) -> None:
    conf = parse_netconf(request.config)
    valid = _valid_attachments(request.config)
    with step("releasing stale reservations"), _store(conf).locked() as store:
        stale = store.release_where(lambda r: (r.container_id, r.ifname) not in valid)
    if stale:
        with step("deleting stale host veths"), open_netlink() as host:
            for reservation in stale:
                if reservation.container_id:  # empty: an unreadable file, owner unknown
                    _delete_host_veth(
                        host, reservation.container_id, reservation.ifname, reservation.netns
                    )
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
