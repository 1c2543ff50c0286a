"""The range pod addresses come from; the store hands them out, the network config defines it."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class AddressRange:
    """Where pod addresses of one family come from: `first`..`last` inside `subnet`, never
    `gateway`. A dual-stack network has one range of each family."""

    subnet: Network
    first: Address
    last: Address
    gateway: Address

    @property
    def version(self) -> int:
        return self.subnet.version

    @property
    def size(self) -> int:
        first, last, gateway = int(self.first), int(self.last), int(self.gateway)
        return last - first + (0 if first <= gateway <= last else 1)
