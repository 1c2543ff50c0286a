"""The network config, parsed once into a value (`NetConf`) with its defaults and validation.

Unknown keys are ignored (runtimes add `runtimeConfig`, `args`, `prevResult`...); a known key with a
bad value is code 7 naming the key, a value minicni deliberately does not support is code 2.

A network has one address range per IP family: `subnet` is a CIDR, or a list of one CIDR per
family (dual-stack: `["10.244.1.0/24", "fd00:10:244:1::/64"]`); host-local's `ipam.ranges` holds
one range set per family, each of one range. The pod gets an address of each.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, ip_address

from minicni import defaults
from minicni.cni.errors import INVALID_NETWORK_CONFIG, UNSUPPORTED_FIELD, CniError, invalid_config
from minicni.cni.validate import validate_interface_name, validate_network_name
from minicni.ipam.range import AddressRange
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from minicni.ipam.range import Address, Network

_PATH_MAX = 4095  # bytes, without the terminating NUL
_BUILTIN_IPAM_TYPES = ("", defaults.PLUGIN_NAME, "host-local")


class NetConf(Record):
    __slots__ = (
        "bridge",
        "cni_version",
        "data_dir",
        "dns",
        "hairpin",
        "is_default_gateway",
        "mtu",
        "name",
        "prev_result",
        "ranges",
    )

    def __init__(
        self,
        name: str,
        cni_version: str,
        bridge: str,
        ranges: tuple[AddressRange, ...],
        mtu: int | None,  # None: take the MTU of the default-route interface
        hairpin: bool,
        is_default_gateway: bool,
        data_dir: str,
        dns: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.cni_version = cni_version
        self.bridge = bridge
        self.ranges = ranges
        """One per IP family, in the config's order: an address of each goes to the pod."""
        self.mtu = mtu
        self.hairpin = hairpin
        self.is_default_gateway = is_default_gateway
        self.data_dir = data_dir
        self.dns: Mapping[str, Any] = dns or {}
        self.prev_result = prev_result

    @property
    def store_dir(self) -> str:
        return f"{self.data_dir.rstrip('/')}/{self.name}"

    @property
    def has_ipv6(self) -> bool:
        """Whether pods get an IPv6 address: then their interface keeps IPv6 address generation
        (its link-local address); a pod of an IPv4-only network comes up without it."""
        return any(address_range.version == 6 for address_range in self.ranges)

    @property
    def versions(self) -> tuple[int, ...]:
        """The IP versions pods get an address of, in the config's order."""
        return tuple(address_range.version for address_range in self.ranges)


def parse_netconf(raw: Mapping[str, Any]) -> NetConf:
    name = validate_network_name(raw.get("name"))
    plugin_type = raw.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise invalid_config("type", plugin_type, "is required (the plugin's name, minicni)")
    bridge = raw.get("bridge", defaults.BRIDGE)
    try:
        validate_interface_name(bridge if isinstance(bridge, str) else "")
    except CniError as err:
        raise invalid_config("bridge", bridge, err.msg) from None
    prev = raw.get("prevResult")
    if "prevResult" in raw and not isinstance(prev, dict):
        raise invalid_config("prevResult", prev, "must be an object")
    if "logFile" in raw:
        problem = log_file_problem(raw["logFile"])
        if problem:
            raise invalid_config("logFile", raw["logFile"], problem)
    return NetConf(
        name=name,
        cni_version=str(raw.get("cniVersion", "")),
        bridge=bridge,
        ranges=_address_ranges(raw),
        mtu=_optional_mtu(raw),
        hairpin=_bool(raw, "hairpinMode", True),
        is_default_gateway=_bool(raw, "isDefaultGateway", True),
        data_dir=_data_dir(raw),
        dns=_mapping(raw, "dns"),
        prev_result=prev,
    )


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise invalid_config(key, value, "must be true or false")
    return value


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise invalid_config(key, value, "must be an object")
    return value


def _optional_mtu(raw: Mapping[str, Any]) -> int | None:
    if "mtu" not in raw:
        return None
    value = raw["mtu"]
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise invalid_config("mtu", value, "must be an integer between 68 and 65535")
    return value


def _data_dir(raw: Mapping[str, Any]) -> str:
    ipam = raw.get("ipam")
    if not isinstance(ipam, dict):
        ipam = {}
    value = raw.get("dataDir", ipam.get("dataDir", defaults.DATA_DIR))
    problem = path_problem(value)
    if problem:
        raise invalid_config("dataDir", value, problem)
    return str(value)


def path_problem(value: object) -> str | None:
    """Why `value` is not a usable absolute path, or None."""
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be an absolute path"
    if "\0" in value:
        return "must not contain NUL"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "must be valid UTF-8 (it holds a lone surrogate)"
    if size > _PATH_MAX:
        return f"must be at most {_PATH_MAX} bytes"
    return None


