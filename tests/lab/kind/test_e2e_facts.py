"""The e2e suite's reading of a dual-stack kind cluster, offline: each node's InternalIP and pod
CIDR of each family, paired as the agent pairs them for host-gw."""

from __future__ import annotations

from typing import Any

from e2e.test_kind_cluster import family_of, node_facts


class Nodes:
    """What `KindLab.nodes()` answers for a dual-stack worker and a single-stack one."""

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": "w1"},
                "spec": {
                    "podCIDR": "10.244.1.0/24",
                    "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
                },
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "172.18.0.3"},
                        {"type": "InternalIP", "address": "fc00:f853:ccd:e793::3"},
                        {"type": "Hostname", "address": "w1"},
                    ]
                },
            },
            {
                "metadata": {"name": "w2"},
                "spec": {"podCIDR": "10.244.2.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.4"}]},
            },
        ]


def test_each_family_pairs_the_nodes_address_with_its_pod_cidr() -> None:
    facts = node_facts(Nodes())  # type: ignore[arg-type]
    assert facts == {
        "w1": [
            ("172.18.0.3", "10.244.1.0/24"),
            ("fc00:f853:ccd:e793::3", "fd00:10:244:1::/64"),
        ],
        "w2": [("172.18.0.4", "10.244.2.0/24")],
    }
    assert (family_of("fd00::/64"), family_of("10.0.0.0/8")) == (6, 4)
