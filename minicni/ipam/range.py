"""The range pod addresses come from; the store hands them out, the network config defines it."""

from __future__ import annotations

from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv4Network


class AddressRange(Record):
    """Where pod addresses come from: `first`..`last` inside `subnet`, never `gateway`."""

    __slots__ = ("first", "gateway", "last", "subnet")

    def __init__(
        self, subnet: IPv4Network, first: IPv4Address, last: IPv4Address, gateway: IPv4Address
    ) -> None:
        self.subnet = subnet
        self.first = first
        self.last = last
        self.gateway = gateway

    @property
    def size(self) -> int:
        return (
            int(self.last) - int(self.first) + (0 if self.first <= self.gateway <= self.last else 1)
        )
