"""The matrix's endpoints on a kind cluster, read from `kubectl get pods -o json`."""

from __future__ import annotations

from lab.kind.inventory import inventory_from, short_node_name


def _pod(
    name: str, node: str, ip: str | None, probe: str, role: str, phase: str = "Running"
) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "minicni-e2e",
            "labels": {"minicni.dev/probe": probe, "minicni.dev/probe-role": role},
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, "podIP": ip},
    }


def test_inventory_has_two_pods_and_the_node_per_node_in_order() -> None:
    pods = {
        "items": [
            _pod("probe-host-x", "mc-worker", "172.18.0.3", "probe-host", "node"),
            _pod("probe-b-1", "mc-worker", "10.244.1.3", "probe-b", "pod"),
            _pod("probe-a-1", "mc-worker", "10.244.1.2", "probe-a", "pod"),
            _pod("probe-a-0", "mc-control-plane", "10.244.0.2", "probe-a", "pod"),
            _pod("probe-a-9", "mc-ghost", None, "probe-a", "pod", phase="Pending"),
        ]
    }
    inventory = inventory_from(pods, cluster_name="mc")
    assert [(e.name, e.kind, e.ip) for e in inventory.endpoints] == [
        ("control-plane/a", "pod", "10.244.0.2"),
        ("worker/a", "pod", "10.244.1.2"),
        ("worker/b", "pod", "10.244.1.3"),
        ("worker", "node", "172.18.0.3"),
    ]
    assert inventory.endpoints[-1].handle == "minicni-e2e/probe-host-x"
    assert inventory.endpoints[-1].node == "mc-worker"


def test_short_node_name_drops_the_cluster_prefix_only() -> None:
    assert short_node_name("minicni-e2e-worker2", "minicni-e2e") == "worker2"
    assert short_node_name("node-1", "minicni-e2e") == "node-1"


def test_a_dual_stack_pod_and_node_have_an_address_of_each_family() -> None:
    pods = {
        "items": [
            _pod("probe-a-1", "mc-worker", "fd00:10:244:1::5", "probe-a", "pod"),
            _pod("probe-host-x", "mc-worker", "172.18.0.3", "probe-host", "node"),
        ]
    }
    pods["items"][0]["status"]["podIPs"] = [{"ip": "fd00:10:244:1::5"}, {"ip": "10.244.1.5"}]
    pods["items"][1]["status"]["podIPs"] = [{"ip": "172.18.0.3"}, {"ip": "fc00:f853::3"}]
    inventory = inventory_from(pods, cluster_name="mc")
    pod, node = inventory.endpoints
    assert pod.addresses == ("10.244.1.5", "fd00:10:244:1::5")  # IPv4 first, as the lab's
    assert node.address("ipv6") == "fc00:f853::3"
    assert inventory.families == ("ipv4", "ipv6")


def test_services_come_with_the_ready_endpoints_kube_proxy_knows() -> None:
    pods = {
        "items": [
            _pod("probe-a-1", "mc-worker", "10.244.1.2", "probe-a", "pod"),
            _pod("probe-a-0", "mc-control-plane", "10.244.0.2", "probe-a", "pod"),
            _pod("probe-b-0", "mc-control-plane", "10.244.0.3", "probe-b", "pod"),
        ]
    }
    services = {
        "items": [
            {
                "metadata": {"name": "probe-udp"},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.7.8",
                    "ports": [{"protocol": "UDP", "port": 53, "targetPort": 30080}],
                },
            },
            {  # a named target port, a headless Service: not what the matrix can probe
                "metadata": {"name": "named"},
                "spec": {"clusterIP": "10.96.7.9", "ports": [{"port": 80, "targetPort": "web"}]},
            },
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": []}},
        ]
    }

    def endpoint(pod: str, ready: bool) -> dict[str, object]:
        return {
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": "minicni-e2e", "name": pod},
        }

    slices = {
        "items": [
            {
                "metadata": {"labels": {"kubernetes.io/service-name": "probe-udp"}},
                "endpoints": [endpoint("probe-a-1", True), endpoint("probe-a-0", True)],
            },
            {  # a second slice of the same Service: a pod not ready, one not in the inventory
                "metadata": {"labels": {"kubernetes.io/service-name": "probe-udp"}},
                "endpoints": [endpoint("probe-b-0", False), endpoint("elsewhere", True)],
            },
        ]
    }
    inventory = inventory_from(pods, "mc", "kind", services, slices)
    (service,) = inventory.services
    assert (service.name, service.proto, service.cluster_ip, service.port) == (
        "probe-udp",
        "udp",
        "10.96.7.8",
        53,
    )
    assert (service.target_port, service.endpoints) == (30080, ("control-plane/a", "worker/a"))
    assert inventory_from(pods, "mc").services == ()


def test_an_ipv6_service_is_left_out_the_service_probes_speak_ipv4() -> None:
    pods = {"items": [_pod("probe-a-1", "mc-worker", "fd00:10:244:1::2", "probe-a", "pod")]}
    services = {
        "items": [
            {
                "metadata": {"name": "probe-tcp"},
                "spec": {
                    "clusterIP": "fd00:10:96::20",
                    "ports": [{"protocol": "TCP", "port": 80, "targetPort": 30080}],
                },
            }
        ]
    }
    slices = {
        "items": [
            {
                "metadata": {"labels": {"kubernetes.io/service-name": "probe-tcp"}},
                "endpoints": [
                    {
                        "conditions": {"ready": True},
                        "targetRef": {"namespace": "minicni-e2e", "name": "probe-a-1"},
                    }
                ],
            }
        ]
    }
    assert inventory_from(pods, "mc", "kind", services, slices).services == ()
