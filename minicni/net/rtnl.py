"""The one rtnetlink client of minicni: requests, dumps and batches over a plain netlink socket.

A request is a message body built with `struct` (the bytes after the netlink header: see `codes`)
or a pyroute2 message with its fields and attributes set (see `minicni.net`); every reply is checked
the same way: its sequence number (anything else on the socket is skipped), truncation (a
datagram larger than the buffer is refused, never parsed), and, for dumps, the kernel's
"interrupted" flag (the table changed meanwhile: the dump is read again). Errors are raised, or
for a batch returned per request, as `NetlinkError`.

A `Rtnl` opened inside `netns.enter(path)` stays bound to that namespace. This module imports no
pyroute2 itself: the builders in `links`, `addresses`, `routes`... hand it their messages.
"""

from __future__ import annotations

import _socket as socket  # the socket module's enum tables cost the plugin ~2 ms per pod start
import contextlib
import errno

from minicni.net import wire
from minicni.net.wire import NetlinkError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType
    from typing import Any, Generic, Protocol, TypeVar

    T = TypeVar("T")
    Decoder = Callable[[bytes], T | None]
    """Turns one reply message (header included) into a value, or None to leave it out."""

    class Socket(Protocol):
        """What `Rtnl` needs of a socket; tests pass a scripted one."""

        def send(self, data: bytes, /) -> int: ...
        def recvmsg(self, bufsize: int, /) -> tuple[bytes, list[Any], int, Any]: ...
        def close(self) -> None: ...

else:  # what the class statements below need of typing, at run time

    class Generic:
        def __class_getitem__(cls, item: object) -> type:
            return cls

    T = None

# A dump arrives in datagrams of at most 32 KiB (the kernel caps them there); twice that leaves
# room for any single reply.
RECV_BUFFER = 65536
DUMP_ATTEMPTS = 3
BATCH_SIZE = 500
"""Requests per datagram in a batch: their acks (a few hundred bytes of buffer each) must fit
the socket's receive buffer before they are read."""


def open_route_socket(*, strict: bool = False, receive_buffer: int = 0) -> socket.socket:
    """A NETLINK_ROUTE socket with short acks that carry the kernel's explanation. `strict`: the
    kernel filters dumps by the request's header (a route dump by protocol and table); older
    kernels refuse it, and the decoders filter anyway. `receive_buffer`: room for a batch's acks
    (forced past net.core.rmem_max where the caller has CAP_NET_ADMIN)."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, wire.NETLINK_ROUTE
    )
    try:
        adopt_route_socket(sock, strict=strict, receive_buffer=receive_buffer)
    except OSError:
        sock.close()
        raise
    return sock


def adopt_route_socket(
    sock: socket.socket, *, strict: bool = False, receive_buffer: int = 0
) -> None:
    """Set up and bind a NETLINK_ROUTE socket made elsewhere, as `open_route_socket` does its own
    (the agent's CNI server gets one, made inside a pod's namespace, from the plugin's shim)."""
    sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_CAP_ACK, 1)
    sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_EXT_ACK, 1)
    if strict:
        with contextlib.suppress(OSError):  # before Linux 4.20: the decoders filter anyway
            sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_GET_STRICT_CHK, 1)
    if receive_buffer:
        try:
            sock.setsockopt(socket.SOL_SOCKET, wire.SO_RCVBUFFORCE, receive_buffer)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((0, 0))  # the kernel picks our port id


def encode_request(msg: Any, msg_type: int, flags: int, seq: int) -> bytes:
    """`msg` (a message body as bytes, or a pyroute2 message with its fields and attrs set) as
    one netlink request."""
    if isinstance(msg, bytes):
        header = wire.HEADER.pack(
            wire.HEADER.size + len(msg), msg_type, wire.NLM_F_REQUEST | flags, seq, 0
        )
        return header + msg
    msg.reset()  # encode() appends to the message's buffer: a resent message would double
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = wire.NLM_F_REQUEST | flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def decode_with(message_class: Any) -> Decoder[Any]:
    """A decoder giving each reply as a decoded pyroute2 message of `message_class`."""

    def decode(message: bytes) -> Any:
        decoded = message_class(message)
        decoded.decode()
        return decoded

    return decode


def _raw(message: bytes) -> bytes:
    return message


