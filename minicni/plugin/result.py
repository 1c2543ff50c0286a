"""The ADD result: what ADD made, in the shape of the CNI spec's result type."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from typing import Any

    from minicni.cni.skel import Request
    from minicni.ipam.store import Reservation
    from minicni.net.links import Link
    from minicni.plugin.config import NetConf


def add_result(
    conf: NetConf,
    request: Request,
    reservation: Reservation,
    bridge: Link,
    host_end: Link,
    pod_end: Link,
) -> dict[str, Any]:
    """The result in the current (1.x) shape: the bridge, the host veth, the pod interface (index
    2, which the address refers to) in its sandbox, the address and the default route."""
    gateway = str(conf.range.gateway)
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
        "ips": [
            {
                "address": f"{reservation.address}/{conf.range.subnet.prefixlen}",
                "gateway": gateway,
                "interface": 2,
            }
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}] if conf.is_default_gateway else [],
    }
    if conf.dns:
        result["dns"] = dict(conf.dns)
    return result
