"""sysctl through /proc/sys, read first so an unchanged value costs no write."""

from __future__ import annotations

import os

FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
"""The forwarding switch of each IP version."""


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(key: str) -> str:
    """The value of net.ipv4.ip_forward-style `key` in the caller's namespace. One read of the
    raw file: the agent checks forwarding before every ADD it serves, and a text-mode open()
    (three layers of io objects, an encoding lookup) cost it ~0.1 ms of the pod's wait."""
    fd = os.open(_path(key), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def ensure_sysctl(key: str, value: str) -> bool:
    """Set net.ipv4.ip_forward-style `key` to `value` in the caller's namespace; True if changed."""
    if read_sysctl(key) == value:
        return False
    with open(_path(key), "w") as f:
        f.write(value)
    return True
