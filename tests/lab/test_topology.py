"""Topology as data: derived names and addresses, validation, YAML loading."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lab.topology import IFNAMSIZ, Topology, TopologyError, load_topology, new_lab_id, plan


def test_default_cluster_is_three_nodes_with_two_pods_each() -> None:
    lab = plan(Topology(), "mlab12")
    assert [n.name for n in lab.nodes] == ["n1", "n2", "n3"]
    assert [p.name for p in lab.pods] == ["n1/p0", "n1/p1", "n2/p0", "n2/p1", "n3/p0", "n3/p1"]
    assert [n.pod_cidr for n in lab.nodes] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]


def test_l2_nodes_share_one_segment_and_routed_nodes_each_have_their_own() -> None:
    l2 = plan(Topology(underlay="l2"), "ml1")
    assert {ipaddress.ip_interface(f"{n.ip}/{n.prefixlen}").network for n in l2.nodes} == {
        ipaddress.ip_network("172.30.0.0/24")
    }
    assert l2.fabric_netns == "ml1-sw"
    routed = plan(Topology(underlay="routed", backend="vxlan"), "ml1")
    networks = {ipaddress.ip_interface(f"{n.ip}/{n.prefixlen}").network for n in routed.nodes}
    assert len(networks) == 3
    for node in routed.nodes:
        assert ipaddress.ip_address(node.gateway) in ipaddress.ip_network(f"{node.ip}/24", False)
    assert routed.fabric_netns == "ml1-rt"


def test_underlay_segment_picks_the_subnets() -> None:
    l2 = plan(Topology(underlay_cidr="192.168.0.0/16", underlay_segment=50), "ml1")
    assert (l2.nodes[0].ip, l2.nodes[0].gateway) == ("192.168.50.11", "192.168.50.1")
    routed = Topology(
        underlay="routed", backend="vxlan", underlay_cidr="192.168.0.0/16", underlay_segment=60
    )
    assert [n.ip for n in plan(routed, "ml1").nodes] == [
        "192.168.61.2",
        "192.168.62.2",
        "192.168.63.2",
    ]
    with pytest.raises(TopologyError, match="too few /24"):
        Topology(underlay="routed", backend="vxlan", underlay_segment=253)


def test_extra_pods_and_an_outsider_are_named_like_the_rest() -> None:
    lab = plan(Topology(pods_per_node=1), "ml1")
    assert lab.pod("n1", "p0") == lab.pods[0]
    extra = lab.pod("n2", "pa")
    assert (extra.netns, extra.container_id) == ("ml1-n2pa", "ml1-n2-pa")
    outsider = lab.outsider()
    assert (outsider.netns, outsider.ip, outsider.peer) == ("ml1-ext", "172.30.0.200", "ext-up")
    with pytest.raises(TopologyError, match="taken"):
        lab.outsider(host=11)
    with pytest.raises(TopologyError, match="longer"):
        lab.pod("n1", "much-too-long")
    with pytest.raises(TopologyError, match="l2"):
        plan(Topology(underlay="routed", backend="vxlan"), "ml1").outsider()


def test_every_name_fits_an_interface_name_even_for_the_largest_lab() -> None:
    lab = plan(Topology(nodes=99, pods_per_node=99), "mlffff")
    names = lab.all_netns() + [n.peer for n in lab.nodes]
    assert max(len(name) for name in names) <= IFNAMSIZ
    assert len(set(lab.all_netns())) == len(lab.all_netns())


def test_names_of_two_labs_never_collide() -> None:
    first, second = plan(Topology(), "mla"), plan(Topology(), "mlb")
    assert not set(first.all_netns()) & set(second.all_netns())
    assert all(name.startswith("mla-") for name in first.all_netns())


def test_lab_ids_are_short_and_random() -> None:
    ids = {new_lab_id() for _ in range(50)}
    assert len(ids) > 40
    assert all(len(i) == 6 and i.startswith("ml") for i in ids)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nodes": 0}, "nodes"),
        ({"backend": "flannel"}, "backend"),
        ({"underlay": "wan"}, "underlay"),
        ({"underlay": "routed", "backend": "host-gw"}, "L2"),
        ({"cluster_cidr": "172.30.0.0/16"}, "overlap"),
        ({"cluster_cidr": "10.0.0.0/23", "nodes": 3}, "too few"),
        ({"cluster_cidr": "fd00::/64"}, "IPv4"),
        ({"mtu": 500}, "mtu"),
        ({"rp_filter": 3}, "rp_filter"),
    ],
)
def test_unbuildable_topologies_are_refused_with_the_reason(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_mapping(values)


def test_reference_plugins_may_use_a_routed_underlay_because_the_lab_routes() -> None:
    Topology(underlay="routed", backend="host-gw", plugin="reference")


def test_bad_lab_ids_are_refused() -> None:
    with pytest.raises(TopologyError):
        plan(Topology(), "much-too-long-id")


def test_yaml_file_with_dashed_keys(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("nodes: 2\npods-per-node: 3\nbackend: vxlan\nunderlay: routed\n")
    topology = load_topology(str(path))
    assert (topology.nodes, topology.pods_per_node, topology.backend) == (2, 3, "vxlan")


def test_yaml_unknown_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("nodes: 2\npods: 3\n")
    with pytest.raises(TopologyError, match="pods"):
        load_topology(str(path))


def test_topology_round_trips_through_a_mapping() -> None:
    topology = Topology(nodes=4, forward_drop=True)
    assert Topology.from_mapping(topology.to_mapping()) == topology


def test_shipped_topology_files_load() -> None:
    folder = Path(__file__).resolve().parents[2] / "lab" / "topologies"
    loaded = {path.name: load_topology(str(path)) for path in folder.glob("*.yaml")}
    assert loaded["default.yaml"] == Topology()
    assert loaded["vxlan-routed.yaml"].underlay == "routed"
    assert loaded["dual-stack.yaml"].pod_versions == (4, 6)
    assert loaded["ipv6.yaml"].underlay_versions == (6,)


def test_an_ipv4_topology_plans_no_ipv6_at_all() -> None:
    lab = plan(Topology(), "ml1")
    assert lab.topology.pod_versions == lab.topology.underlay_versions == (4,)
    for node in lab.nodes:
        assert (node.ip6, node.gateway6, node.pod_cidr6) == ("", "", "")
        assert node.ips == (node.ip,) and node.pod_cidrs == (node.pod_cidr,)


def test_a_dual_stack_node_has_an_address_and_a_pod_cidr_of_each_family() -> None:
    lab = plan(Topology(family="dual"), "ml1")
    n1 = lab.nodes[0]
    assert n1.ips == ("172.30.0.11", "fd00:172:30::11")
    assert (n1.gateway, n1.gateway6) == ("172.30.0.1", "fd00:172:30::1")
    assert n1.pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert [n.pod_cidr6 for n in lab.nodes] == [f"fd00:10:244:{i}::/64" for i in (1, 2, 3)]
    assert n1.interfaces() == [
        ("172.30.0.11", 24, "172.30.0.1"),
        ("fd00:172:30::11", 64, "fd00:172:30::1"),
    ]


def test_an_ipv6_only_lab_has_no_ipv4_on_nodes_or_pods() -> None:
    lab = plan(Topology(family="ipv6", underlay="routed", backend="vxlan", nodes=12), "ml1")
    assert [(n.ip, n.pod_cidr) for n in lab.nodes] == [("", "")] * 12
    assert lab.nodes[0].ips == ("fd00:172:30:1::2",)
    assert lab.nodes[11].ips == ("fd00:172:30:12::2",)  # the IPv4 plan's digits, read as hex
    assert lab.nodes[11].pod_cidrs == ("fd00:10:244:12::/64",)
    assert lab.nodes[0].primary_ip == "fd00:172:30:1::2"
    for node in lab.nodes:
        segment = ipaddress.ip_network(f"{node.ip6}/64", strict=False)
        assert ipaddress.ip_address(node.gateway6) in segment


def test_dual_stack_pods_may_ride_an_ipv4_underlay_through_vxlan() -> None:
    lab = plan(Topology(family="dual", underlay_family="ipv4", backend="vxlan"), "ml1")
    assert lab.topology.underlay_versions == (4,)
    assert lab.nodes[0].ips == ("172.30.0.11",)
    assert lab.nodes[0].pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    with pytest.raises(TopologyError, match="host-gw"):
        Topology(family="dual", underlay_family="ipv4", backend="host-gw")
    with pytest.raises(TopologyError, match="reference"):
        Topology(family="dual", underlay_family="ipv4", plugin="reference")


def test_an_outsider_of_a_dual_stack_lab_has_both_families() -> None:
    outsider = plan(Topology(family="dual"), "ml1").outsider()
    assert outsider.ips == ("172.30.0.200", "fd00:172:30::200")
    assert outsider.gateway6 == "fd00:172:30::1"


def test_one_service_per_protocol_in_front_of_every_nodes_first_pod() -> None:
    lab = plan(Topology(), "ml1")
    assert [(s.name, s.protocol, s.cluster_ip, s.port, s.target_port) for s in lab.services] == [
        ("probe-tcp", "tcp", "10.96.0.20", 80, 30080),
        ("probe-udp", "udp", "10.96.0.21", 53, 30080),
    ]
    assert all(s.endpoints == ("n1/p0", "n2/p0", "n3/p0") for s in lab.services)
    assert {p.name for p in lab.pods} >= set(lab.services[0].endpoints)


def test_no_services_when_asked_or_without_pods() -> None:
    assert plan(Topology(services=False), "ml1").services == ()
    assert plan(Topology(pods_per_node=0), "ml1").services == ()


def test_the_service_cidr_is_checked() -> None:
    for bad in ("10.244.128.0/24", "172.30.5.0/24", "fd00::/108", "10.96.0.0/28"):
        with pytest.raises(TopologyError, match="service_cidr"):
            Topology(service_cidr=bad)
    assert plan(Topology(service_cidr="10.100.0.0/24"), "ml1").services[0].cluster_ip == (
        "10.100.0.20"
    )


def test_the_agent_runs_as_a_process_unless_the_image_is_asked_for() -> None:
    assert Topology().agent == "process"
    image = Topology.from_mapping({"agent": "image", "image": "localhost/minicni:x"})
    assert (image.agent, image.image) == ("image", "localhost/minicni:x")
    assert Topology.from_mapping(image.to_mapping()) == image  # kept in the lab's state file


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"family": "ipv5"}, "family"),
        ({"underlay_family": "both"}, "underlay_family"),
        ({"cluster_cidr6": "10.0.0.0/8"}, "IPv6"),
        ({"cluster_cidr6": "fd00:172:30::/56"}, "overlap"),
        ({"underlay_cidr6": "fd00:1::/64"}, "/56"),
        ({"node_cidr_prefix6": 56}, "node_cidr_prefix6"),
        ({"cluster_cidr6": "fd00:10:244::/63", "nodes": 3}, "too few"),
    ],
)
def test_unbuildable_ipv6_plans_are_refused_with_the_reason(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_mapping({"plugin": "reference", "family": "dual", **values})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"agent": "pod"}, "agent must be one of"),
        ({"agent": "image", "plugin": "reference"}, "use plugin minicni"),
        ({"image": "minicni:x"}, "only run with agent image"),
    ],
)
def test_agent_and_image_that_cannot_run_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_mapping(values)


def test_the_runtime_is_part_of_the_topology() -> None:
    assert Topology().runtime == "libcni"  # the lab's own runtime stays the default
    assert Topology.from_mapping({"runtime": "cri"}).to_mapping()["runtime"] == "cri"
    with pytest.raises(TopologyError, match="runtime must be one of"):
        Topology(runtime="docker")
