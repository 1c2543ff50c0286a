"""The range pod addresses come from; the store hands them out, the network config defines it."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network


@dataclass(frozen=True)
class AddressRange:
    """Where pod addresses come from: `first`..`last` inside `subnet`, never `gateway`."""

    subnet: IPv4Network
    first: IPv4Address
    last: IPv4Address
    gateway: IPv4Address

    @property
    def size(self) -> int:
        return (
            int(self.last) - int(self.first) + (0 if self.first <= self.gateway <= self.last else 1)
        )
