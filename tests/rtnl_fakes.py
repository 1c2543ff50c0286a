"""Kernel replies built by hand and a scripted socket, to drive `minicni.net.rtnl.Rtnl` (and the
helpers on top of it) without root."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from minicni.net import rtnl

NLM_F_MULTI = 0x2

# One datagram the socket returns, or a function of the request's sequence number making one.
Answer = bytes | Callable[[int], bytes] | tuple[bytes, int]


def header(length: int, msg_type: int, flags: int, seq: int) -> bytes:
    return rtnl.HEADER.pack(length, msg_type, flags, seq, 0)


def error_reply(seq: int, code: int) -> bytes:
    """An error (or, with code 0, an ack) as the kernel sends it with NETLINK_CAP_ACK."""
    echoed = header(16, rtnl.RTM_NEWLINK, 0, seq)
    return header(36, rtnl.NLMSG_ERROR, rtnl.NLM_F_CAPPED, seq) + struct.pack("=i", -code) + echoed


def ack(seq: int) -> bytes:
    return error_reply(seq, 0)


def fails(code: int) -> Callable[[int], bytes]:
    return lambda seq: error_reply(seq, code)


def done(seq: int, code: int = 0) -> bytes:
    return header(20, rtnl.NLMSG_DONE, NLM_F_MULTI, seq) + struct.pack("=i", -code)


def link_reply(
    seq: int, index: int, name: str, nl_flags: int = NLM_F_MULTI, **fields: Any
) -> bytes:
    """An RTM_NEWLINK as the kernel answers a GET or fills a dump; `fields` are ifinfmsg fields
    ("flags" of the link is `ifi_flags`) or attrs by their IFLA_ name."""
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_IFNAME", name)]
    for key, value in fields.items():
        if key.startswith("IFLA_"):
            msg["attrs"].append((key, value))
        else:
            msg[key] = value
    data = bytearray(rtnl.encode_request(msg, rtnl.RTM_NEWLINK, 0, seq))
    struct.pack_into("=H", data, 6, nl_flags)  # NLM_F_MULTI and friends, as the kernel sets them
    return bytes(data)


class ScriptedSocket:
    """Answers each request with the next scripted list of datagrams."""

    def __init__(self, *answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []
        self.pending: list[tuple[bytes, int]] = []
        self.closed = False

    def send(self, data: bytes, /) -> int:
        self.sent.append(data)
        seq = rtnl.HEADER.unpack_from(data)[3]
        self.pending = []
        for answer in self.answers.pop(0):
            if isinstance(answer, tuple):
                self.pending.append(answer)
            else:
                self.pending.append((answer(seq) if callable(answer) else answer, 0))
        return len(data)

    def recvmsg(self, bufsize: int, /) -> tuple[bytes, list[Any], int, Any]:
        data, flags = self.pending.pop(0)
        return data, [], flags, None

    def close(self) -> None:
        self.closed = True

    def sent_types(self) -> list[int]:
        return [rtnl.HEADER.unpack_from(data)[1] for data in self.sent]

    def sent_message(self, position: int, message_class: Any = ifinfmsg) -> Any:
        message = message_class(self.sent[position])
        message.decode()
        return message
