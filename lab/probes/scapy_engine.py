"""The scapy probe engine, an independent cross-check of the sockets: a receiver records what
arrived with an AF_PACKET sniffer (its sockets still answer), a sender crafts ICMP with scapy.
One protocol per process, at ~0.3 s per import of scapy.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lab.probes.sockets import announce_ready, receive
from lab.probes.wire import ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST

if TYPE_CHECKING:
    from lab.probes.sockets import Emit


def scapy_receive(args: SimpleNamespace, emit: Emit) -> None:
    """Record the source address off the wire with an AF_PACKET sniffer; sockets still answer."""
    import threading

    from scapy.interfaces import get_if_list
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.packet import Raw
    from scapy.sendrecv import AsyncSniffer

    (proto,) = args.protos
    token, deadline = args.token.encode(), time.monotonic() + args.timeout
    network = IPv6 if getattr(args, "family", "ipv4") == "ipv6" else IP

    def is_probe(packet: Any) -> bool:
        if network not in packet:
            return False
        if proto == "icmp" and network is IPv6:  # scapy keeps an ICMPv6 echo's payload as `data`
            return ICMPv6EchoRequest in packet and token in bytes(packet[ICMPv6EchoRequest].data)
        if Raw not in packet or token not in bytes(packet[Raw].load):
            return False
        if proto == "icmp":
            return ICMP in packet and int(packet[ICMP].type) == ICMP_ECHO_REQUEST
        layer = TCP if proto == "tcp" else UDP
        return layer in packet and int(packet[layer].dport) == args.port

    started = threading.Event()
    sniffer = AsyncSniffer(  # every interface: a pod reaches its node's address over the bridge
        iface=get_if_list(), lfilter=is_probe, count=1, store=True, started_callback=started.set
    )
    sniffer.start()
    started.wait(max(deadline - time.monotonic(), 0))
    if proto == "icmp":
        announce_ready()
        sniffer.join(max(deadline - time.monotonic(), 0))
    else:
        receive(args, lambda _proto, _fields: None)  # the sockets answer; the sniffer judges
    sniffer.join(max(min(deadline - time.monotonic(), 0.2), 0))  # the answer may beat it
    if sniffer.running:
        sniffer.stop()
    packets: list[Any] = list(sniffer.results or [])
    observed = str(packets[0][network].src) if packets else None
    emit(proto, {"received": observed is not None, "observed_src": observed})


def scapy_send_icmp(dst: str, token: bytes, deadline: float, src: str | None = None) -> bool:
    """Echo requests crafted by scapy from `src` (the address the kernel picks towards `dst`:
    scapy's own route table ignores a route's preferred source, and would send an IPv6 probe
    from, say, the VXLAN device's VTEP address instead of the node's)."""
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
    from scapy.packet import Packet
    from scapy.sendrecv import sr1
    from scapy.supersocket import L3RawSocket, L3RawSocket6

    # A raw IP socket: the kernel routes the probe as it routes any traffic of the namespace.
    # scapy's default L3 socket picks next hops from its own copy of the main table and resolves
    # them with its own ARP, which nobody answers for a VXLAN onlink gateway (a static neighbour).
    # (sr1 takes conf.L3socket whatever the packet's family: it must be the IPv6 one for IPv6)
    ipv6 = ":" in dst
    conf.L3socket = L3RawSocket6 if ipv6 else L3RawSocket
    ident = int.from_bytes(os.urandom(2), "big")
    while (left := deadline - time.monotonic()) > 0:
        request: Packet
        if ipv6:
            request = IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=ident, data=token)
        else:
            request = IP(src=src, dst=dst) / ICMP(id=ident) / token
        answer = sr1(request, timeout=min(left, 0.5), verbose=False)
        if answer is None:
            continue
        if ipv6 and ICMPv6EchoReply in answer and int(answer[ICMPv6EchoReply].id) == ident:
            return True
        if not ipv6 and ICMP in answer and int(answer[ICMP].type) == ICMP_ECHO_REPLY:
            return True
    return False
