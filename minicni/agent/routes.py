"""Bring the kernel's routes to remote pod CIDRs in line with the plan.

Our routes carry a private protocol number, so one dump of that protocol is the whole current
state: routes missing are added, ours with a wrong gateway or device are replaced, ours no longer
planned are deleted, and routes of any other protocol are never touched (an `add` that collides
with a foreign route fails with EEXIST and is reported, not forced).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from minicni.agent import rtnl_dump
from minicni.agent.netlink_batch import Failure, send_batched
from minicni.agent.plan import Route, RouteKey
from minicni.agent.rtnl_dump import KernelRoute

RTPROT_MINICNI = 109
"""Private routing protocol number (unassigned in /etc/iproute2/rt_protos); marks our routes."""

_RT_TABLE_MAIN = 254
_RT_SCOPE_UNIVERSE = 0
_RTN_UNICAST = 1
_RTNH_F_ONLINK = 4


@dataclass(frozen=True)
class RouteChanges:
    add: tuple[Route, ...] = ()
    replace: tuple[Route, ...] = ()
    delete: tuple[KernelRoute, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.replace or self.delete)


@dataclass
class RouteResult:
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    failures: list[Failure[Any]] = field(default_factory=list)
    total: int = 0


def planned_key(route: KernelRoute, vxlan_ifindex: int | None, vxlan_name: str) -> RouteKey | None:
    """The `Route.key` this kernel route amounts to, or None if it matches no route we plan."""
    if route.gateway is None or route.priority != 0:
        return None
    device = None
    if vxlan_ifindex is not None and route.oif == vxlan_ifindex:
        if not route.onlink:
            return None
        device = vxlan_name
    src = int(route.prefsrc) if route.prefsrc is not None else None
    return (*route.dst_key, int(route.gateway), device, src)


def diff_routes(
    current: Iterable[KernelRoute],
    desired: Iterable[Route],
    vxlan_ifindex: int | None,
    vxlan_name: str,
) -> RouteChanges:
    wanted = {route.dst_key: route for route in desired}
    present: dict[tuple[int, int], RouteKey] = {}
    delete: list[KernelRoute] = []
    for route in current:
        dst = route.dst_key
        planned = planned_key(route, vxlan_ifindex, vxlan_name)
        if planned is None or dst not in wanted or dst in present:
            delete.append(route)
        else:
            present[dst] = planned
    add = [route for dst, route in wanted.items() if dst not in present]
    replace = [
        route for dst, route in wanted.items() if dst in present and present[dst] != route.key
    ]
    return RouteChanges(tuple(sorted(add)), tuple(sorted(replace)), tuple(delete))


class RouteApplier:
    """Applies route changes through one pyroute2 IPRoute socket."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def current(self) -> list[KernelRoute]:
        return rtnl_dump.dump_routes(RTPROT_MINICNI, _RT_TABLE_MAIN)

    def reconcile(
        self, desired: Iterable[Route], vxlan_ifindex: int | None, vxlan_name: str
    ) -> RouteResult:
        desired = list(desired)
        changes = diff_routes(self.current(), desired, vxlan_ifindex, vxlan_name)
        result = RouteResult(total=len(desired))
        if not changes:
            return result
        # Delete first: a podCIDR that moved to another node frees its old destination.
        delete_failures = send_batched(
            self._ipr, changes.delete, self._delete_message, self._delete_one
        )
        add_failures = send_batched(
            self._ipr,
            changes.add,
            lambda r: self._change_message(r, "create", vxlan_ifindex),
            lambda r: self._change_one(r, "add", vxlan_ifindex),
        )
        replace_failures = send_batched(
            self._ipr,
            changes.replace,
            lambda r: self._change_message(r, "replace", vxlan_ifindex),
            lambda r: self._change_one(r, "replace", vxlan_ifindex),
        )
        result.deleted = len(changes.delete) - len(delete_failures)
        result.added = len(changes.add) - len(add_failures)
        result.replaced = len(changes.replace) - len(replace_failures)
        result.failures = [*delete_failures, *add_failures, *replace_failures]
        result.total = len(desired) - len(add_failures) - len(replace_failures)
        return result

    @staticmethod
    def _fields(route: Route, vxlan_ifindex: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "dst": str(route.dst.network_address),
            "dst_len": route.dst.prefixlen,
            "gateway": str(route.gateway),
            "table": _RT_TABLE_MAIN,
            "proto": RTPROT_MINICNI,
            "scope": _RT_SCOPE_UNIVERSE,
            "type": _RTN_UNICAST,
        }
        if route.device is not None:
            if vxlan_ifindex is None:
                raise RuntimeError(f"route {route.dst} needs {route.device}, which is absent")
            fields["oif"] = vxlan_ifindex
            fields["flags"] = _RTNH_F_ONLINK
        if route.src is not None:
            fields["prefsrc"] = str(route.src)
        return fields

    def _change_message(self, route: Route, mode: str, vxlan_ifindex: int | None) -> Any:
        from pyroute2.netlink.nlsocket import NetlinkRequest
        from pyroute2.netlink.rtnl import RTM_NEWROUTE

        fields = self._fields(route, vxlan_ifindex)
        return _rtmsg(RTM_NEWROUTE, NetlinkRequest.flags[mode], fields)

    def _change_one(self, route: Route, command: str, vxlan_ifindex: int | None) -> None:
        self._ipr.route(command, **self._fields(route, vxlan_ifindex))

    @staticmethod
    def _delete_fields(route: KernelRoute) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "dst": str(route.dst.network_address),
            "dst_len": route.dst.prefixlen,
            "table": _RT_TABLE_MAIN,
            "proto": RTPROT_MINICNI,
            "priority": route.priority,
        }
        if route.gateway is not None:
            fields["gateway"] = str(route.gateway)
        return fields

    def _delete_message(self, route: KernelRoute) -> Any:
        from pyroute2.netlink.nlsocket import NetlinkRequest
        from pyroute2.netlink.rtnl import RTM_DELROUTE

        return _rtmsg(RTM_DELROUTE, NetlinkRequest.flags["req"], self._delete_fields(route))

    def _delete_one(self, route: KernelRoute) -> None:
        import errno

        from pyroute2 import NetlinkError

        try:
            self._ipr.route("del", **self._delete_fields(route))
        except NetlinkError as error:
            if error.code != errno.ESRCH:  # already gone: what we wanted
                raise


_HEADER_FIELDS = ("dst_len", "table", "proto", "scope", "type", "flags")
_ATTRS = {
    "dst": "RTA_DST",
    "gateway": "RTA_GATEWAY",
    "oif": "RTA_OIF",
    "priority": "RTA_PRIORITY",
    "prefsrc": "RTA_PREFSRC",
}


def _rtmsg(msg_type: int, flags: int, fields: dict[str, Any]) -> Any:
    from pyroute2.netlink import NLM_F_ACK
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    message = rtmsg()
    message["family"] = 2
    for name in _HEADER_FIELDS:
        message[name] = fields.get(name, 0)
    message["attrs"] = [(_ATTRS[name], fields[name]) for name in _ATTRS if name in fields]
    message["header"]["type"] = msg_type
    message["header"]["flags"] = flags | NLM_F_ACK
    return message
