"""CNI versions: which exist, which commands each allows, and the result shape for each."""

from __future__ import annotations

from minicni.cni.errors import INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = SUPPORTED_VERSIONS[-1]

# The oldest config version at which each command exists (SPEC section 2).
_COMMAND_SINCE = {
    "ADD": "0.3.0",
    "DEL": "0.3.0",
    "CHECK": "0.4.0",
    "STATUS": "1.1.0",
    "GC": "1.1.0",
}


def parse(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(version)
    return int(parts[0]), int(parts[1]), int(parts[2])


def require_supported(version: object) -> str:
    if not isinstance(version, str) or not version:
        raise CniError(INCOMPATIBLE_VERSION, "network config has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version}",
            f"supported versions: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def require_command_allowed(command: str, version: str) -> None:
    since = _COMMAND_SINCE[command]
    if parse(version) < parse(since):
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"{command} is not defined for config version {version}",
            f"{command} needs cniVersion {since} or newer",
        )


def convert_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Express a result built in the current (1.x) shape in the shape of `version`.

    0.3.x and 0.4.0 add `version: "4"|"6"` to every IP config; 1.0.0 dropped it.
    """
    converted = dict(result, cniVersion=version)
    if parse(version) < (1, 0, 0):
        converted["ips"] = [
            dict(ip, version="6" if ":" in ip["address"] else "4") for ip in result.get("ips", [])
        ]
    return converted


def normalize_result(result: dict[str, Any]) -> dict[str, Any]:
    """Read a prevResult of any supported version into the current shape, checking the shape of
    every part that is used (code 7 naming the key)."""
    import ipaddress  # only CHECK gets here; VERSION and STATUS do not pay for it

    interfaces = _list_of_objects(result, "interfaces")
    for position, interface in enumerate(interfaces):
        for key in ("name", "mac", "sandbox"):
            _optional_string(interface, key, f"interfaces[{position}]")
    ips = _list_of_objects(result, "ips")
    for position, ip in enumerate(ips):
        where = f"ips[{position}]"
        _address(ip, "address", where, ipaddress.ip_interface, required=True)
        _address(ip, "gateway", where, ipaddress.ip_address)
        index = ip.get("interface")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise _invalid(f"{where}.interface", index, "must be an index into interfaces")
    for position, route in enumerate(_list_of_objects(result, "routes")):
        _address(
            route,
            "dst",
            f"routes[{position}]",
            lambda text: ipaddress.ip_network(text, False),
            required=True,
        )
        _address(route, "gw", f"routes[{position}]", ipaddress.ip_address)
    ips = [{k: v for k, v in ip.items() if k != "version"} for ip in ips]
    return dict(result, ips=ips)


def _invalid(key: str, value: object, why: str) -> CniError:
    return CniError(
        INVALID_NETWORK_CONFIG, f"invalid network config: prevResult.{key}: {why}", repr(value)
    )


def _list_of_objects(result: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = result.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _invalid(key, value, "must be a list of objects")
    return value


def _optional_string(part: dict[str, Any], key: str, where: str) -> None:
    if key in part and not isinstance(part[key], str):
        raise _invalid(f"{where}.{key}", part[key], "must be a string")


def _address(
    part: dict[str, Any],
    key: str,
    where: str,
    parse: Callable[[str], object],
    *,
    required: bool = False,
) -> None:
    if key not in part and not required:
        return
    value = part.get(key)
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parse(value)
    except ValueError:
        raise _invalid(f"{where}.{key}", value, "must be an IP address or CIDR") from None


def version_info() -> dict[str, Any]:
    return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
