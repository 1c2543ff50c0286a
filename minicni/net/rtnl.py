"""A small synchronous rtnetlink client: pyroute2's message classes over a plain netlink socket.

The plugin runs once per pod and sends about a dozen requests. pyroute2's `IPRoute` is built on
asyncio and costs ~100 ms of imports (asyncio, ssl, multiprocessing, ...) before the first
message; its message classes alone (`ifinfmsg`, `ifaddrmsg`, `rtmsg`) cost a third of that and
still do all the encoding and decoding. Long-running processes (the agent) keep using `IPRoute`.

Import this module with pyroute2's package __init__ skipped (see `minicni.plugin.main`), or it loads
every protocol pyroute2 has. A `Rtnl` opened inside `netns.enter(path)` stays bound to that
namespace.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from types import TracebackType
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request's header, not the whole request
NETLINK_EXT_ACK = 11  # errors carry the kernel's explanation ("Nexthop has invalid gateway")

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED = 0x100  # in an error: the echoed request was cut to its header
NLM_F_ACK_TLVS = 0x200  # in an error: extended-ack attributes follow the echoed request
NLMSGERR_ATTR_MSG = 1
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTM_GETNSID = 90

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # struct nlattr: length, type
# A dump arrives in datagrams of at most 32 KiB (the kernel caps them there); twice that leaves
# room for any single reply. A truncated datagram is reported, never parsed.
RECV_BUFFER = 65536
DUMP_ATTEMPTS = 3


class Socket(Protocol):
    """What `Rtnl` needs of a socket; tests pass a scripted one."""

    def send(self, data: bytes, /) -> int: ...
    def recvmsg(self, bufsize: int, /) -> tuple[bytes, list[Any], int, Any]: ...
    def close(self) -> None: ...


def open_route_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))  # the kernel picks our port id
    except OSError:
        sock.close()
        raise
    return sock


def encode_request(msg: Any, msg_type: int, flags: int, seq: int) -> bytes:
    """`msg` (a pyroute2 message with its fields and attrs set) as one netlink request."""
    msg.reset()  # encode() appends to the message's buffer: a resent message would double
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def netlink_error(data: bytes) -> NetlinkError | None:
    """None for an ack; else the error it reports, with the kernel's explanation when given.

    struct nlmsgerr is the error code and the request's header (with its payload unless capped),
    then the extended-ack attributes. pyroute2's `nlmsgerr` class looks for those right after
    the code, so it never finds the text: read them here.
    """
    _, _, flags, _, _ = HEADER.unpack_from(data)
    (code,) = struct.unpack_from("=i", data, HEADER.size)
    if code == 0:
        return None
    code = abs(code)
    offset = HEADER.size + 4
    request_length = HEADER.unpack_from(data, offset)[0] if len(data) >= offset + 16 else 0
    offset += HEADER.size if flags & NLM_F_CAPPED else (request_length + 3) & ~3
    text = ""
    while flags & NLM_F_ACK_TLVS and offset + ATTR.size <= len(data):
        length, attr_type = ATTR.unpack_from(data, offset)
        if length < ATTR.size:
            break
        if attr_type & 0x3FFF == NLMSGERR_ATTR_MSG:
            raw = data[offset + ATTR.size : offset + length]
            text = raw.split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return NetlinkError(code, f"{os.strerror(code)}: {text}" if text else None)


class Replies:
    """Parses the datagrams that answer one request: messages of `reply_class` until the ack
    (a plain request) or NLMSG_DONE (a dump). Pure, so captured buffers can be fed to it."""

    def __init__(self, reply_class: Any, seq: int) -> None:
        self.reply_class = reply_class
        self.seq = seq
        self.messages: list[Any] = []
        self.done = False
        self.interrupted = False  # the dumped table changed meanwhile: the dump may be torn

    def feed(self, data: bytes) -> None:
        offset = 0
        while offset + HEADER.size <= len(data) and not self.done:
            length, msg_type, flags, seq, _ = HEADER.unpack_from(data, offset)
            if length < HEADER.size or offset + length > len(data):
                raise NetlinkError(errno.EPROTO, f"malformed netlink message at {offset}")
            chunk = data[offset : offset + length]
            offset += (length + 3) & ~3
            if seq != self.seq:  # not ours (nothing else should arrive; be safe)
                continue
            self.interrupted |= bool(flags & NLM_F_DUMP_INTR)
            if msg_type == NLMSG_ERROR:
                error = netlink_error(chunk)
                if error is not None:
                    raise error
                self.done = True
            elif msg_type == NLMSG_DONE:
                # A dump that failed half-way ends with its error code here.
                code = struct.unpack_from("=i", chunk, HEADER.size)[0] if length >= 20 else 0
                if code:
                    raise NetlinkError(abs(code))
                self.done = True
            else:
                message = self.reply_class(chunk)
                message.decode()
                self.messages.append(message)


class Rtnl:
    """One rtnetlink socket. `request` sends one message and waits for its ack; `dump` reads a
    whole table. Errors are raised as pyroute2's `NetlinkError(code, msg)`."""

    def __init__(self, sock: Socket | None = None) -> None:
        self._sock: Socket = sock if sock is not None else open_route_socket()
        self._seq = 0

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send `msg` with NLM_F_ACK; return the replies that came before the ack (for a GET,
        the object asked for). Raises the error the kernel acked with."""
        return self._exchange(msg, msg_type, flags | NLM_F_ACK).messages

    def dump(self, msg: Any, msg_type: int) -> list[Any]:
        """Every object of a table (links, addresses, routes) as the kernel dumps it."""
        for _ in range(DUMP_ATTEMPTS):
            replies = self._exchange(msg, msg_type, NLM_F_DUMP)
            if not replies.interrupted:
                return replies.messages
        raise NetlinkError(errno.EAGAIN, "netlink dump kept being interrupted by changes")

    def _exchange(self, msg: Any, msg_type: int, flags: int) -> Replies:
        self._seq += 1
        self._sock.send(encode_request(msg, msg_type, flags, self._seq))
        replies = Replies(type(msg), self._seq)
        while not replies.done:
            data, _, msg_flags, _ = self._sock.recvmsg(RECV_BUFFER)
            if msg_flags & socket.MSG_TRUNC:
                raise NetlinkError(errno.EMSGSIZE, "netlink reply larger than the receive buffer")
            replies.feed(data)
        return replies

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
