"""The ADD result: what ADD made, in the shape of the CNI spec's result type."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from minicni.cni.skel import Request
    from minicni.ipam.store import Reservation
    from minicni.net.links import Link
    from minicni.plugin.config import NetConf


def add_result(
    conf: NetConf,
    request: Request,
    reservations: Sequence[Reservation],
    bridge: Link,
    host_end: Link,
    pod_end: Link,
) -> dict[str, Any]:
    """The result in the current (1.x) shape: the bridge, the host veth, the pod interface (index
    2, which the addresses refer to) in its sandbox, an address of each family of the network and
    a default route per family (`convert_result` adds 0.3.x's `version: "4"|"6"`)."""
    ranges = {address_range.version: address_range for address_range in conf.ranges}
    ips = []
    routes = []
    for reservation in reservations:
        address_range = ranges[reservation.address.version]
        gateway = str(address_range.gateway)
        ips.append(
            {
                "address": f"{reservation.address}/{address_range.subnet.prefixlen}",
                "gateway": gateway,
                "interface": 2,
            }
        )
        default = "::/0" if address_range.version == 6 else "0.0.0.0/0"
        routes.append({"dst": default, "gw": gateway})
    result: dict[str, Any] = {
        "interfaces": [
            {"name": bridge.name, "mac": bridge.mac},
            {"name": host_end.name, "mac": host_end.mac},
            {
                "name": pod_end.name,
                "mac": pod_end.mac,
                "mtu": pod_end.mtu,
                "sandbox": request.netns,
            },
        ],
        "ips": ips,
        "routes": routes if conf.is_default_gateway else [],
    }
    if conf.dns:
        result["dns"] = dict(conf.dns)
    return result
