"""The range pod addresses come from; the store hands them out, the network config defines it."""

from __future__ import annotations

from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

    Address = IPv4Address | IPv6Address
    Network = IPv4Network | IPv6Network


class AddressRange(Record):
    """Where pod addresses of one family come from: `first`..`last` inside `subnet`, never
    `gateway`. A dual-stack network has one range of each family."""

    __slots__ = ("first", "gateway", "last", "subnet")

    def __init__(self, subnet: Network, first: Address, last: Address, gateway: Address) -> None:
        self.subnet = subnet
        self.first = first
        self.last = last
        self.gateway = gateway

    @property
    def version(self) -> int:
        return self.subnet.version

    @property
    def size(self) -> int:
        first, last, gateway = int(self.first), int(self.last), int(self.gateway)
        return last - first + (0 if first <= gateway <= last else 1)
