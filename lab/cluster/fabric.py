"""The underlay of a lab: nodes on one L2 segment (a bridge in a "switch" namespace), or each on
its own subnet behind a "router" namespace; plus the sysctls that make a namespace a node.

All of it happens inside namespaces the lab created; the root namespace never sees a link.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.topology import HostPlan, LabPlan
from minicni.net import netns


def node_sysctls(rp_filter: int) -> dict[str, str]:
    """A node forwards; rp_filter=1 as kind nodes set it drops asymmetric paths, which is what
    the matrix must catch (the effective value per interface is max(all, interface))."""
    return {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/all/rp_filter": str(rp_filter),
        "net/ipv4/conf/default/rp_filter": str(rp_filter),
    }


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
    for node in lab.nodes:
        # first: an interface takes conf/default's values when it is made, so every node link
        # (the uplink here, the agent's and the plugin's later) shows the node's rp_filter
        write_sysctls(node.netns, node_sysctls(lab.topology.rp_filter))
    with ipr_in(lab.fabric_netns) as fabric:
        fabric.link("set", index=fabric.link_lookup(ifname="lo")[0], state="up")
        if routed:
            write_sysctls(lab.fabric_netns, {"net/ipv4/ip_forward": "1"})
        else:
            fabric.link("add", ifname=lab.fabric_bridge, kind="bridge")
            bridge = fabric.link_lookup(ifname=lab.fabric_bridge)[0]
            node = lab.nodes[0]
            fabric.addr("add", index=bridge, address=node.gateway, prefixlen=node.prefixlen)
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
        fabric.addr("add", index=peer, address=host.gateway, prefixlen=host.prefixlen)
    else:
        fabric.link("set", index=peer, master=fabric.link_lookup(ifname=lab.fabric_bridge)[0])
    fabric.link("set", index=peer, state="up")


def _configure_uplink(host: HostPlan) -> None:
    with ipr_in(host.netns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        uplink = ipr.link_lookup(ifname=host.uplink)[0]
        ipr.addr("add", index=uplink, address=host.ip, prefixlen=host.prefixlen)
        ipr.link("set", index=uplink, state="up")
        # a default route, as real nodes have: the agent and plugin detect the MTU from it
        ipr.route("add", dst="0.0.0.0/0", gateway=host.gateway)


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
                    gateway = node.gateway if routed else other.ip
                    ipr.route("replace", dst=other.pod_cidr, gateway=gateway)
    if routed:
        with ipr_in(lab.fabric_netns) as router:
            for node in lab.nodes:
                router.route("replace", dst=node.pod_cidr, gateway=node.ip)