class Replies(Generic[T]):
    """Parses the datagrams that answer one request: decoded messages until the ack (a plain
    request) or NLMSG_DONE (a dump). Pure, so captured buffers can be fed to it."""

    def __init__(self, decode: Decoder[T], seq: int) -> None:
        self.decode = decode
        self.seq = seq
        self.messages: list[T] = []
        self.done = False
        self.interrupted = False  # the dumped table changed meanwhile: the dump may be torn

    def feed(self, data: bytes) -> None:
        for msg_type, flags, seq, message in wire.messages(data):
            if self.done:
                return
            if seq != self.seq:  # not ours (a stale ack of an abandoned batch): skip it
                continue
            self.interrupted |= bool(flags & wire.NLM_F_DUMP_INTR)
            if msg_type == wire.NLMSG_ERROR:
                error = wire.netlink_error(message)
                if error is not None:
                    raise error
                self.done = True
            elif msg_type == wire.NLMSG_DONE:
                error = wire.dump_error(message)
                if error is not None:
                    raise error
                self.done = True
            else:
                value = self.decode(message)
                if value is not None:
                    self.messages.append(value)


class Rtnl:
    """One rtnetlink socket. `request` sends one message and waits for its ack; `dump` reads a
    whole table; `batch` sends many change requests in few datagrams and reports each one's
    outcome."""

    def __init__(
        self, sock: Socket | None = None, *, strict: bool = False, receive_buffer: int = 0
    ) -> None:
        self._sock: Socket = (
            sock
            if sock is not None
            else open_route_socket(strict=strict, receive_buffer=receive_buffer)
        )
        self._seq = 0

    def request(
        self, msg: Any, msg_type: int, flags: int = 0, decode: Decoder[Any] | None = None
    ) -> list[Any]:
        """Send `msg` with NLM_F_ACK; return the replies that came before the ack (for a GET,
        the object asked for): what `decode` makes of each, by default the messages as bytes
        (header included) for a request given as bytes, else as messages of `msg`'s class.
        Raises the error the kernel acked with."""
        if decode is None:
            decode = _raw if isinstance(msg, bytes) else decode_with(type(msg))
        return self._exchange(msg, msg_type, flags | wire.NLM_F_ACK, decode).messages

    def dump(self, msg: Any, msg_type: int) -> list[Any]:
        """Every object of a table (links, addresses, routes...) as the kernel dumps it: as
        messages of `msg`'s class (as bytes, for a request given as bytes)."""
        return self.dump_decoded(
            msg, msg_type, _raw if isinstance(msg, bytes) else decode_with(type(msg))
        )

    def dump_decoded(self, msg: Any, msg_type: int, decoder: Decoder[T]) -> list[T]:
        """Every object of a table, as `decoder` makes it of each message (None leaves one
        out)."""
        for _ in range(DUMP_ATTEMPTS):
            replies = self._exchange(msg, msg_type, wire.NLM_F_DUMP, decoder)
            if not replies.interrupted:
                return replies.messages
        raise NetlinkError(errno.EAGAIN, "netlink dump kept being interrupted by changes")

    def batch(self, requests: Sequence[tuple[Any, int, int]]) -> list[NetlinkError | None]:
        """Send (message, type, flags) change requests, up to BATCH_SIZE per datagram, each
        with NLM_F_ACK; return each one's outcome in order: None (done) or its error. One round
        trip per datagram instead of per request: 1,000 routes in a few milliseconds."""
        outcomes: list[NetlinkError | None] = []
        for start in range(0, len(requests), BATCH_SIZE):
            outcomes += self._send_batch(requests[start : start + BATCH_SIZE])
        return outcomes

    def _send_batch(self, requests: Sequence[tuple[Any, int, int]]) -> list[NetlinkError | None]:
        pending: dict[int, int] = {}
        datagram = bytearray()
        for position, (msg, msg_type, flags) in enumerate(requests):
            seq = self._next_seq()
            pending[seq] = position
            datagram += encode_request(msg, msg_type, flags | wire.NLM_F_ACK, seq)
        outcomes: list[NetlinkError | None] = [None] * len(requests)
        self._sock.send(bytes(datagram))
        while pending:
            try:
                data = self._receive()
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                # Acks were dropped for want of buffer: the fate of those still pending is
                # unknown, so they are reported; a later pass sees what the kernel holds.
                lost = NetlinkError(errno.ENOBUFS, "acknowledgement lost: receive buffer full")
                for position in pending.values():
                    outcomes[position] = lost
                break
            for msg_type, _, seq, message in wire.messages(data):
                if msg_type == wire.NLMSG_ERROR and seq in pending:
                    outcomes[pending.pop(seq)] = wire.netlink_error(message)
        return outcomes

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _exchange(self, msg: Any, msg_type: int, flags: int, decode: Decoder[T]) -> Replies[T]:
        seq = self._next_seq()
        self._sock.send(encode_request(msg, msg_type, flags, seq))
        replies = Replies(decode, seq)
        while not replies.done:
            replies.feed(self._receive())
        return replies

    def _receive(self) -> bytes:
        data, _, msg_flags, _ = self._sock.recvmsg(RECV_BUFFER)
        if msg_flags & socket.MSG_TRUNC:
            raise NetlinkError(errno.EMSGSIZE, "netlink reply larger than the receive buffer")
        return data

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
