"""A stand-in for kube-proxy's iptables mode: the `nat` rules it writes for ClusterIP Services, as
one iptables-restore input, from the Services and their endpoints. Pure: `lab.cluster.services`
applies it to a node.

The shapes follow kubernetes/kubernetes `pkg/proxy/iptables/proxier.go` (`syncProxyRules`,
`writeServiceToEndpointRules`), chain names and comments included, so a rule read in a lab node
reads like one on a real node:

    PREROUTING, OUTPUT -> KUBE-SERVICES      "kubernetes service portals"
    KUBE-SERVICES  -d <cluster IP> --dport <port>          -> KUBE-SVC-<hash>
    KUBE-SVC-<hash> ... ! -s <cluster CIDR>                -> KUBE-MARK-MASQ  (off-cluster sources:
                                                              the node itself, a routed client)
    KUBE-SVC-<hash> -m statistic --probability 1/n, 1/(n-1) ... (the last unconditional)
                                                           -> KUBE-SEP-<hash> (one per endpoint)
    KUBE-SEP-<hash> -s <endpoint>                          -> KUBE-MARK-MASQ  (hairpin: a pod that
                                                              reaches itself through its Service)
    KUBE-SEP-<hash> -j DNAT --to-destination <endpoint>:<target port>
    KUBE-MARK-MASQ  -j MARK --or-mark 0x4000
    POSTROUTING -> KUBE-POSTROUTING: unmarked RETURN; clear the mark; MASQUERADE --random-fully

The off-cluster test is kube-proxy's `--cluster-cidr` local-traffic detector
(`detectLocalMode: ClusterCIDR`, what kind configures). Left out, because a ClusterIP Service
between pods and nodes needs none of them: NodePorts (KUBE-NODEPORTS, KUBE-EXT-*), external and
load-balancer IPs (KUBE-FW-*), session affinity (`-m recent`), internal/external traffic policy
Local and topology hints (KUBE-SVL-*), terminating endpoints, the `filter` table (KUBE-SERVICES
REJECT for Services without endpoints, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD's accept of marked and
established traffic and its drop of INVALID conntrack state, KUBE-PROXY-FIREWALL, kubelet's
KUBE-FIREWALL), the KUBE-PROXY-CANARY chains, conntrack clean-up of stale UDP entries, IPv6, and
any resync: the rules are written once, when the lab comes up, and go with the node's namespace.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

SERVICES_CHAIN = "KUBE-SERVICES"
POSTROUTING_CHAIN = "KUBE-POSTROUTING"
MARK_MASQ_CHAIN = "KUBE-MARK-MASQ"
MASQUERADE_MARK = "0x4000"  # kube-proxy's --iptables-masquerade-bit 14 (the default)
PROTOCOLS = ("tcp", "udp")
# (built-in chain, comment, our chain): kube-proxy prepends these with `iptables -I`
JUMPS = (
    ("PREROUTING", "kubernetes service portals", SERVICES_CHAIN),
    ("OUTPUT", "kubernetes service portals", SERVICES_CHAIN),
    ("POSTROUTING", "kubernetes postrouting rules", POSTROUTING_CHAIN),
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ServicePort:
    """One port of a ClusterIP Service: what kube-proxy calls a ServicePortName and its info."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # "tcp" or "udp"
    cluster_ip: str
    port: int

    def __post_init__(self) -> None:
        # every field ends up in the ruleset: refuse what could break or widen it
        for field_name in ("namespace", "name"):
            if not _DNS_LABEL.match(getattr(self, field_name)):
                raise ValueError(f"{field_name} {getattr(self, field_name)!r} is not a DNS label")
        if self.port_name and not _DNS_LABEL.match(self.port_name):
            raise ValueError(f"port name {self.port_name!r} is not a DNS label")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        _ipv4(self.cluster_ip)
        _port(self.port)

    @property
    def port_name_string(self) -> str:
        """`namespace/name:port` (`namespace/name` for an unnamed port), as kube-proxy prints a
        ServicePortName: in comments, and hashed into the chain names."""
        suffix = f":{self.port_name}" if self.port_name else ""
        return f"{self.namespace}/{self.name}{suffix}"


@dataclass(frozen=True)
class ServiceEndpoint:
    """A ready endpoint of a Service port: the pod's address and the target port."""

    ip: str
    port: int

    def __post_init__(self) -> None:
        _ipv4(self.ip)
        _port(self.port)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def _ipv4(text: str) -> None:
    if not isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address):
        raise ValueError(f"{text} is not an IPv4 address")


