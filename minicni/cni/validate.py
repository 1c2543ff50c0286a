"""Validators for the names the runtime hands the plugin. Container IDs, interface names and network
names end up in file names and in netlink requests, so only a safe shape gets through."""

from __future__ import annotations

from minicni.cni.errors import INVALID_ENVIRONMENT, UNKNOWN_CONTAINER, CniError, invalid_config

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_SAFE_CHARACTERS = _ALNUM | frozenset("_.-")


def _is_safe_name(name: str) -> bool:
    """What libcni allows in a container ID and a network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*
    (checked without re, which costs the plugin ~2 ms to import on every pod start)."""
    return bool(name) and name[0] in _ALNUM and all(char in _SAFE_CHARACTERS for char in name)


_IFNAME_MAX_BYTES = 15


def validate_container_id(container_id: str) -> None:
    """The container ID becomes part of file names: only a safe charset gets through."""
    if not container_id:
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if not _is_safe_name(container_id):
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
    if not isinstance(name, str) or not _is_safe_name(name):
        raise invalid_config("name", name, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name
