"""The kernel layer: every netlink byte minicni sends or reads goes through here, for both programs.

- `wire`: the netlink wire format once (constants, headers, attributes, splitting datagrams,
  decoding errors) and `NetlinkError`, the one error type;
- `rtnl`: the one client (`Rtnl`): requests, dumps and batches, each reply checked for its
  sequence number and truncation, interrupted dumps read again;
- `links`, `addresses`, `routes`, `neighbours`, `rules`: typed request builders and typed dumps;
- `netns` (entering namespaces with setns), `sysctl`.
It knows no protocol: no CNI, no IPAM, no plugin or agent.

Why pyroute2 is still here, and what it costs. The house rule is that the product changes the
kernel through pyroute2's netlink; what is used of it is the message classes (`ifinfmsg`,
`ifaddrmsg`, `rtmsg`, `ndmsg`, `fibmsg`), never its sockets (`IPRoute` is built on asyncio and
forks helpers for namespaces). At run time they buy: the encoding of every request, nested
attributes included (a veth's peer inside IFLA_LINKINFO, the bridge port's IFLA_PROTINFO, a
VXLAN device's data with its big-endian port), typed attribute values (addresses, MACs, names),
the decoding of links and rules, and the header layouts and attribute numbers the fast decoders
read (`wire.body_struct`, `wire.attribute_codes`). Routes, addresses and neighbours are decoded
with `struct` instead: pyroute2 decodes every attribute (~50 us a message), too slow for the
agent's resync over thousands of routes. The cost, for the plugin: importing the three classes
an ADD needs (with pyroute2's package __init__ skipped, see `minicni.plugin.main`) takes 24-33 ms
of the 100-135 ms an ADD spends on imports (`python -X importtime`, 15 runs on a shared 2-core
machine); VERSION and STATUS load none of it. Writing our own encoders for the five message types
would save that much per ADD, DEL, CHECK and GC, at the price of a few hundred lines re-deriving
what pyroute2 defines; the agent pays pyroute2's full package import once, at start.
"""
