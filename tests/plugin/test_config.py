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
    (rng,) = conf.ranges
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
    (rng,) = parse_netconf(raw(subnet="10.244.1.77/24")).ranges
    assert rng.subnet == IPv4Network("10.244.1.0/24")


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


def test_an_ipv6_subnet_is_an_ipv6_only_network() -> None:
    (rng,) = parse_netconf(raw(subnet="fd00:10:244:1::/64")).ranges
    assert (rng.version, str(rng.gateway)) == (6, "fd00:10:244:1::1")
    assert (str(rng.first), str(rng.last)) == (
        "fd00:10:244:1::1",
        "fd00:10:244:1:ffff:ffff:ffff:ffff",  # no broadcast in IPv6: host-local's range too
    )
    assert rng.size == 2**64 - 2  # the subnet less its network address and the gateway


def test_a_subnet_list_is_a_dual_stack_network_in_its_order() -> None:
    conf = parse_netconf(raw(subnet=["10.244.1.0/24", "fd00:10:244:1::/64"]))
    assert [(r.version, str(r.subnet)) for r in conf.ranges] == [
        (4, "10.244.1.0/24"),
        (6, "fd00:10:244:1::/64"),
    ]
    six_first = parse_netconf(raw(subnet=["fd00:10:244:1::/64", "10.244.1.0/24"]))
    assert [r.version for r in six_first.ranges] == [6, 4]


@pytest.mark.parametrize(
    ("subnet", "code", "key"),
    [
        (["10.244.1.0/24", "10.244.2.0/24"], 2, "subnet"),  # one per family
        (["fd00:1::/64", "fd00:2::/64"], 2, "subnet"),
        ([], 7, "subnet"),
        (["10.244.1.0/24", "fd00::/64", "10.9.0.0/24"], 7, "subnet"),
        (["10.244.1.0/24", "fd00::/127"], 7, "subnet[1]"),  # too small: /126 at most
        (["10.244.1.0/24", 6], 7, "subnet[1]"),
    ],
)
def test_a_bad_subnet_list_is_refused_naming_the_key(subnet: Any, code: int, key: str) -> None:
    err = parse_error(raw(subnet=subnet))
    assert err.code == code
    assert key in err.msg


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
    (rng,) = conf.ranges
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
    (rng,) = parse_netconf(raw(subnet=None, ipam=ipam)).ranges
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
        [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd00::/64"}], [{"subnet": "fd01::/64"}]],
        [],
        "10.10.0.0/24",
    ],
    ids=["two-sets-of-one-family", "two-ranges", "three-sets", "empty", "string"],
)
def test_more_than_one_range_is_code_2(ranges: Any) -> None:
    err = parse_error(raw(subnet=None, ipam={"ranges": ranges}))
    assert err.code == 2
    assert "ipam.ranges" in err.msg


def test_ranges_one_set_per_family_is_dual_stack() -> None:
    ipam = {
        "type": "host-local",
        "ranges": [
            [{"subnet": "10.10.0.0/24"}],
            [{"subnet": "fd00:10::/64", "rangeStart": "fd00:10::100", "gateway": "fd00:10::fe"}],
        ],
    }
    four, six = parse_netconf(raw(subnet=None, ipam=ipam)).ranges
    assert (four.version, six.version) == (4, 6)
    assert (str(six.first), str(six.gateway)) == ("fd00:10::100", "fd00:10::fe")


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"subnet": "fd00:10::/64", "gateway": "10.10.0.1"}, "ipam.ranges[1][0].gateway"),
        ({"subnet": "fd00:10::/64", "rangeEnd": "fd00:11::9"}, "ipam.ranges[1][0].rangeEnd"),
        ({"subnet": "fd00:10::/64", "gateway": "fd00:10::"}, "ipam.ranges[1][0].gateway"),
    ],
)
def test_an_ipv6_range_checks_its_addresses(spec: dict[str, Any], key: str) -> None:
    ipam = {"ranges": [[{"subnet": "10.10.0.0/24"}], [spec]]}
    err = parse_error(raw(subnet=None, ipam=ipam))
    assert (err.code, key in err.msg) == (7, True)
