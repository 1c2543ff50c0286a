"""What the agent's CNI server refuses before it runs a request (the shim then runs the plugin
in-process): a store it does not share, and an ADD while a family's forwarding is off, which the
agent, with /proc/sys read-only, cannot turn on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minicni.plugin import served

FORWARDING_OFF = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}


def config(data_dir: Path, subnet: str | list[str]) -> bytes:
    network = {"cniVersion": "1.0.0", "name": "n", "type": "minicni", "subnet": subnet}
    return json.dumps(dict(network, dataDir=str(data_dir))).encode()


@pytest.fixture
def sysctls(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "0"}
    monkeypatch.setattr(served, "read_sysctl", lambda key: values[key])
    return values


def test_an_add_needs_the_forwarding_of_each_family_of_its_network(
    sysctls: dict[str, str], tmp_path: Path
) -> None:
    dual = config(tmp_path / "ipam", ["10.9.0.0/24", "fd00:9::/64"])
    refused = served.refusal("ADD", dual, str(tmp_path / "ipam"))
    assert refused == served.Refusal(
        "ipv6_forwarding", "net.ipv6.conf.all.forwarding is off; the agent does not write it"
    )
    ipv4 = config(tmp_path / "ipam", "10.9.0.0/24")
    assert served.refusal("ADD", ipv4, str(tmp_path / "ipam")) is None  # IPv6 is not its business
    assert served.refusal("DEL", dual, str(tmp_path / "ipam")) is None  # nothing to forward
    sysctls["net.ipv6.conf.all.forwarding"] = "1"
    assert served.refusal("ADD", dual, str(tmp_path / "ipam")) is None
    sysctls["net.ipv4.ip_forward"] = "0"
    refused = served.refusal("ADD", dual, str(tmp_path / "ipam"))
    assert refused is not None and refused.reason == "ip_forward"
    ipv6_only = config(tmp_path / "ipam", "fd00:9::/64")
    assert served.refusal("ADD", ipv6_only, str(tmp_path / "ipam")) is None  # no IPv4 in it


def test_a_store_outside_the_agents_data_dir_is_refused_before_anything_else(
    sysctls: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = config(tmp_path / "elsewhere", ["10.9.0.0/24", "fd00:9::/64"])
    refused = served.refusal("ADD", elsewhere, str(tmp_path / "ipam"))
    assert refused is not None and refused.reason == "dataDir"
    assert str(tmp_path / "elsewhere") in refused.detail


@pytest.mark.parametrize("stdin", [b"", b"{not json", b"[]", b'{"cniVersion": "1.0.0"}'])
def test_a_config_that_does_not_parse_is_served_to_get_its_error(
    sysctls: dict[str, str], stdin: bytes
) -> None:
    sysctls.update(FORWARDING_OFF)
    assert served.refusal("ADD", stdin, "/var/lib/cni") is None


def test_a_config_is_parsed_once_for_admitting_and_running_every_request_that_brings_it(
    sysctls: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's pods come with one config: parsed once, not twice per request."""
    parsed: list[str] = []
    real = served.parse_netconf

    def counting(raw: dict[str, object]) -> served.NetConf:
        parsed.append(str(raw["name"]))
        return real(raw)

    monkeypatch.setattr(served, "parse_netconf", counting)
    monkeypatch.setattr(served, "_NETCONFS", {})
    ipam = str(tmp_path / "ipam")
    stdin = config(tmp_path / "ipam", "10.9.0.0/24")
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    for _ in range(3):
        assert served.refusal("DEL", stdin, ipam) is None
        assert served.serve(env, stdin, None, 0).code == 0  # DEL of nothing: nothing to do
    assert parsed == ["n"]
    other = stdin.replace(b'"name": "n"', b'"name": "m"')
    assert served.refusal("DEL", other, ipam) is None
    assert parsed == ["n", "m"]
    # a config with an error is not kept: each request gets the error from its own parse
    bad = stdin.replace(b"10.9.0.0/24", b"10.9.0.0/99")
    assert served.serve(env, bad, None, 0).code == 1
    assert served.serve(env, bad, None, 0).code == 1
    assert served._NETCONFS.keys() == {stdin, other}
