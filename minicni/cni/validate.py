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
_NAME_MAX = 255  # the network name is a directory name


def validate_container_id(container_id: str) -> None:
    """The container ID becomes part of file names: only a safe charset gets through."""
    if not container_id:
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if not _is_safe_name(container_id):
        raise CniError(INVALID_ENVIRONMENT, "invalid characters in containerID", repr(container_id))


def validate_interface_name(ifname: str) -> None:
    """The reference skeleton's rules, and what the kernel would rewrite: `%` makes a name a
    template (`eth%d` becomes eth0), a NUL ends it early."""
    if not ifname:
        raise CniError(INVALID_ENVIRONMENT, "interface name is empty")
    try:
        size = len(ifname.encode())
    except UnicodeEncodeError:
        raise CniError(
            INVALID_ENVIRONMENT, "interface name is not valid UTF-8", ascii(ifname)
        ) from None
    if size > _IFNAME_MAX_BYTES:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"interface name is too long (max {_IFNAME_MAX_BYTES} bytes)",
            repr(ifname),
        )
    if ifname in (".", ".."):
        raise CniError(INVALID_ENVIRONMENT, "interface name is . or ..", repr(ifname))
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CniError(
            INVALID_ENVIRONMENT,
            "interface name contains / or : or whitespace characters",
            repr(ifname),
        )
    if "%" in ifname:
        raise CniError(
            INVALID_ENVIRONMENT,
            "interface name contains %, which the kernel would replace with a number",
            repr(ifname),
        )
    if not ifname.isprintable():
        raise CniError(
            INVALID_ENVIRONMENT,
            "interface name contains a NUL or another non-printable character",
            repr(ifname),
        )


def validate_network_name(name: object) -> str:
    """The network name becomes the address store's directory name (code 7 if unsafe)."""
    if not isinstance(name, str) or not _is_safe_name(name) or len(name) > _NAME_MAX:
        raise invalid_config(
            "name", name, f"must match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,{_NAME_MAX - 1}}}"
        )
    return name
