"""A cluster as data: nodes, pods per node, backend and underlay, plus every name derived from it.

Building the cluster is `lab.cluster`; this module only computes names and addresses, so it is pure
and unit-tested. Every namespace name starts with the lab id, which is unique per run, so two labs
never collide and `down` can find what a killed run left behind by prefix.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any, TypeVar

IFNAMSIZ = 15
BACKENDS = ("host-gw", "vxlan", "auto")
UNDERLAYS = ("l2", "routed")
PLUGINS = ("minicni", "reference")
# process: minicni-agent from this checkout, one process per node; image: the DaemonSet's pod spec
# run with podman from the built image (lab.cluster.daemonset)
AGENTS = ("process", "image")
LIBCNI_GENERATIONS = ("1.1", "1.2")  # the runtime's libcni: 1.1 = containerd 1.6/1.7, podman 4
# libcni: the lab's own runtime (lab.runtimes.libcni); cri: containerd per node, through its CRI
RUNTIMES = ("libcni", "cri")
FAMILIES = ("ipv4", "ipv6", "dual")  # the IP families of the pods (and, by default, the underlay)
LAB_ID_PREFIX = "ml"
# The lab's Services, one per protocol (ICMP has none): (port, target port). kube-proxy's stand-in
# (`lab.cluster.kubeproxy`) DNATs <cluster IP>:<port> to <endpoint pod>:<target port>.
SERVICE_PORTS = {"tcp": (80, 30080), "udp": (53, 30080)}
SERVICE_NAMESPACE = "lab"
SERVICE_PORT_NAME = "probe"
FIRST_SERVICE_HOST = 20  # probe-tcp gets <service CIDR> + 20, probe-udp + 21
Net = TypeVar("Net", IPv4Network, IPv6Network)


class TopologyError(ValueError):
    """The topology is not buildable (bad value, too many nodes for the address plan...)."""


@dataclass(frozen=True)
class Topology:
    """What a user asks for. Everything else (names, addresses) is derived in `plan`."""

    nodes: int = 3
    pods_per_node: int = 2
    backend: str = "host-gw"
    underlay: str = "l2"
    plugin: str = "minicni"
    libcni: str = "1.2"  # the generation of the lab's own runtime (containerd's is its own)
    runtime: str = "libcni"
    family: str = "ipv4"
    # the underlay's families; "" is the pods' (`family`). Pods of a family the underlay lacks
    # reach other nodes only through VXLAN over the other family (minicni's vxlan or auto)
    underlay_family: str = ""
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_prefix: int = 24
    underlay_cidr: str = "172.30.0.0/16"
    # the first /24 of underlay_cidr in use: the l2 segment, or the one before node 1's (routed);
    # the same number picks the /64 of underlay_cidr6
    underlay_segment: int = 0
    cluster_cidr6: str = "fd00:10:244::/56"
    node_cidr_prefix6: int = 64
    underlay_cidr6: str = "fd00:172:30::/48"
    forward_drop: bool = False
    rp_filter: int = 1  # kind's nodes run strict (1); 2 is loose, 0 off
    mtu: int = 1500
    # long enough that a fault injected into a running lab stays visible for a matrix run; the
    # agent still repairs it on the next resync, which is the point of a level-triggered agent
    agent_resync_seconds: int = 30
    agent: str = "process"
    image: str = ""  # with agent "image": an image of the host's podman; "" = the saved archive
    # the agents serve CNI requests (minicni-agent --cni-socket) and the plugin they install is
    # the shim; False: no server, the plugin runs in-process on every call
    fast_path: bool = True
    # ClusterIP Services in front of the first pod of every node, with kube-proxy's rules
    services: bool = True
    service_cidr: str = "10.96.0.0/16"

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 99:
            raise TopologyError(f"nodes must be 1..99, got {self.nodes}")
        if not 0 <= self.pods_per_node <= 99:
            raise TopologyError(f"pods_per_node must be 0..99, got {self.pods_per_node}")
        if self.backend not in BACKENDS:
            raise TopologyError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.underlay not in UNDERLAYS:
            raise TopologyError(f"underlay must be one of {UNDERLAYS}, got {self.underlay!r}")
        if self.plugin not in PLUGINS:
            raise TopologyError(f"plugin must be one of {PLUGINS}, got {self.plugin!r}")
        if self.agent not in AGENTS:
            raise TopologyError(f"agent must be one of {AGENTS}, got {self.agent!r}")
        if self.agent == "image" and self.plugin != "minicni":
            raise TopologyError("agent image runs minicni's DaemonSet: use plugin minicni")
        if self.image and self.agent != "image":
            raise TopologyError("an image is only run with agent image")
        if self.libcni not in LIBCNI_GENERATIONS:
            raise TopologyError(f"libcni must be one of {LIBCNI_GENERATIONS}, got {self.libcni!r}")
        if self.runtime not in RUNTIMES:
            raise TopologyError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.backend == "host-gw" and self.underlay == "routed" and self.plugin == "minicni":
            raise TopologyError("host-gw needs one L2 segment: use underlay l2 or backend vxlan")
        self._check_families()
        cluster = _network(self.cluster_cidr, "cluster_cidr", IPv4Network)
        underlay = _network(self.underlay_cidr, "underlay_cidr", IPv4Network)
        if underlay.prefixlen > 16:
            raise TopologyError("underlay_cidr must be a /16 or larger (one /24 per routed node)")
        last_segment = self.underlay_segment + (self.nodes if self.underlay == "routed" else 0)
        if not 0 <= self.underlay_segment <= last_segment < 2 ** (24 - underlay.prefixlen):
            raise TopologyError("underlay_cidr has too few /24 for underlay_segment and the nodes")
        if cluster.overlaps(underlay):
            raise TopologyError("cluster_cidr and underlay_cidr overlap")
        services = _network(self.service_cidr, "service_cidr", IPv4Network)
        if services.overlaps(cluster) or services.overlaps(underlay):
            raise TopologyError("service_cidr overlaps cluster_cidr or underlay_cidr")
        if services.num_addresses <= FIRST_SERVICE_HOST + len(SERVICE_PORTS):
            raise TopologyError("service_cidr is too small for the lab's Services")
        if not cluster.prefixlen < self.node_cidr_prefix <= 30:
            raise TopologyError("node_cidr_prefix must be longer than the cluster prefix, <= 30")
        if 2 ** (self.node_cidr_prefix - cluster.prefixlen) <= self.nodes:
            raise TopologyError(f"cluster_cidr has too few /{self.node_cidr_prefix} for the nodes")
        cluster6 = _network(self.cluster_cidr6, "cluster_cidr6", IPv6Network)
        underlay6 = _network(self.underlay_cidr6, "underlay_cidr6", IPv6Network)
        if underlay6.prefixlen > 56:
            raise TopologyError("underlay_cidr6 must be a /56 or larger (one /64 per routed node)")
        if _readable(last_segment) >= 2 ** (64 - underlay6.prefixlen):
            raise TopologyError("underlay_cidr6 has too few /64 for underlay_segment and the nodes")
        if cluster6.overlaps(underlay6):
            raise TopologyError("cluster_cidr6 and underlay_cidr6 overlap")
        if not cluster6.prefixlen < self.node_cidr_prefix6 <= 120:
            raise TopologyError("node_cidr_prefix6 must be longer than the cluster prefix, <= 120")
        if 2 ** (self.node_cidr_prefix6 - cluster6.prefixlen) <= _readable(self.nodes):
            raise TopologyError(
                f"cluster_cidr6 has too few /{self.node_cidr_prefix6} for the nodes"
            )
        if self.rp_filter not in (0, 1, 2):
            raise TopologyError(f"rp_filter must be 0, 1 or 2, got {self.rp_filter}")
        if not 1280 <= self.mtu <= 9000:
            raise TopologyError(f"mtu must be 1280..9000, got {self.mtu}")

    def _check_families(self) -> None:
        if self.family not in FAMILIES:
            raise TopologyError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.underlay_family not in ("", *FAMILIES):
            raise TopologyError(
                f"underlay_family must be one of {FAMILIES} (or empty: the pods' family), "
                f"got {self.underlay_family!r}"
            )
        if set(self.pod_versions) <= set(self.underlay_versions):
            return
        if self.plugin == "reference":
            raise TopologyError(
                "the reference plugins' pods need an underlay of their family: the lab routes "
                "each family over the underlay of the same family"
            )
        if self.backend == "host-gw":
            raise TopologyError(
                "host-gw routes a family over an underlay of the same family: use backend vxlan "
                "or auto for pods of a family the underlay lacks"
            )

    @property
    def pod_versions(self) -> tuple[int, ...]:
        """The IP versions pods get an address of: (4,), (6,) or (4, 6)."""
        return _versions(self.family)

    @property
    def underlay_versions(self) -> tuple[int, ...]:
        """The IP versions of the nodes' underlay addresses."""
        return _versions(self.underlay_family or self.family)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Topology:
        """Build from a parsed YAML/JSON mapping; unknown keys are an error, named."""
        values = {str(key).replace("-", "_"): value for key, value in data.items()}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TopologyError(f"unknown topology keys: {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as err:
            raise TopologyError(str(err)) from err

    def to_mapping(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_topology(path: str) -> Topology:
    """Read a topology from a YAML (or JSON) file."""
    import yaml

    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream) or {}
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: expected a mapping at the top level")
    return Topology.from_mapping(data)


@dataclass(frozen=True)
class HostPlan:
    """A namespace on the underlay: a node, or a host outside the cluster (`LabPlan.outsider`).
    The IPv4 fields are empty on an underlay without IPv4, the IPv6 ones without IPv6."""

    name: str  # "n1": what the agent and the nodes file call it
    netns: str  # "ml3f2a-n1"
    ip: str  # IPv4 underlay address
    prefixlen: int  # underlay prefix length
    gateway: str  # the switch's or router's address on this host's segment
    uplink: str  # the host's underlay interface inside its namespace
    peer: str  # the other end, inside the switch or router namespace
    ip6: str = field(default="", kw_only=True)  # IPv6 underlay address (ULA)
    prefixlen6: int = field(default=64, kw_only=True)
    gateway6: str = field(default="", kw_only=True)

    @property
    def ips(self) -> tuple[str, ...]:
        """The underlay addresses, IPv4 first: a Node's InternalIPs."""
        return tuple(ip for ip in (self.ip, self.ip6) if ip)

    @property
    def primary_ip(self) -> str:
        return self.ips[0]

    def interfaces(self) -> list[tuple[str, int, str]]:
        """(address, prefix length, gateway) of each family the host has."""
        found = [(self.ip, self.prefixlen, self.gateway)] if self.ip else []
        return found + ([(self.ip6, self.prefixlen6, self.gateway6)] if self.ip6 else [])


@dataclass(frozen=True)
class NodePlan(HostPlan):
    pod_cidr: str  # the IPv4 pod CIDR; empty in an IPv6-only cluster
    pod_cidr6: str = field(default="", kw_only=True)

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        """A Node's spec.podCIDRs: IPv4 first, as Kubernetes orders a dual-stack cluster."""
        return tuple(cidr for cidr in (self.pod_cidr, self.pod_cidr6) if cidr)


@dataclass(frozen=True)
class PodPlan:
    name: str  # "n1/p0": display name
    node: str  # "n1"
    netns: str  # "ml3f2a-n1p0"
    container_id: str
    ifname: str = "eth0"


@dataclass(frozen=True)
class ServicePlan:
    """A ClusterIP Service of the lab: one port of one protocol, its endpoints the pods named."""

    name: str  # "probe-tcp"
    protocol: str  # "tcp" or "udp"
    cluster_ip: str
    port: int
    target_port: int
    endpoints: tuple[str, ...]  # pod display names: "n1/p0", "n2/p0", ...
    namespace: str = SERVICE_NAMESPACE
    port_name: str = SERVICE_PORT_NAME


@dataclass(frozen=True)
class LabPlan:
    """Every name and address of one lab run, derived from (lab id, topology)."""

    lab_id: str
    topology: Topology
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    fabric_netns: str  # the "switch" (l2) or "router" (routed) namespace
    fabric_bridge: str = "br0"
    network_name: str = field(default="minicni")
    services: tuple[ServicePlan, ...] = ()

    @property
    def netns_prefix(self) -> str:
        return f"{self.lab_id}-"

    def all_netns(self) -> list[str]:
        """Every namespace of the lab, in the order to remove them (pods, nodes, fabric)."""
        return [p.netns for p in self.pods] + [n.netns for n in self.nodes] + [self.fabric_netns]

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def pod(self, node: str, suffix: str) -> PodPlan:
        """The pod `suffix` ("p0") of `node`: how `plan` names its pods, and how a test names
        one more."""
        pod = PodPlan(
            name=f"{node}/{suffix}",
            node=node,
            netns=f"{self.lab_id}-{node}{suffix}",
            container_id=f"{self.lab_id}-{node}-{suffix}",
        )
        _check_length(pod.netns)
        return pod

    def pod_named(self, name: str) -> PodPlan:
        """The pod whose display name is `name` ("n1/p0"): `pod` read backwards."""
        node, _, suffix = name.partition("/")
        return self.pod(node, suffix)

    def outsider(self, name: str = "ext", host: int = 200) -> HostPlan:
        """A host on the l2 segment that is not a node: "outside the cluster"."""
        if self.topology.underlay != "l2":
            raise TopologyError("an outsider needs the l2 underlay")
        first = self.nodes[0]
        ip = ip6 = ""
        if first.ip:
            segment = ipaddress.ip_interface(f"{first.ip}/{first.prefixlen}").network
            ip = str(segment[host])
        if first.ip6:
            segment6 = ipaddress.ip_interface(f"{first.ip6}/{first.prefixlen6}").network
            ip6 = str(segment6[_readable(host)])
        taken = {first.gateway, first.gateway6, *(a for n in self.nodes for a in n.ips)}
        if {ip, ip6} & taken - {""}:
            raise TopologyError(f"outsider address {ip or ip6} is taken")
        outsider = HostPlan(
            name=name,
            netns=f"{self.lab_id}-{name}",
            ip=ip,
            prefixlen=first.prefixlen,
            gateway=first.gateway,
            uplink=first.uplink,
            peer=f"{name}-up",
            ip6=ip6,
            prefixlen6=first.prefixlen6,
            gateway6=first.gateway6,
        )
        for link in (outsider.netns, outsider.peer):
            _check_length(link)
        return outsider


def new_lab_id() -> str:
    """A short id unique per run: 'ml' + 4 hex digits keeps every derived name <= 15 chars."""
    return LAB_ID_PREFIX + secrets.token_hex(2)


def plan(topology: Topology, lab_id: str) -> LabPlan:
    if not lab_id.isalnum() or not 1 <= len(lab_id) <= 6:
        raise TopologyError(f"lab id must be 1..6 letters/digits, got {lab_id!r}")
    cluster = _network(topology.cluster_cidr, "cluster_cidr", IPv4Network)
    underlay = _network(topology.underlay_cidr, "underlay_cidr", IPv4Network)
    cluster6 = _network(topology.cluster_cidr6, "cluster_cidr6", IPv6Network)
    underlay6 = _network(topology.underlay_cidr6, "underlay_cidr6", IPv6Network)
    node_cidrs = cluster.subnets(new_prefix=topology.node_cidr_prefix)
    next(node_cidrs)  # skip the first subnet so that node n<i> gets 10.244.<i>.0/24: easy to read
    segments = list(underlay.subnets(new_prefix=24))[topology.underlay_segment :]
    pods4, pods6 = (version in topology.pod_versions for version in (4, 6))
    under4, under6 = (version in topology.underlay_versions for version in (4, 6))
    nodes = []
    for index in range(1, topology.nodes + 1):
        name = f"n{index}"
        # the segment and the host number, the same for both families: IPv6 addresses are
        # written with the IPv4 ones' digits (172.30.0.11 beside fd00:172:30::11)
        segment_number, host = (0, 10 + index) if topology.underlay == "l2" else (index, 2)
        segment = segments[segment_number]
        segment6 = _subnet(underlay6, 64, _readable(topology.underlay_segment + segment_number))
        nodes.append(
            NodePlan(
                name=name,
                netns=f"{lab_id}-{name}",
                ip=str(segment[host]) if under4 else "",
                prefixlen=segment.prefixlen,
                gateway=str(segment[1]) if under4 else "",
                pod_cidr=str(next(node_cidrs)) if pods4 else "",
                uplink="eth0",
                peer=f"{name}-up",
                ip6=str(segment6[_readable(host)]) if under6 else "",
                gateway6=str(segment6[1]) if under6 else "",
                pod_cidr6=(
                    str(_subnet(cluster6, topology.node_cidr_prefix6, _readable(index)))
                    if pods6
                    else ""
                ),
            )
        )
    fabric = f"{lab_id}-{'sw' if topology.underlay == 'l2' else 'rt'}"
    result = LabPlan(lab_id, topology, tuple(nodes), (), fabric)
    pods = [
        result.pod(node.name, f"p{index}")
        for node in nodes
        for index in range(topology.pods_per_node)
    ]
    result = replace(result, pods=tuple(pods), services=plan_services(topology))
    _check_names(result)
    return result


def plan_services(topology: Topology) -> tuple[ServicePlan, ...]:
    """One Service per protocol whose endpoints are the first pod of every node: every node
    then holds each kind of Service cell -- that pod reaching itself (hairpin), the node's other
    pods reaching an endpoint beside them, every pod one on another node, the node itself. The
    Services are IPv4 (service_cidr): a dual-stack lab probes them over IPv4."""
    if not topology.services or topology.pods_per_node < 1 or 4 not in topology.pod_versions:
        return ()  # IPv4 Services (service_cidr): an IPv6-only lab has none
    network = _network(topology.service_cidr, "service_cidr", IPv4Network)
    endpoints = tuple(f"n{index}/p0" for index in range(1, topology.nodes + 1))
    return tuple(
        ServicePlan(
            name=f"probe-{protocol}",
            protocol=protocol,
            cluster_ip=str(network[FIRST_SERVICE_HOST + offset]),
            port=port,
            target_port=target_port,
            endpoints=endpoints,
        )
        for offset, (protocol, (port, target_port)) in enumerate(SERVICE_PORTS.items())
    )


def _check_names(lab: LabPlan) -> None:
    names = lab.all_netns()
    if len(set(names)) != len(names):
        raise TopologyError("derived namespace names collide")
    links = [n.uplink for n in lab.nodes] + [n.peer for n in lab.nodes] + [lab.fabric_bridge]
    for name in names + links:
        _check_length(name)


def _check_length(name: str) -> None:
    if len(name.encode()) > IFNAMSIZ:
        raise TopologyError(f"derived name {name!r} is longer than {IFNAMSIZ} bytes")


def _network(value: str, key: str, kind: type[Net]) -> Net:
    try:
        network = ipaddress.ip_network(value)
    except ValueError as err:
        raise TopologyError(f"{key}: {err}") from err
    if not isinstance(network, kind):
        raise TopologyError(f"{key}: must be an IPv{6 if kind is IPv6Network else 4} network")
    return network


def _versions(family: str) -> tuple[int, ...]:
    return {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[family]


def _readable(number: int) -> int:
    """`number` written in decimal, read as hex: node 11 is ::11 in IPv6, as .11 in IPv4."""
    return int(str(number), 16)


def _subnet(network: Net, prefixlen: int, number: int) -> Net:
    """The `number`th subnet of `prefixlen` in `network`, without listing the ones before."""
    size = 2 ** (network.max_prefixlen - prefixlen)
    start = network.network_address + number * size
    return type(network)(f"{start}/{prefixlen}")
