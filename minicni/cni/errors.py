"""The one error type of the plugin, carrying a CNI error code (SPEC section 5, "Error")."""

from __future__ import annotations

# Codes reserved by the specification.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51

# minicni's own codes (100+ is for plugins).
INTERFACE_EXISTS = 100
ADDRESS_RANGE_FULL = 101
CHECK_FAILED = 102
NETLINK_FAILURE = 103
# The host veth name derived for a pod is held by a link minicni did not make for it. Not a config
# error (7), not transient (11), not a kernel failure (103): an operator must free the name.
HOST_LINK_CONFLICT = 104
INTERNAL = 999


class CniError(Exception):
    """An error reported to the runtime as CNI error JSON; anything else becomes code 999."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, object]:
        return {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        }

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


def invalid_config(key: str, value: object, why: str) -> CniError:
    """Code 7 naming the config key and showing the value it had."""
    return CniError(INVALID_NETWORK_CONFIG, f"invalid network config: {key}: {why}", repr(value))
