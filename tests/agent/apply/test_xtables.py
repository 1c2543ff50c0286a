"""Backend detection as iptables-wrappers does it, against recorded iptables output; the firewall
reads only its own chains and the built-in chains that jump to them."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from minicni.agent.apply.firewall import IptablesFirewall
from minicni.agent.apply.xtables import Backend, Detector, count_rules
from minicni.agent.model.firewall import FORWARD_CHAIN, MASQUERADE_CHAIN
from minicni.agent.model.nodes import ClusterCidrs

KUBE_PROXY_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
COMMIT
*filter
:FORWARD DROP [0:0]
COMMIT
"""


class FakeIptables:
    """Answers iptables commands per backend from tables of chain -> -S output; records calls."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str, str], str] = {}  # (backend, table, chain) -> -S text
        self.saves: dict[str, str] = {"legacy": "", "nft": ""}
        self.mangle: dict[str, str] = {}
        self.calls: list[list[str]] = []
        self.restored: list[tuple[str, str]] = []
        self.restored_with: list[tuple[str, str]] = []  # (binary, payload)

    def __call__(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        backend = argv[0].split("-")[1]
        if argv[0].endswith("-restore"):
            self.restored.append((backend, stdin or ""))
            self.restored_with.append((argv[0], stdin or ""))
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[0].endswith("-save") and "-t" in argv:  # only mangle is read this way
            assert argv[argv.index("-t") + 1] == "mangle"
            return subprocess.CompletedProcess(argv, 0, self.mangle.get(backend, ""), "")
        if argv[0].endswith("-save"):
            return subprocess.CompletedProcess(argv, 0, self.saves[backend], "")
        table, chain = argv[argv.index("-t") + 1], argv[argv.index("-S") + 1]
        text = self.chains.get((backend, table, chain))
        if text is None:
            if chain in ("FORWARD", "POSTROUTING"):
                return subprocess.CompletedProcess(argv, 0, f"-P {chain} ACCEPT\n", "")
            return subprocess.CompletedProcess(argv, 1, "", "No chain/target/match by that name.")
        return subprocess.CompletedProcess(argv, 0, text, "")


def detector(fake: FakeIptables, tmp_path: Path, legacy_tables: str = "") -> Detector:
    names = tmp_path / "ip_tables_names"
    names.write_text(legacy_tables)
    names6 = tmp_path / "ip6_tables_names"
    names6.write_text(legacy_tables)
    return Detector(fake, names, which=lambda name: f"/usr/sbin/{name}", legacy_tables6=names6)


def test_count_rules_counts_rules_and_drop_policies_but_not_ours() -> None:
    ours = (
        "-A FORWARD -j MINICNI-FWD\n:MINICNI-FWD - [0:0]\n-A MINICNI-FWD -s 10.0.0.0/8 -j ACCEPT\n"
    )
    assert count_rules(KUBE_PROXY_NAT + ours) == 4  # 3 rules + FORWARD DROP


def test_kubelet_hint_in_nft_wins(tmp_path: Path) -> None:
    fake = FakeIptables()
    fake.mangle["nft"] = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
    fake.saves["legacy"] = KUBE_PROXY_NAT  # would win a count
    found = detector(fake, tmp_path, "nat filter mangle").detect()
    assert found.backend is Backend.NFT and "KUBE-IPTABLES-HINT" in found.reason
    assert fake.calls == [["iptables-nft-save", "-t", "mangle"]]  # one small table, no dump


def test_kubelet_hint_in_legacy_is_read_only_where_the_table_exists(tmp_path: Path) -> None:
    fake = FakeIptables()
    fake.mangle["legacy"] = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
    assert detector(fake, tmp_path, "mangle").detect().backend is Backend.LEGACY
    fake.calls.clear()
    # without a legacy mangle table, reading it would create it: not even asked
    detector(fake, tmp_path, "").detect()
    assert not any(c[0].startswith("iptables-legacy") and "mangle" in c for c in fake.calls)


def test_without_kubelet_the_backend_with_more_rules_wins(tmp_path: Path) -> None:
    fake = FakeIptables()
    fake.saves["legacy"] = KUBE_PROXY_NAT
    fake.saves["nft"] = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j MINICNI-FWD\nCOMMIT\n"
    found = detector(fake, tmp_path, "nat filter").detect()
    assert found.backend is Backend.LEGACY
    assert found.reason == "4 legacy rules, 0 nft rules"


def test_the_count_is_redone_once_a_minute_the_hint_every_time(tmp_path: Path) -> None:
    fake = FakeIptables()
    now = [0.0]
    names = tmp_path / "ip_tables_names"
    names.write_text("nat filter")
    found = Detector(fake, names, lambda n: "/sbin/x", count_every=60, clock=lambda: now[0])
    fake.saves["legacy"] = KUBE_PROXY_NAT
    assert found.detect().backend is Backend.LEGACY
    fake.saves["legacy"] = ""  # kube-proxy gone from legacy
    now[0] = 30
    assert found.detect().backend is Backend.LEGACY  # not counted again yet
    now[0] = 61
    assert found.detect().backend is Backend.NFT
    fake.mangle["legacy"] = ":KUBE-IPTABLES-HINT - [0:0]\n"
    names.write_text("nat filter mangle")
    assert found.detect().backend is Backend.LEGACY  # kubelet's hint: seen at once


def test_an_empty_node_is_nft(tmp_path: Path) -> None:
    fake = FakeIptables()
    assert detector(fake, tmp_path).detect().backend is Backend.NFT
    assert not any(c[0].startswith("iptables-legacy") for c in fake.calls)


def test_one_installed_backend_needs_no_detection(tmp_path: Path) -> None:
    fake = FakeIptables()
    names = tmp_path / "names"
    only = Detector(fake, names, which=lambda n: "/sbin/x" if "legacy" in n else None)
    assert only.detect().backend is Backend.LEGACY and fake.calls == []
    with pytest.raises(RuntimeError):
        Detector(fake, names, which=lambda n: None).detect()


CLUSTER = ClusterCidrs(IPv4Network("10.244.0.0/16"))
NODES: list[IPv4Address | IPv6Address] = [IPv4Address("192.168.50.11")]


def test_firewall_reads_only_its_chains_and_their_built_in_chains(tmp_path: Path) -> None:
    fake = FakeIptables()
    firewall = IptablesFirewall(detector(fake, tmp_path), fake)
    assert firewall.apply(CLUSTER, NODES) is True
    reads = [c for c in fake.calls if c[0] == "iptables-nft"]
    chains_read = {c[c.index("-S") + 1] for c in reads if "-S" in c}
    assert chains_read == {FORWARD_CHAIN, MASQUERADE_CHAIN, "FORWARD", "POSTROUTING"}
    tables_saved = [
        c[c.index("-t") + 1] for c in fake.calls if c[0].endswith("-save") and "-t" in c
    ]
    assert set(tables_saved) <= {"mangle"}  # detection's look at mangle, never nat or filter
    ((backend, payload),) = fake.restored
    assert backend == "nft" and f"-I FORWARD 1 -j {FORWARD_CHAIN}" in payload


def test_switching_backend_removes_our_chains_from_the_old_one(tmp_path: Path) -> None:
    fake = FakeIptables()
    # our chains exist in nft (an earlier agent); kubelet now says legacy
    fake.chains[("nft", "filter", FORWARD_CHAIN)] = f"-N {FORWARD_CHAIN}\n"
    fake.chains[("nft", "filter", "FORWARD")] = (
        f"-P FORWARD ACCEPT\n-A FORWARD -j {FORWARD_CHAIN}\n"
    )
    fake.mangle["legacy"] = ":KUBE-IPTABLES-HINT - [0:0]\n"
    firewall = IptablesFirewall(detector(fake, tmp_path, "mangle filter nat"), fake)
    firewall.apply(CLUSTER, NODES)
    assert firewall.backend is Backend.LEGACY
    removal = [payload for backend, payload in fake.restored if backend == "nft"]
    assert removal and f"-D FORWARD -j {FORWARD_CHAIN}" in removal[0]
    assert f"-X {FORWARD_CHAIN}" in removal[0]
    assert any(b == "legacy" and f"-I FORWARD 1 -j {FORWARD_CHAIN}" in p for b, p in fake.restored)


def test_an_ipv4_cluster_touches_no_ip6tables(tmp_path: Path) -> None:
    fake = FakeIptables()
    IptablesFirewall(detector(fake, tmp_path), fake).apply(CLUSTER, NODES)
    assert not any(c[0].startswith("ip6tables") for c in fake.calls)
    assert [binary for binary, _ in fake.restored_with] == ["iptables-nft-restore"]


def test_a_dual_stack_cluster_has_the_chains_in_both_families_of_one_backend(
    tmp_path: Path,
) -> None:
    fake = FakeIptables()
    dual = ClusterCidrs(IPv4Network("10.244.0.0/16"), IPv6Network("fd00:10:244::/56"))
    nodes = [*NODES, IPv6Address("fd00:50::11")]
    firewall = IptablesFirewall(detector(fake, tmp_path), fake)
    assert firewall.apply(dual, nodes) is True
    restores = dict(fake.restored_with)
    assert sorted(restores) == ["ip6tables-nft-restore", "iptables-nft-restore"]
    four, six = restores["iptables-nft-restore"], restores["ip6tables-nft-restore"]
    assert "-d 192.168.50.11/32 -j RETURN" in four and "fd00" not in four
    assert f"-A {MASQUERADE_CHAIN} -s fd00:10:244::/56 -d fd00:50::11/128 -j RETURN" in six
    assert f"-A {MASQUERADE_CHAIN} -d ff00::/8 -j RETURN" in six
    assert f"-A {FORWARD_CHAIN} -s fd00:10:244::/56 -j ACCEPT" in six and "192.168" not in six
    chains6 = {c[c.index("-S") + 1] for c in fake.calls if c[0] == "ip6tables-nft" and "-S" in c}
    assert chains6 == {FORWARD_CHAIN, MASQUERADE_CHAIN, "FORWARD", "POSTROUTING"}
