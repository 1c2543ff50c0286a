"""What Services need from the node, checked on every pass, fixed where the agent may.

A Service proxy (kube-proxy's iptables or nftables mode) DNATs a pod's packet to a ClusterIP; the
answer must pass conntrack on its way back to be turned into the ClusterIP's again. An endpoint
beside the client on the bridge answers it over the bridge, which netfilter sees only through
br_netfilter, and only for a bridge whose `nf_call_iptables` is on or where the node's sysctl
`net.bridge.bridge-nf-call-iptables` is 1 (the two are ORed). So:

- br_netfilter must be loaded (its sysctls exist then). The agent cannot load a module (the
  DaemonSet has no CAP_SYS_MODULE): it says so.
- The bridge's own switches (`links.BridgeNetfilter`): the plugin turns them on for every bridge
  it creates or adopts; the agent does too once the bridge exists, as it does ip_forward, so a
  bridge an older minicni made gets them without waiting for a new pod. Needs NET_ADMIN only;
  the sysctl, in a read-only /proc/sys, is left to whoever set it.
- Hairpin mode on each port, for a pod that reaches itself through its Service: the plugin sets
  it on every pod's port (`hairpinMode`); the agent reports ports without it and leaves pods'
  ports alone.

Not checked: nf_conntrack (the proxy's NAT rules load it), route_localnet (kube-proxy's own, for
NodePorts on localhost), a route for the Service CIDR (kube-proxy relies on the node's default
route, and the agent does not know the Service CIDR). None of this holds the node back: pods'
own traffic works without it, and kubeadm dropped its preflight check of the sysctl in 1.30,
since whether it is needed depends on the network plugin (kubernetes/kubernetes#123464).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minicni import defaults
from minicni.net import links
from minicni.net.rtnl import Rtnl
from minicni.net.wire import NetlinkError

BR_NETFILTER_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
SHOWN_PORTS = 5


@dataclass(frozen=True)
class ServiceChecks:
    br_netfilter: bool
    bridge_found: bool = False
    bridge_netfilter: bool | None = None
    """The bridge's switches are on; None: no bridge, or a kernel without bridge netfilter."""
    netfilter_turned_on: bool = False
    ports_without_hairpin: tuple[str, ...] = ()
    ports: int = 0
    failure: str | None = None


def check_services(
    rtnl: Rtnl, bridge: str = defaults.BRIDGE, sysctl: Path = BR_NETFILTER_SYSCTL
) -> ServiceChecks:
    loaded = sysctl.exists()
    try:
        link = links.get_link(rtnl, bridge)
        if link is None or link.kind != "bridge":
            return ServiceChecks(loaded)
        turned_on = links.ensure_bridge_netfilter(rtnl, link)
        switches = link.netfilter
        on = None if switches is None else (turned_on or all(switches))
        ports = links.bridge_ports(rtnl, link.index)
    except NetlinkError as error:
        return ServiceChecks(loaded, failure=f"checking {bridge}: {error}")
    without = tuple(sorted(port.name for port in ports if not port.hairpin))
    return ServiceChecks(loaded, True, on, turned_on, without, len(ports))


def service_warnings(checks: ServiceChecks, bridge: str = defaults.BRIDGE) -> dict[str, str | None]:
    """A message for each check that fails (None for those that pass), by check name."""
    br_netfilter = None
    if not checks.br_netfilter:
        br_netfilter = (
            "br_netfilter is not loaded: traffic between pods of one bridge skips iptables, so a "
            "pod calling a Service whose endpoint is on the same node gets answers conntrack "
            "never turns back into the Service's (TCP hangs, UDP answers come from the "
            "endpoint's address); load it on the host (modprobe br_netfilter, and list it in "
            "/etc/modules-load.d/): the agent cannot, it has no CAP_SYS_MODULE"
        )
    bridge_netfilter = None
    if checks.failure:
        bridge_netfilter = f"Services: {checks.failure}"
    elif checks.bridge_found and checks.bridge_netfilter is None and checks.br_netfilter:
        bridge_netfilter = (
            f"{bridge} reports no nf_call_iptables switch (a kernel without bridge netfilter?): "
            "Services to endpoints on this node depend on net.bridge.bridge-nf-call-iptables=1"
        )
    hairpin = None
    if checks.ports_without_hairpin:
        count = len(checks.ports_without_hairpin)
        names = ", ".join(checks.ports_without_hairpin[:SHOWN_PORTS])
        more = ", ..." if count > SHOWN_PORTS else ""
        hairpin = (
            f"{count} of the {checks.ports} ports of {bridge} without hairpin mode ({names}"
            f"{more}): their pods cannot reach themselves through their own Services; the "
            "plugin sets it on every pod it adds (hairpinMode), so re-create those pods"
        )
    return {"br_netfilter": br_netfilter, "bridge_netfilter": bridge_netfilter, "hairpin": hairpin}
