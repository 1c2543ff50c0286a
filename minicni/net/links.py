"""Links, addresses and routes through netlink, each helper idempotent and race tolerant.

Every helper takes an open pyroute2 `IPRoute` bound to the namespace it works in. Failures are
raised as `NetlinkError`; the plugin turns them into CNI errors naming the step.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

AF_INET = 2
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    kind: str | None
    master: int | None


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so DEL and GC find the veth without any saved state."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:11]}"


def _link_from(message: Any) -> Link:
    return Link(
        index=message["index"],
        name=message.get("ifname"),
        mac=message.get("address"),
        mtu=message.get("mtu"),
        kind=message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        master=message.get("master"),
    )


def find_link(ipr: Any, name: str) -> Link | None:
    try:
        return _link_from(ipr.link("get", ifname=name)[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def ensure_bridge(ipr: Any, name: str) -> Link:
    """Create the bridge unless it exists; another invocation winning the race is fine."""
    created = True
    try:
        ipr.link("add", ifname=name, kind="bridge")
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        created = False
    bridge = find_link(ipr, name)
    if bridge is None:  # deleted between our add and get: let the runtime retry
        raise NetlinkError(errno.EAGAIN, f"bridge {name} vanished while being set up")
    if bridge.kind != "bridge":
        raise NetlinkError(
            errno.EEXIST, f"{name} exists but is a {bridge.kind or 'non-bridge'} link"
        )
    if created:
        # Pin the MAC: otherwise the bridge takes the lowest port MAC and changes it as pods come
        # and go, which flushes every pod's neighbour entry for the gateway.
        ipr.link("set", index=bridge.index, address=bridge.mac)
    ipr.link("set", index=bridge.index, state="up")
    return bridge


def ensure_address(ipr: Any, index: int, address: str, prefixlen: int) -> list[str]:
    """Put `address/prefixlen` on the link; remove IPv4 addresses of other subnets from it.

    A node whose pod CIDR changed keeps the old gateway address on its bridge; rather than fail
    every pod with "already has an IP address different from ..." the stale one is replaced.
    Returns the addresses removed.
    """
    wanted = f"{address}/{prefixlen}"
    removed = []
    for existing in ipr.get_addr(family=AF_INET, index=index):
        current = f"{existing.get('address')}/{existing['prefixlen']}"
        if current != wanted:
            ipr.addr(
                "del", index=index, address=existing.get("address"), prefixlen=existing["prefixlen"]
            )
            removed.append(current)
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
    return removed


def default_route_mtu(ipr: Any) -> int:
    """MTU of the interface that holds the IPv4 default route, else 1500."""
    for route in ipr.get_default_routes(family=AF_INET):
        oif = route.get("oif")
        if oif:
            return int(ipr.link("get", index=oif)[0].get("mtu"))
    return DEFAULT_MTU


def create_veth_pair(
    pod_ipr: Any, pod_ifname: str, host_ifname: str, host_netns_fd: int, mtu: int
) -> None:
    """Create the pair from inside the pod namespace, the peer landing directly on the host.

    Creating it there means the pod end never exists under its final name (say, eth0) on the
    host, where that name is usually taken.
    """
    pod_ipr.link(
        "add",
        ifname=pod_ifname,
        kind="veth",
        mtu=mtu,
        peer={"ifname": host_ifname, "net_ns_fd": host_netns_fd, "mtu": mtu},
    )


def delete_link(ipr: Any, name: str) -> bool:
    """Delete a link by name; False if it was not there."""
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def attach_to_bridge(ipr: Any, index: int, bridge_index: int, hairpin: bool) -> None:
    ipr.link("set", index=index, master=bridge_index, state="up")
    if hairpin:
        # Lets a pod reach itself through a Service VIP that DNATs back to it.
        ipr.brport("set", index=index, mode=1)  # IFLA_BRPORT_MODE: hairpin


def configure_pod_interface(
    ipr: Any, index: int, address: str, prefixlen: int, gateway: str | None
) -> None:
    ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    ipr.link("set", index=index, state="up")
    if gateway is not None:
        try:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise NetlinkError(exc.code, "the container already has a default route") from exc
            raise


def interface_addresses(ipr: Any, index: int) -> set[str]:
    return {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}


def has_route(ipr: Any, dst: str, gateway: str | None) -> bool:
    """True if the main table holds a route to `dst` (via `gateway` when given)."""
    network, _, length = dst.partition("/")
    for route in ipr.get_routes(family=AF_INET if ":" not in dst else 10, table=254):
        route_dst = route.get("dst") or ("0.0.0.0" if ":" not in dst else "::")
        same_dst = route_dst == network and route["dst_len"] == int(length or 32)
        if same_dst and (gateway is None or route.get("gateway") == gateway):
            return True
    return False
