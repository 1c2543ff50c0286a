"""The kernel layer: every netlink byte minicni sends or reads goes through here, for both programs.

- `wire`: the netlink wire format once (constants, headers, attributes, splitting datagrams,
  decoding errors) and `NetlinkError`, the one error type;
- `rtnl`: the one client (`Rtnl`): requests, dumps and batches, each reply checked for its
  sequence number and truncation, interrupted dumps read again;
- `links`, `addresses`, `routes`, `neighbours`, `rules`: typed request builders and typed dumps;
- `netns` (entering namespaces with setns), `sysctl`.
It knows no protocol: no CNI, no IPAM, no plugin or agent.

What pyroute2 is here for. The house rule is that the product changes the kernel through netlink
with pyroute2's message definitions; its sockets are never used (`IPRoute` is built on asyncio
and forks helpers for namespaces). The requests of a pod's ADD, DEL and CHECK (links, addresses,
routes) and the decoding of links, addresses, routes and neighbours are done with `struct` from
`codes`, whose numbers and layouts are pyroute2's (tests/net/test_codes.py proves every number,
and every request byte-for-byte against pyroute2's classes): importing those classes cost the
plugin 24-33 ms of every pod start, encoding with them ~0.3 ms a message, and decoding every
attribute ~50 us a message, too slow for the agent's resync over thousands of routes. The
agent's own requests (a VXLAN device's, with its big-endian port; neighbours; policy rules) are
built with pyroute2's classes (`ifinfmsg`, `ndmsg`, `fibmsg`), whose package the agent imports
once, at start.
"""
