"""The underlay of a lab: nodes on one L2 segment (a bridge in a "switch" namespace), or each on
its own subnet behind a "router" namespace; plus the sysctls that make a namespace a node.

All of it happens inside namespaces the lab created; the root namespace never sees a link.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.topology import HostPlan, LabPlan, NodePlan
from minicni.net import netns

IFA_F_NODAD = 0x02
"""An address the lab puts on its own links is usable at once, with no duplicate address
detection (1-2 s per IPv6 address). Only the lab's links: what minicni adds in a node namespace
must manage without help, so the node namespaces keep the kernel's DAD settings."""
NO_DAD = {"net/ipv6/conf/all/accept_dad": "0", "net/ipv6/conf/default/accept_dad": "0"}
"""For the switch and router namespaces, which hold nothing but the lab's links."""


def node_sysctls(rp_filter: int, ipv6: bool = False) -> dict[str, str]:
    """A node forwards; rp_filter=1 as kind nodes set it drops asymmetric paths, which is what
    the matrix must catch (the effective value per interface is max(all, interface)). With IPv6
    pods it forwards IPv6 as well, as kind sets its nodes up for an IPv6 or dual-stack cluster
    (IPv6 has no rp_filter)."""
    values = {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/all/rp_filter": str(rp_filter),
        "net/ipv4/conf/default/rp_filter": str(rp_filter),
    }
    if ipv6:
        values["net/ipv6/conf/all/forwarding"] = "1"
    return values


@contextmanager
def ipr_in(name: str) -> Iterator[Any]:
    """A pyroute2 IPRoute bound to the named namespace (it stays bound after we leave it)."""
    from pyroute2 import IPRoute

    with netns.enter(netns.path_of(name)):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """/proc/sys/net follows the calling thread's namespace, so write them from inside."""
    with netns.enter(netns.path_of(name)):
        for key, value in values.items():
            with open(f"/proc/sys/{key}", "w", encoding="ascii") as stream:
                stream.write(value)


def bring_up_loopback(name: str) -> None:
    with ipr_in(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def build_fabric(lab: LabPlan) -> None:
    """Create the switch/router links and each node's uplink; namespaces must exist already."""
    routed = lab.topology.underlay == "routed"
    ipv6_pods = 6 in lab.topology.pod_versions
    for node in lab.nodes:
        # first: an interface takes conf/default's values when it is made, so every node link
        # (the uplink here, the agent's and the plugin's later) shows the node's rp_filter
        write_sysctls(node.netns, node_sysctls(lab.topology.rp_filter, ipv6_pods))
    # before any link is made there, as for the nodes' sysctls
    write_sysctls(lab.fabric_netns, NO_DAD)
    with ipr_in(lab.fabric_netns) as fabric:
        fabric.link("set", index=fabric.link_lookup(ifname="lo")[0], state="up")
        if routed:
            forwarding = {"net/ipv4/ip_forward": "1"}
            if 6 in lab.topology.underlay_versions or ipv6_pods:
                forwarding["net/ipv6/conf/all/forwarding"] = "1"
            write_sysctls(lab.fabric_netns, forwarding)
        else:
            fabric.link("add", ifname=lab.fabric_bridge, kind="bridge")
            bridge = fabric.link_lookup(ifname=lab.fabric_bridge)[0]
            for _ip, prefixlen, gateway in lab.nodes[0].interfaces():
                fabric.addr("add", index=bridge, address=gateway, prefixlen=prefixlen)
            fabric.link("set", index=bridge, state="up", mtu=lab.topology.mtu)
        for node in lab.nodes:
            _connect(fabric, lab, node, routed)
    for node in lab.nodes:
        _configure_uplink(node)


def attach_host(lab: LabPlan, host: HostPlan) -> None:
    """Wire a host that is not a node (`LabPlan.outsider`) to the built fabric; its namespace
    must exist already. It gets no node sysctls: it neither forwards nor filters."""
    with ipr_in(lab.fabric_netns) as fabric:
        _connect(fabric, lab, host, lab.topology.underlay == "routed")
    _configure_uplink(host)


def _connect(fabric: Any, lab: LabPlan, host: HostPlan, routed: bool) -> None:
    target = os.open(netns.path_of(host.netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        fabric.link(
            "add",
            ifname=host.peer,
            kind="veth",
            mtu=lab.topology.mtu,
            peer={"ifname": host.uplink, "net_ns_fd": target, "mtu": lab.topology.mtu},
        )
    finally:
        os.close(target)
    peer = fabric.link_lookup(ifname=host.peer)[0]
    if routed:
        for _ip, prefixlen, gateway in host.interfaces():
            fabric.addr("add", index=peer, address=gateway, prefixlen=prefixlen)
    else:
        fabric.link("set", index=peer, master=fabric.link_lookup(ifname=lab.fabric_bridge)[0])
    fabric.link("set", index=peer, state="up")


def _configure_uplink(host: HostPlan) -> None:
    with ipr_in(host.netns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        uplink = ipr.link_lookup(ifname=host.uplink)[0]
        for ip, prefixlen, _gateway in host.interfaces():
            ipr.addr("add", index=uplink, address=ip, prefixlen=prefixlen, flags=IFA_F_NODAD)
        ipr.link("set", index=uplink, state="up")
        # a default route of each family, as real nodes have: the agent and plugin detect the
        # MTU from it
        for ip, _prefixlen, gateway in host.interfaces():
            ipr.route("add", dst="::/0" if ":" in ip else "0.0.0.0/0", gateway=gateway)


def add_bridge_with_pinned_mac(netns: str, name: str) -> None:
    """Create a node's bridge with an explicitly set MAC, as minicni does for its own.

    The reference bridge plugin (v1.1.1, Debian's) leaves the bridge to take the lowest MAC of its
    ports, so every new pod may change it, and a CHECK of an earlier pod then fails with "Bridge
    interface ... Mac doesn't match". It uses a bridge that already exists.
    """
    with ipr_in(netns) as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        index = ipr.link_lookup(ifname=name)[0]
        mac = ipr.link("get", index=index)[0].get("address")
        ipr.link("set", index=index, address=mac, state="up")


def add_pod_cidr_routes(lab: LabPlan) -> None:
    """What an agent would do, for labs wired by the reference plugins: routes to other nodes'
    pod CIDRs (via the node on L2, via the router when routed, which then needs them too)."""
    routed = lab.topology.underlay == "routed"
    for node in lab.nodes:
        with ipr_in(node.netns) as ipr:
            for other in lab.nodes:
                if other.name != node.name:
                    for dst, via_node, via_router in pod_cidr_hops(node, other):
                        ipr.route("replace", dst=dst, gateway=via_router if routed else via_node)
    if routed:
        with ipr_in(lab.fabric_netns) as router:
            for node in lab.nodes:
                for dst, via_node, _via_router in pod_cidr_hops(node, node):
                    router.route("replace", dst=dst, gateway=via_node)


def pod_cidr_hops(node: NodePlan, other: NodePlan) -> list[tuple[str, str, str]]:
    """(other's pod CIDR, other's address, node's router) for each family: the reference
    plugins' pods are routed over the underlay of their own family."""
    hops = [(other.pod_cidr, other.ip, node.gateway)] if other.pod_cidr else []
    return hops + ([(other.pod_cidr6, other.ip6, node.gateway6)] if other.pod_cidr6 else [])
