"""sysctl through /proc/sys, read first so an unchanged value costs no write."""

from __future__ import annotations


def ensure_sysctl(key: str, value: str) -> bool:
    """Set net.ipv4.ip_forward-style `key` to `value` in the caller's namespace; True if changed."""
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        if f.read().strip() == value:
            return False
    with open(path, "w") as f:
        f.write(value)
    return True
