"""The kube-proxy stand-in: the rules of kube-proxy's iptables mode for ClusterIP Services, as
iptables-restore text, checked rule by rule against kube-proxy's own shapes."""

from __future__ import annotations

import pytest

from lab.cluster.kubeproxy import (
    ServiceEndpoint,
    ServicePort,
    endpoint_chain,
    jump_rule,
    probability,
    render_ruleset,
    service_chain,
)

WEB = ServicePort("ns1", "svc1", "p80", "tcp", "10.20.30.41", 80)
EP1, EP2, EP3 = (ServiceEndpoint(f"10.180.0.{i}", 8080) for i in (1, 2, 3))


def test_chain_names_are_kube_proxys_hashes() -> None:
    # kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go: ns1/svc1:p80 tcp, 10.180.0.1:80
    assert service_chain(WEB) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert endpoint_chain(WEB, ServiceEndpoint("10.180.0.1", 80)) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    unnamed = ServicePort("ns1", "svc1", "", "tcp", "10.20.30.41", 80)
    assert unnamed.port_name_string == "ns1/svc1"
    assert service_chain(unnamed) != service_chain(WEB)


def test_probabilities_spread_connections_evenly() -> None:
    assert [probability(n) for n in (3, 2)] == ["0.3333333333", "0.5000000000"]


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def test_a_service_with_three_endpoints() -> None:
    text = render_ruleset([(WEB, [EP1, EP2, EP3])], "10.0.0.0/8")
    lines = lines_of(text)
    svc = service_chain(WEB)
    seps = [endpoint_chain(WEB, ep) for ep in (EP1, EP2, EP3)]
    assert lines[0] == "*nat" and lines[-1] == "COMMIT" and text.endswith("\n")
    declared = [line for line in lines if line.startswith(":")]
    assert declared == [
        f":{chain} - [0:0]"
        for chain in ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", svc, *seps)
    ]
    match = '-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.20.30.41 --dport 80'
    assert f"-A KUBE-SERVICES {match} -j {svc}" in lines
    # sources outside the cluster CIDR (the node itself) are masqueraded
    assert f"-A {svc} {match} ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ" in lines
    balance = [line for line in lines if line.startswith(f"-A {svc} -m comment")]
    assert balance[1:] == [
        f'-A {svc} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:8080" -m statistic '
        f"--mode random --probability 0.3333333333 -j {seps[0]}",
        f'-A {svc} -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:8080" -m statistic '
        f"--mode random --probability 0.5000000000 -j {seps[1]}",
        f'-A {svc} -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:8080" -j {seps[2]}',
    ]
    assert [line for line in lines if line.startswith(f"-A {seps[0]} ")] == [
        f"-A {seps[0]} -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
        f"-A {seps[0]} -m comment --comment ns1/svc1:p80 -m tcp -p tcp "
        "-j DNAT --to-destination 10.180.0.1:8080",
    ]


def test_the_masquerade_machinery_and_the_hooks() -> None:
    lines = lines_of(render_ruleset([(WEB, [EP1])], "10.0.0.0/8"))
    for rule in (
        '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ):
        assert rule in lines
    # one endpoint: no statistic match, it takes everything
    assert not [line for line in lines if "statistic" in line]


def test_jumps_already_there_are_not_added_again() -> None:
    present = {
        jump_rule("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
        jump_rule("POSTROUTING", "kubernetes postrouting rules", "KUBE-POSTROUTING"),
    }
    inserted = [
        line for line in lines_of(render_ruleset([], "10.0.0.0/8", present)) if "-I " in line
    ]
    assert inserted == [
        '-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    ]


def test_udp_and_a_service_without_endpoints() -> None:
    dns = ServicePort("kube-system", "kube-dns", "dns", "udp", "10.96.0.10", 53)
    empty = ServicePort("ns1", "empty", "", "tcp", "10.96.0.11", 80)
    text = render_ruleset(
        [(dns, [ServiceEndpoint("10.244.1.5", 53)]), (empty, [])], "10.244.0.0/16"
    )
    assert "-m udp -p udp -j DNAT --to-destination 10.244.1.5:53" in text
    assert "10.96.0.11" not in text  # kube-proxy rejects those in the filter table: left out


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServicePort("ns", 'a" -j ACCEPT', "", "tcp", "10.96.0.1", 80),
        lambda: ServicePort("ns", "a", "p", "sctp", "10.96.0.1", 80),
        lambda: ServicePort("ns", "a", "p", "tcp", "fd00::1", 80),
        lambda: ServicePort("ns", "a", "p", "tcp", "10.96.0.1", 0),
        lambda: ServiceEndpoint("10.244.1.5; -F", 53),
        lambda: ServiceEndpoint("10.244.1.5", 70000),
    ],
)
def test_nothing_that_could_change_the_ruleset_gets_in(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_the_cluster_cidr_must_be_ipv4() -> None:
    with pytest.raises(ValueError):
        render_ruleset([(WEB, [EP1])], "fd00::/64")
