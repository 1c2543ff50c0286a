"""STATUS: is the plugin ready to serve ADD? Kept apart from the kernel-facing plugin because
containerd calls it every few seconds, and it needs no netlink (saves ~35 ms of imports a call)."""

from __future__ import annotations

import os

from minicni.cni import errors
from minicni.cni.errors import CniError
from minicni.cni.skel import Request
from minicni.ipam.store import AddressStore
from minicni.plugin.config import parse_netconf


def status(request: Request) -> None:
    """Ready to serve ADD: the config is valid, the store is usable and has a free address of
    each family."""
    try:
        conf = parse_netconf(request.config)
    except CniError as err:
        raise CniError(errors.NOT_AVAILABLE, "network config is invalid", str(err)) from None
    try:
        with AddressStore(conf.store_dir).locked() as store:
            if not os.access(store.directory, os.W_OK):
                raise PermissionError(f"{store.directory} is not writable")
            reserved = store.reservations()
    except OSError as exc:
        raise CniError(
            errors.NOT_AVAILABLE, f"address store {conf.store_dir} is unusable", str(exc)
        ) from None
    for address_range in conf.ranges:
        used = sum(1 for r in reserved if r.address.version == address_range.version)
        if used >= address_range.size:
            raise CniError(
                errors.NOT_AVAILABLE,
                "no free address left",
                f"{used} of {address_range.size} IPv{address_range.version} addresses reserved",
            )