def _port(number: int) -> None:
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is not 1..65535")


def _hash16(text: str) -> str:
    """kube-proxy's chain suffix: base32 of sha256, first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_chain(service: ServicePort) -> str:
    return "KUBE-SVC-" + _hash16(service.port_name_string + service.protocol)


def endpoint_chain(service: ServicePort, endpoint: ServiceEndpoint) -> str:
    return "KUBE-SEP-" + _hash16(service.port_name_string + service.protocol + str(endpoint))


def probability(remaining: int) -> str:
    """The chance the rule of an endpoint is taken when `remaining` endpoints are left: 1/n,
    1/(n-1), ... spreads connections evenly (kube-proxy's `computeProbability`)."""
    return f"{1.0 / remaining:0.10f}"


def jump_rule(builtin: str, comment: str, chain: str) -> str:
    """A jump into our chains as `iptables-save` prints it."""
    return f'-A {builtin} -m comment --comment "{comment}" -j {chain}'


def render_ruleset(
    services: Sequence[tuple[ServicePort, Sequence[ServiceEndpoint]]],
    cluster_cidr: str,
    present_jumps: Collection[str] = (),
) -> str:
    """The iptables-restore input (`--noflush`) that installs the Services on a node: every
    chain is declared (which flushes it), so applying it again rewrites the same rules; the
    jumps from the built-in chains are added only when `present_jumps` (rules as iptables-save
    prints them) lacks them."""
    cidr = ipaddress.ip_network(cluster_cidr)
    if not isinstance(cidr, ipaddress.IPv4Network):
        raise ValueError(f"cluster CIDR {cluster_cidr} is not IPv4")
    chains = [SERVICES_CHAIN, POSTROUTING_CHAIN, MARK_MASQ_CHAIN]
    rules = [
        f'-I {builtin} 1 -m comment --comment "{comment}" -j {chain}'
        for builtin, comment, chain in JUMPS
        if jump_rule(builtin, comment, chain) not in present_jumps
    ]
    mark = f"{MASQUERADE_MARK}/{MASQUERADE_MARK}"
    rules += [
        f"-A {POSTROUTING_CHAIN} -m mark ! --mark {mark} -j RETURN",
        # cleared so a packet that passes the stack again is not masqueraded twice
        f"-A {POSTROUTING_CHAIN} -j MARK --xor-mark {MASQUERADE_MARK}",
        f'-A {POSTROUTING_CHAIN} -m comment --comment "kubernetes service traffic requiring '
        f'SNAT" -j MASQUERADE --random-fully',
        f"-A {MARK_MASQ_CHAIN} -j MARK --or-mark {MASQUERADE_MARK}",
    ]
    for service, endpoints in services:
        if not endpoints:
            continue  # kube-proxy REJECTs in the filter table instead: left out
        service_chains, service_rules = _service_rules(service, endpoints, cidr)
        chains += service_chains
        rules += service_rules
    return "\n".join(["*nat", *(f":{chain} - [0:0]" for chain in chains), *rules, "COMMIT"]) + "\n"


def _service_rules(
    service: ServicePort, endpoints: Sequence[ServiceEndpoint], cluster_cidr: ipaddress.IPv4Network
) -> tuple[list[str], list[str]]:
    svc_chain, name, proto = service_chain(service), service.port_name_string, service.protocol
    match = (
        f'-m comment --comment "{name} cluster IP" -m {proto} -p {proto} '
        f"-d {service.cluster_ip} --dport {service.port}"
    )
    chains = [svc_chain]
    rules = [
        f"-A {SERVICES_CHAIN} {match} -j {svc_chain}",
        f"-A {svc_chain} {match} ! -s {cluster_cidr} -j {MARK_MASQ_CHAIN}",
    ]
    for position, endpoint in enumerate(endpoints):
        chance = ""
        if position < len(endpoints) - 1:  # the last one takes whatever is left
            left = probability(len(endpoints) - position)
            chance = f" -m statistic --mode random --probability {left}"
        rules.append(
            f'-A {svc_chain} -m comment --comment "{name} -> {endpoint}"{chance} '
            f"-j {endpoint_chain(service, endpoint)}"
        )
    for endpoint in endpoints:
        sep = endpoint_chain(service, endpoint)
        chains.append(sep)
        rules += [
            f"-A {sep} -m comment --comment {name} -s {endpoint.ip} -j {MARK_MASQ_CHAIN}",
            f"-A {sep} -m comment --comment {name} -m {proto} -p {proto} "
            f"-j DNAT --to-destination {endpoint}",
        ]
    return chains, rules
