"""Validators for the names the runtime hands the plugin. Container IDs, interface names and network
names end up in file names and in netlink requests, so only a safe shape gets through."""

from __future__ import annotations

import re

from minicni.cni.errors import INVALID_ENVIRONMENT, UNKNOWN_CONTAINER, CniError, invalid_config

_SAFE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
"""What libcni allows in a container ID and a network name."""
_IFNAME_MAX_BYTES = 15


def validate_container_id(container_id: str) -> None:
    """The container ID becomes part of file names: only a safe charset gets through."""
    if not container_id:
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if not _SAFE_NAME.fullmatch(container_id):
        raise CniError(INVALID_ENVIRONMENT, "invalid characters in containerID", container_id)


def validate_interface_name(ifname: str) -> None:
    if not ifname:
        raise CniError(INVALID_ENVIRONMENT, "interface name is empty")
    if len(ifname.encode()) > _IFNAME_MAX_BYTES:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"interface name is too long (max {_IFNAME_MAX_BYTES} bytes)",
            ifname,
        )
    if ifname in (".", ".."):
        raise CniError(INVALID_ENVIRONMENT, "interface name is . or ..", ifname)
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CniError(
            INVALID_ENVIRONMENT, "interface name contains / or : or whitespace characters", ifname
        )


def validate_network_name(name: object) -> str:
    """The network name becomes the address store's directory name (code 7 if unsafe)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise invalid_config("name", name, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name