def log_file_problem(value: object) -> str | None:
    """The log file is opened before the config is parsed: the executable checks it with this
    too, so a relative path never lands in the runtime's working directory."""
    return path_problem(value)


def _address_ranges(raw: Mapping[str, Any]) -> tuple[AddressRange, ...]:
    ipam = raw.get("ipam", {})
    if not isinstance(ipam, dict):
        raise invalid_config("ipam", ipam, "must be an object")
    ipam_type = ipam.get("type", "")
    if ipam_type not in _BUILTIN_IPAM_TYPES:
        raise CniError(
            UNSUPPORTED_FIELD,
            f"unsupported field: ipam.type={ipam_type!r}",
            "minicni has built-in IPAM; omit ipam.type or use host-local-style ipam.ranges",
        )
    ranges = ipam.get("ranges")
    if "subnet" in raw and ranges is not None:
        raise invalid_config("subnet", raw["subnet"], "give either subnet or ipam.ranges, not both")
    if ranges is None:
        if "subnet" not in raw:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                "invalid network config: subnet is required (or host-local-style ipam.ranges)",
            )
        return _ranges_from_subnet(raw["subnet"])
    if not isinstance(ranges, list) or not 1 <= len(ranges) <= 2:
        raise CniError(
            UNSUPPORTED_FIELD, "unsupported field: ipam.ranges", "one range set per IP family"
        )
    found = []
    for position, range_set in enumerate(ranges):
        if (
            not isinstance(range_set, list)
            or len(range_set) != 1
            or not isinstance(range_set[0], dict)
        ):
            raise CniError(
                UNSUPPORTED_FIELD,
                f"unsupported field: ipam.ranges[{position}]",
                "exactly one range in each range set",
            )
        found.append(_range_from(range_set[0], f"ipam.ranges[{position}][0].subnet"))
    return _one_per_family(found, "ipam.ranges")


def _ranges_from_subnet(value: object) -> tuple[AddressRange, ...]:
    if not isinstance(value, list):
        return (_range_from({"subnet": value}, "subnet"),)
    if not 1 <= len(value) <= 2:
        raise invalid_config("subnet", value, "must be a CIDR, or a list of one CIDR per family")
    found = [_range_from({"subnet": item}, f"subnet[{i}]") for i, item in enumerate(value)]
    return _one_per_family(found, "subnet")


def _one_per_family(found: list[AddressRange], key: str) -> tuple[AddressRange, ...]:
    if len({r.version for r in found}) != len(found):
        raise CniError(
            UNSUPPORTED_FIELD,
            f"unsupported field: {key}",
            f"one range per IP family, got two of IPv{found[0].version}",
        )
    return tuple(found)


def _range_from(spec: Mapping[str, Any], subnet_key: str) -> AddressRange:
    value = spec.get("subnet")
    try:
        subnet = ipaddress.ip_network(str(value), strict=False) if isinstance(value, str) else None
    except ValueError:
        subnet = None
    if subnet is None:
        raise invalid_config(
            subnet_key, value, "must be a CIDR such as 10.244.1.0/24 or fd00:10:244:1::/64"
        )
    longest = 30 if isinstance(subnet, IPv4Network) else 126
    if subnet.prefixlen > longest:
        raise invalid_config(subnet_key, value, f"prefix must be /{longest} or larger")
    hosts_first = subnet.network_address + 1
    # IPv4's last address is the broadcast address; IPv6 has none (host-local hands it out too)
    hosts_last = subnet.broadcast_address - (1 if isinstance(subnet, IPv4Network) else 0)
    base = subnet_key.rsplit(".", 1)[0] if "." in subnet_key else ""
    gateway = _address_in(spec, "gateway", subnet, base, default=hosts_first)
    first = _address_in(spec, "rangeStart", subnet, base, default=hosts_first)
    last = _address_in(spec, "rangeEnd", subnet, base, default=hosts_last)
    if int(first) > int(last):
        raise invalid_config(f"{base}.rangeStart", str(first), "is after rangeEnd")
    if first == last == gateway:
        raise invalid_config(subnet_key, value, "the range holds no address besides the gateway")
    return AddressRange(subnet=subnet, first=first, last=last, gateway=gateway)


def _address_in(
    spec: Mapping[str, Any], key: str, subnet: Network, base: str, default: Address
) -> Address:
    if key not in spec:
        return default
    full_key = f"{base}.{key}" if base else key
    family = f"an IPv{subnet.version} address"
    try:
        address = ip_address(spec[key] if isinstance(spec[key], str) else "")
    except ValueError:
        raise invalid_config(full_key, spec[key], f"must be {family}") from None
    if address.version != subnet.version:
        raise invalid_config(full_key, spec[key], f"must be {family}")
    reserved = {subnet.network_address}
    if isinstance(subnet, IPv4Network):
        reserved.add(subnet.broadcast_address)
    if address not in subnet or address in reserved:
        raise invalid_config(full_key, spec[key], f"must be a host address inside {subnet}")
    return address
