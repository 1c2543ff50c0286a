"""Kernel replies built by hand and a scripted socket, to drive `minicni.net.rtnl.Rtnl` and
everything on top of it — the plugin's link helpers and the agent's appliers — without root."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from minicni.net import rtnl, wire

NLM_F_MULTI = wire.NLM_F_MULTI

# One datagram the socket returns, or a function of the request's sequence number making one.
Answer = bytes | Callable[[int], bytes] | tuple[bytes, int]


def header(length: int, msg_type: int, flags: int, seq: int) -> bytes:
    return wire.HEADER.pack(length, msg_type, flags, seq, 0)


def error_reply(seq: int, code: int) -> bytes:
    """An error (or, with code 0, an ack) as the kernel sends it with NETLINK_CAP_ACK."""
    echoed = header(16, wire.RTM_NEWLINK, 0, seq)
    return header(36, wire.NLMSG_ERROR, wire.NLM_F_CAPPED, seq) + struct.pack("=i", -code) + echoed


def ack(seq: int) -> bytes:
    return error_reply(seq, 0)


def fails(code: int) -> Callable[[int], bytes]:
    return lambda seq: error_reply(seq, code)


def done(seq: int, code: int = 0) -> bytes:
    return header(20, wire.NLMSG_DONE, NLM_F_MULTI, seq) + struct.pack("=i", -code)


def reply(seq: int, msg: Any, msg_type: int, nl_flags: int = NLM_F_MULTI) -> bytes:
    """`msg` (a pyroute2 message) as the kernel sends it in answer to request `seq`."""
    data = bytearray(rtnl.encode_request(msg, msg_type, 0, seq))
    struct.pack_into("=H", data, 6, nl_flags)  # NLM_F_MULTI and friends, as the kernel sets them
    return bytes(data)


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
    return reply(seq, msg, wire.RTM_NEWLINK, nl_flags)


def address_reply(seq: int, index: int, address: str, prefixlen: int, family: int = 2) -> bytes:
    msg = ifaddrmsg()
    msg["family"] = family
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    local = [("IFA_LOCAL", address)] if family == wire.AF_INET else []
    msg["attrs"] = [*local, ("IFA_ADDRESS", address)]
    return reply(seq, msg, wire.RTM_NEWADDR)


def route_reply(
    seq: int,
    dst: str,
    gateway: str | None = None,
    *,
    table: int = wire.RT_TABLE_MAIN,
    proto: int = wire.RTPROT_STATIC,
    family: int = wire.AF_INET,
    **attrs: Any,
) -> bytes:
    """An RTM_NEWROUTE of a dump: `dst` as "10.1.0.0/24"; `attrs` are more RTA_ attributes by
    name ("oif", "priority", "prefsrc"), or header fields ("flags")."""
    network, _, length = dst.partition("/")
    msg = rtmsg()
    msg["family"] = family
    msg["dst_len"] = int(length)
    msg["table"] = table if table < 256 else wire.RT_TABLE_COMPAT
    msg["proto"] = proto
    msg["type"] = wire.RTN_UNICAST
    msg["attrs"] = [("RTA_TABLE", table)]
    if int(length):
        msg["attrs"].append(("RTA_DST", network))
    if gateway is not None:
        msg["attrs"].append(("RTA_GATEWAY", gateway))
    for key, value in attrs.items():
        if key == "flags":
            msg["flags"] = value
        else:
            msg["attrs"].append((f"RTA_{key.upper()}", value))
    return reply(seq, msg, wire.RTM_NEWROUTE)


def neighbour_reply(
    seq: int, family: int, ifindex: int, dst: str, lladdr: str, state: int = wire.NUD_PERMANENT
) -> bytes:
    msg = ndmsg()
    msg["family"] = family
    msg["ifindex"] = ifindex
    msg["state"] = state
    msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
    return reply(seq, msg, wire.RTM_NEWNEIGH)


def rule_reply(seq: int, header_fields: dict[str, int], attrs: list[tuple[str, Any]]) -> bytes:
    msg = fibmsg()
    for key, value in header_fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    return reply(seq, msg, wire.RTM_NEWRULE)


class ScriptedSocket:
    """Answers each request with the next scripted list of datagrams. A batch (several requests
    in one datagram) takes one list per request."""

    def __init__(self, *answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []
        """Every request sent, one message each (a batch's requests one by one)."""
        self.datagrams = 0
        self.pending: list[tuple[bytes, int]] = []
        self.closed = False

    def send(self, data: bytes, /) -> int:
        self.datagrams += 1
        self.pending = []
        for _, _, seq, message in wire.messages(data):
            self.sent.append(message)
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
        return [wire.HEADER.unpack_from(data)[1] for data in self.sent]

    def sent_flags(self, position: int) -> int:
        return int(wire.HEADER.unpack_from(self.sent[position])[2])

    def sent_message(self, position: int, message_class: Any = ifinfmsg) -> Any:
        message = message_class(self.sent[position])
        message.decode()
        return message
