"""The CNI server's pure parts: the env it decodes from a request, its per-attachment locks, the
threads that serve its connections."""

from __future__ import annotations

import socket
import threading
import time

from minicni.agent.service.cni_server import AttachmentLocks, ConnectionThreads, _decode_env


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


def test_connection_threads_are_reused_and_end_when_stopped() -> None:
    """Each connection is handled; one after the other they reuse a waiting thread rather than
    start one each; at most `spare` wait, and stopping ends them."""
    served: list[tuple[threading.Thread, socket.socket]] = []  # the threads kept: ids get reused
    done = threading.Semaphore(0)
    release = threading.Event()

    def handle(conn: socket.socket) -> None:
        served.append((threading.current_thread(), conn))
        if len(served) > 20:
            release.wait(5)  # the burst below: all busy at once
        done.release()

    threads = ConnectionThreads(handle, spare=2)
    before = threading.active_count()
    pairs = [socket.socketpair() for _ in range(24)]
    for conn, _ in pairs[:20]:  # one after the other
        threads.run(conn)
        assert done.acquire(timeout=5)
    # A thread done with its connection may not be waiting yet when the next one comes: rarely.
    assert len({thread for thread, _ in served[:20]}) < 10
    for conn, _ in pairs[20:]:  # four at once: more threads, then back to two waiting
        threads.run(conn)
    release.set()
    for _ in range(4):
        assert done.acquire(timeout=5)
    assert sorted(conn.fileno() for _, conn in served) == sorted(c.fileno() for c, _ in pairs)
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before + 2
    threads.stop()
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
    for a, b in pairs:
        a.close()
        b.close()
