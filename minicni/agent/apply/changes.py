"""Send a list of kernel changes through the client's batch, and report the ones that failed.

One request per change costs a round trip each; a batch sends hundreds in one datagram and the
kernel acks each, so 1,000 routes take a few milliseconds. Each failure keeps the kernel's reason,
reported per item by the reconciler; the next pass retries what is still missing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from minicni.net.rtnl import Rtnl

Item = TypeVar("Item")
Request = tuple[Any, int, int]
"""(pyroute2 message, message type, flags), as `Rtnl.batch` takes them."""


@dataclass(frozen=True)
class Failure(Generic[Item]):
    item: Item
    reason: str


def send_changes(
    rtnl: Rtnl,
    items: Sequence[Item],
    build: Callable[[Item], Request],
    tolerate: Collection[int] = (),
) -> list[Failure[Item]]:
    """Send `build(item)` for every item in batches; return the items the kernel refused, with
    its reason. Errors whose code is in `tolerate` are what the change wanted anyway (a delete of
    something already gone)."""
    outcomes = rtnl.batch([build(item) for item in items])
    return [
        Failure(item, str(error))
        for item, error in zip(items, outcomes, strict=True)
        if error is not None and error.code not in tolerate
    ]
