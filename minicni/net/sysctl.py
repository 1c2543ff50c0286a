"""sysctl through /proc/sys, read first so an unchanged value costs no write."""

from __future__ import annotations

FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
"""The forwarding switch of each IP version."""


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(key: str) -> str:
    """The value of net.ipv4.ip_forward-style `key` in the caller's namespace."""
    with open(_path(key)) as f:
        return f.read().strip()


def ensure_sysctl(key: str, value: str) -> bool:
    """Set net.ipv4.ip_forward-style `key` to `value` in the caller's namespace; True if changed."""
    if read_sysctl(key) == value:
        return False
    with open(_path(key), "w") as f:
        f.write(value)
    return True
