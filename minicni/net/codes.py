"""rtnetlink's message layouts and attribute numbers, as pyroute2 defines them, once.

The requests of the plugin's hot path (a pod's ADD, DEL, CHECK; the same code the agent runs when
it serves them) and the dumps both programs read are built and decoded with `struct` from these:
importing pyroute2's message classes costs the plugin ~25 ms on every pod start, and encoding
with them ~0.3 ms a message. tests/net/test_codes.py proves every number and layout here equal to
pyroute2's (`ifinfmsg`, `ifaddrmsg`, `rtmsg` and their nested attribute maps), and each request
built here byte-for-byte equal to the one pyroute2's classes build. The agent's own requests
(VXLAN devices, neighbours, policy rules) still use pyroute2's classes directly.
"""

from __future__ import annotations

import struct

# Message bodies (after struct nlmsghdr).
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags

# struct ifinfomsg's attributes (IFLA_*).
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_LINK_NETNSID = 37
IFLA_IF_NETNSID = 46  # IFLA_TARGET_NETNSID in the kernel since 4.19 (pyroute2 keeps the old name)

# Inside IFLA_LINKINFO.
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_INFO_SLAVE_KIND = 4
IFLA_INFO_SLAVE_DATA = 5

# Inside IFLA_INFO_DATA: a veth's, a bridge's, a VXLAN device's.
VETH_INFO_PEER = 1
IFLA_BR_MCAST_SNOOPING = 23
IFLA_BR_NF_CALL_IPTABLES = 36
IFLA_BR_NF_CALL_IP6TABLES = 37
IFLA_VXLAN_ID = 1
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_PORT = 15  # big-endian
IFLA_VXLAN_LOCAL6 = 17

# Inside IFLA_INFO_SLAVE_DATA of a bridge port.
IFLA_BRPORT_MODE = 4

# Inside IFLA_AF_SPEC: per address family, and IPv6's attributes.
AF_SPEC_INET6 = 10  # AF_INET6
IFLA_INET6_ADDR_GEN_MODE = 8

# struct ifaddrmsg's attributes.
IFA_ADDRESS = 1
IFA_LOCAL = 2

# struct rtmsg's attributes.
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_TABLE = 15
