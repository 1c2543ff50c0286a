"""The retry delays of client-go's reflector: 0.8 s doubling to 30 s, jitter x[1, 2), reset after
2 minutes without a retry."""

import pytest

from minicni.agent.service.sources.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_doubles_from_0_8_to_a_30_second_cap_without_jitter() -> None:
    backoff = Backoff(clock=Clock(), rand=lambda: 0.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0])


def test_jitter_stretches_each_delay_up_to_twice() -> None:
    backoff = Backoff(clock=Clock(), rand=lambda: 0.999)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[0] == pytest.approx(0.8 * 1.999)
    assert max(delays) == pytest.approx(30.0 * 1.999)


def test_real_jitter_spreads_the_delays() -> None:
    backoff = Backoff(clock=Clock())
    first = {Backoff(clock=Clock()).next_delay() for _ in range(50)}
    assert len(first) > 40  # 5,000 agents do not retry in step
    assert all(0.8 <= delay < 1.6 for delay in first)
    assert 0.8 <= backoff.next_delay() < 1.6


def test_resets_after_two_quiet_minutes() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, rand=lambda: 0.0)
    for _ in range(5):
        backoff.next_delay()
    clock.now += 119
    assert backoff.next_delay() == pytest.approx(25.6)  # still backing off
    clock.now += 121
    assert backoff.next_delay() == pytest.approx(0.8)
