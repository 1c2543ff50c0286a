"""Exponential backoff with jitter, as client-go's reflector retries its lists and watches.

client-go (`tools/cache/reflector.go`): `wait.NewExponentialBackoffManager(800ms, 30s, 2min, 2.0,
1.0)` -- 0.8 s doubling to a cap of 30 s, each delay stretched by a random factor in [1, 2), and
back to 0.8 s once no backoff was asked for during 2 minutes. Its comment: retrying every second
made an unhealthy API server's load worse; this settles at 0.22 requests a second per client.
With 5,000 agents the jitter matters as much: it keeps them from retrying in step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

INITIAL_SECONDS = 0.8
CAP_SECONDS = 30.0
RESET_AFTER_SECONDS = 120.0
FACTOR = 2.0
JITTER = 1.0


class Backoff:
    def __init__(
        self,
        initial: float = INITIAL_SECONDS,
        cap: float = CAP_SECONDS,
        reset_after: float = RESET_AFTER_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._cap = cap
        self._reset_after = reset_after
        self._clock = clock
        self._rand = rand
        self._next = initial
        self._last: float | None = None

    def next_delay(self) -> float:
        """The delay before the next retry (call it once per retry)."""
        now = self._clock()
        if self._last is None or now - self._last > self._reset_after:
            self._next = self._initial
        self._last = now
        delay = self._next
        self._next = min(self._next * FACTOR, self._cap)
        return delay * (1.0 + JITTER * self._rand())
