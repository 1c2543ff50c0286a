"""Config parsing: defaults, each key's validation (code 7 naming the key), code 2 for what minicni
deliberately does not support, and the host-local-style `ipam.ranges` form."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from minicni.cni.errors import CniError
from minicni.defaults import BRIDGE, DATA_DIR
from minicni.plugin.config import parse_netconf


def raw(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": "minicni",
        "subnet": "10.244.1.0/24",
    }
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def parse_error(config: dict[str, Any]) -> CniError:
    with pytest.raises(CniError) as caught:
        parse_netconf(config)
    return caught.value


def test_defaults() -> None:
    conf = parse_netconf(raw())
    assert conf.name == "k8s-pod-network"
    assert conf.cni_version == "1.1.0"
    assert conf.bridge == BRIDGE == "minicni0"
    assert conf.mtu is None  # resolved from the default-route interface at ADD time
    assert conf.hairpin is True
    assert conf.is_default_gateway is True
    assert conf.data_dir == DATA_DIR == "/var/lib/cni/networks"
    assert conf.store_dir == "/var/lib/cni/networks/k8s-pod-network"
    assert dict(conf.dns) == {}
    assert conf.prev_result is None
    rng = conf.range
    assert rng.subnet == IPv4Network("10.244.1.0/24")
    assert rng.gateway == IPv4Address("10.244.1.1")
    assert (rng.first, rng.last) == (IPv4Address("10.244.1.1"), IPv4Address("10.244.1.254"))
    assert rng.size == 253  # .2 .. .254: the gateway is never handed out


def test_every_key_given() -> None:
    conf = parse_netconf(
        raw(
            bridge="cbr0",
            mtu=1450,
            hairpinMode=False,
            isDefaultGateway=False,
            dataDir="/tmp/x/",
            dns={"nameservers": ["10.96.0.10"]},
            prevResult={"ips": []},
            runtimeConfig={"ignored": True},
            unknownKey="ignored",
        )
    )
    assert conf.bridge == "cbr0"
    assert conf.mtu == 1450
    assert (conf.hairpin, conf.is_default_gateway) == (False, False)
    assert conf.store_dir == "/tmp/x/k8s-pod-network"
    assert conf.dns == {"nameservers": ["10.96.0.10"]}
    assert conf.prev_result == {"ips": []}


def test_host_address_in_subnet_is_accepted_as_its_network() -> None:
    assert parse_netconf(raw(subnet="10.244.1.77/24")).range.subnet == IPv4Network("10.244.1.0/24")


def test_ipam_data_dir_is_honoured() -> None:
    conf = parse_netconf(raw(ipam={"dataDir": "/srv/ipam"}))
    assert conf.data_dir == "/srv/ipam"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", None),
        ("name", ""),
        ("name", "../etc"),
        ("name", "a/b"),
        ("name", "net\n"),
        ("name", 5),
        ("type", None),
        ("type", ""),
        ("type", 3),
        ("bridge", ""),
        ("bridge", "b" * 16),
        ("bridge", "br/0"),
        ("bridge", 7),
        ("mtu", 0),
        ("mtu", 67),
        ("mtu", 65536),
        ("mtu", "1500"),
        ("mtu", 1500.0),
        ("mtu", True),
        ("hairpinMode", "true"),
        ("hairpinMode", 1),
        ("isDefaultGateway", "yes"),
        ("dataDir", "relative/path"),
        ("dataDir", ""),
        ("dataDir", 3),
        ("dataDir", "/a\0b"),
        ("dns", ["10.0.0.10"]),
        ("prevResult", "x"),
        ("subnet", "10.244.1.0/33"),
        ("subnet", "not-a-cidr"),
        ("subnet", 42),
        ("subnet", "10.244.1.0/31"),
        ("subnet", "10.244.1.0/32"),
    ],
)
def test_invalid_value_is_code_7_naming_the_key(key: str, value: Any) -> None:
    config = raw(**{key: value}) if value is not None else raw(**{key: None})
    err = parse_error(config)
    assert err.code == 7
    assert key in err.msg


def test_missing_subnet_is_code_7() -> None:
    err = parse_error(raw(subnet=None))
    assert err.code == 7
    assert "subnet" in err.msg


def test_ipv6_subnet_is_code_2() -> None:
    err = parse_error(raw(subnet="fd00:10:244:1::/64"))
    assert err.code == 2
    assert "subnet" in err.msg


@pytest.mark.parametrize("ipam_type", ["dhcp", "static", "whereabouts"])
def test_foreign_ipam_type_is_code_2(ipam_type: str) -> None:
    err = parse_error(raw(ipam={"type": ipam_type}))
    assert err.code == 2
    assert "ipam.type" in err.msg
    assert ipam_type in err.msg


def test_ipam_not_an_object_is_code_7() -> None:
    err = parse_error(raw(ipam="host-local"))
    assert (err.code, "ipam" in err.msg) == (7, True)


# -- ipam.ranges (host-local style) ------------------------------------------------------------
def ranges_config(range_spec: dict[str, Any], ipam_type: str = "host-local") -> dict[str, Any]:
    return raw(subnet=None, ipam={"type": ipam_type, "ranges": [[range_spec]]})


def test_ranges_form() -> None:
    conf = parse_netconf(
        ranges_config(
            {
                "subnet": "10.10.0.0/16",
                "rangeStart": "10.10.1.10",
                "rangeEnd": "10.10.1.20",
                "gateway": "10.10.0.254",
            }
        )
    )
    rng = conf.range
    assert rng.subnet == IPv4Network("10.10.0.0/16")
    assert (str(rng.first), str(rng.last), str(rng.gateway)) == (
        "10.10.1.10",
        "10.10.1.20",
        "10.10.0.254",
    )
    assert rng.size == 11  # the gateway is outside the range


@pytest.mark.parametrize("ipam_type", ["host-local", "minicni", None])
def test_ranges_form_defaults(ipam_type: str | None) -> None:
    ipam: dict[str, Any] = {"ranges": [[{"subnet": "10.10.0.0/29"}]]}
    if ipam_type is not None:
        ipam["type"] = ipam_type
    rng = parse_netconf(raw(subnet=None, ipam=ipam)).range
    assert (str(rng.first), str(rng.last), str(rng.gateway)) == (
        "10.10.0.1",
        "10.10.0.6",
        "10.10.0.1",
    )
    assert rng.size == 5


def test_subnet_and_ranges_together_is_code_7() -> None:
    config = raw(ipam={"ranges": [[{"subnet": "10.10.0.0/24"}]]})
    err = parse_error(config)
    assert err.code == 7


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"subnet": "10.10.0.0/24", "rangeStart": "10.10.1.5"}, "ipam.ranges[0][0].rangeStart"),
        ({"subnet": "10.10.0.0/24", "rangeEnd": "nope"}, "ipam.ranges[0][0].rangeEnd"),
        ({"subnet": "10.10.0.0/24", "gateway": "10.10.0.255"}, "ipam.ranges[0][0].gateway"),
        ({"subnet": "10.10.0.0/24", "gateway": "10.10.0.0"}, "ipam.ranges[0][0].gateway"),
        (
            {"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.9", "rangeEnd": "10.10.0.5"},
            "ipam.ranges[0][0].rangeStart",
        ),
        ({"subnet": "bogus"}, "ipam.ranges[0][0].subnet"),
        (
            {"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.1", "rangeEnd": "10.10.0.1"},
            "ipam.ranges[0][0].subnet",
        ),
    ],
)
def test_ranges_invalid_value_names_the_key(spec: dict[str, Any], key: str) -> None:
    err = parse_error(ranges_config(spec))
    assert err.code == 7
    assert key in err.msg


@pytest.mark.parametrize(
    "ranges",
    [
        [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.11.0.0/24"}]],
        [[{"subnet": "10.10.0.0/24"}, {"subnet": "10.11.0.0/24"}]],
        [],
        "10.10.0.0/24",
    ],
    ids=["two-sets", "two-ranges", "empty", "string"],
)
def test_more_than_one_range_is_code_2(ranges: Any) -> None:
    err = parse_error(raw(subnet=None, ipam={"ranges": ranges}))
    assert err.code == 2
    assert "ipam.ranges" in err.msg


def test_ranges_ipv6_is_code_2() -> None:
    err = parse_error(ranges_config({"subnet": "fd00::/64"}))
    assert err.code == 2
