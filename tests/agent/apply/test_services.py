"""What Services need from the node, against a scripted kernel: br_netfilter from its sysctl,
the bridge's switches turned on where they are off, ports without hairpin named; and the
warnings each failed check gives."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from minicni.agent.apply.services import ServiceChecks, check_services, service_warnings
from minicni.net import wire
from minicni.net.rtnl import Rtnl
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, link_reply


def bridge(netfilter: tuple[int, int] | None) -> Callable[[int], bytes]:
    info: dict[str, list[tuple[str, object]]] = {"attrs": [("IFLA_INFO_KIND", "bridge")]}
    if netfilter is not None:
        data = [("IFLA_BR_NF_CALL_IPTABLES", netfilter[0])]
        data.append(("IFLA_BR_NF_CALL_IP6TABLES", netfilter[1]))
        info["attrs"].append(("IFLA_INFO_DATA", {"attrs": data}))
    return lambda seq: link_reply(seq, 4, "minicni0", 0, IFLA_LINKINFO=info)


def ports(*hairpins: int) -> Callable[[int], bytes]:
    def answer(seq: int) -> bytes:
        data = b""
        for position, mode in enumerate(hairpins):
            protinfo = {"attrs": [("IFLA_BRPORT_MODE", mode)]}
            data += link_reply(
                seq,
                10 + position,
                f"veth{position}",
                family=wire.AF_BRIDGE,
                IFLA_MASTER=4,
                IFLA_PROTINFO=protinfo,
            )
        return data + done(seq)

    return answer


def loaded(tmp_path: Path) -> Path:
    sysctl = tmp_path / "bridge-nf-call-iptables"
    sysctl.write_text("1\n")
    return sysctl


def test_no_bridge_yet_only_br_netfilter_is_known(tmp_path: Path) -> None:
    sock = ScriptedSocket([fails(errno.ENODEV)])
    checks = check_services(Rtnl(sock), sysctl=tmp_path / "absent")
    assert checks == ServiceChecks(br_netfilter=False)
    assert sock.sent_types() == [wire.RTM_GETLINK]


def test_a_bridge_with_its_switches_off_gets_them_and_its_ports_are_read(tmp_path: Path) -> None:
    sock = ScriptedSocket([bridge((0, 0)), ack], [ack], [ports(1, 0, 0)])
    checks = check_services(Rtnl(sock), sysctl=loaded(tmp_path))
    assert sock.sent_types() == [wire.RTM_GETLINK, wire.RTM_NEWLINK, wire.RTM_GETLINK]
    assert checks == ServiceChecks(
        br_netfilter=True,
        bridge_found=True,
        bridge_netfilter=True,
        netfilter_turned_on=True,
        ports_without_hairpin=("veth1", "veth2"),
        ports=3,
    )


def test_a_bridge_that_is_right_costs_a_request_and_a_dump(tmp_path: Path) -> None:
    sock = ScriptedSocket([bridge((1, 1)), ack], [ports(1)])
    checks = check_services(Rtnl(sock), sysctl=loaded(tmp_path))
    assert (checks.bridge_netfilter, checks.netfilter_turned_on) == (True, False)
    assert service_warnings(checks) == {
        "br_netfilter": None,
        "bridge_netfilter": None,
        "hairpin": None,
    }


def test_a_refused_change_is_reported_not_raised(tmp_path: Path) -> None:
    sock = ScriptedSocket([bridge((0, 1)), ack], [fails(errno.EPERM)])
    checks = check_services(Rtnl(sock), sysctl=loaded(tmp_path))
    assert checks.failure is not None and checks.failure.startswith("checking minicni0: ")
    assert service_warnings(checks)["bridge_netfilter"] == f"Services: {checks.failure}"


def test_each_failed_check_says_what_breaks_and_what_to_do() -> None:
    warnings = service_warnings(
        ServiceChecks(
            br_netfilter=False,
            bridge_found=True,
            bridge_netfilter=True,
            ports_without_hairpin=tuple(f"veth{i}" for i in range(7)),
            ports=9,
        )
    )
    assert warnings["br_netfilter"] is not None
    assert "modprobe br_netfilter" in warnings["br_netfilter"]
    assert "CAP_SYS_MODULE" in warnings["br_netfilter"]
    assert warnings["hairpin"] == (
        "7 of the 9 ports of minicni0 without hairpin mode (veth0, veth1, veth2, veth3, veth4, "
        "...): their pods cannot reach themselves through their own Services; the plugin sets it "
        "on every pod it adds (hairpinMode), so re-create those pods"
    )
    assert warnings["bridge_netfilter"] is None
