"""The CNI server's pure parts: the env it decodes from a request, its per-attachment locks."""

from __future__ import annotations

import threading
import time

from minicni.agent.service.cni_server import AttachmentLocks, _decode_env


def test_only_cni_variables_are_taken_and_bytes_decode_as_os_environ_does() -> None:
    block = b"CNI_COMMAND=ADD\0CNI_IFNAME=eth\xff0\0PATH=/bin\0CNI_ARGS=a=b;c=d\0junk\0"
    env = _decode_env(block)
    assert env == {"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth\udcff0", "CNI_ARGS": "a=b;c=d"}


def test_requests_of_one_attachment_wait_for_each_other_and_others_do_not() -> None:
    locks = AttachmentLocks()
    order: list[str] = []
    first_in = threading.Event()

    def hold(key: tuple[str, str], name: str, seconds: float) -> None:
        with locks.held(key):
            order.append(f"{name} in")
            first_in.set()
            time.sleep(seconds)
            order.append(f"{name} out")

    first = threading.Thread(target=hold, args=(("c1", "eth0"), "first", 0.3))
    first.start()
    first_in.wait(5)
    second = threading.Thread(target=hold, args=(("c1", "eth0"), "second", 0))
    other = threading.Thread(target=hold, args=(("c2", "eth0"), "other", 0))
    second.start()
    other.start()
    for thread in (first, second, other):
        thread.join(5)
    assert order.index("first out") < order.index("second in")
    assert order.index("other out") < order.index("first out")
    assert len(locks) == 0  # dropped once nobody holds or waits


def test_commands_without_an_attachment_take_no_lock() -> None:
    locks = AttachmentLocks()
    with locks.held(None):
        assert len(locks) == 0
