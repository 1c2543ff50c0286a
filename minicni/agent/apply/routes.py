"""Bring the kernel's routes in line with the plan: to remote pod CIDRs in the main table, to
VXLAN peers' node IPs in our policy table.

Our routes carry a private protocol number, so one dump of that protocol over both tables is the
whole current state: routes missing are added, ours with a wrong gateway or device are replaced,
ours no longer planned are deleted, and routes of any other protocol are never touched (an `add`
that collides with a foreign route fails with EEXIST and is reported, not forced).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from minicni.agent.apply import rtnl_dump
from minicni.agent.apply.netlink_batch import Failure, send_batched
from minicni.agent.apply.rtnl_dump import KernelRoute
from minicni.agent.model.plan import MAIN_TABLE, POLICY_TABLE, DstKey, Route, RouteKey
from minicni.defaults import ROUTE_PROTOCOL

OUR_TABLES = (MAIN_TABLE, POLICY_TABLE)
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
class TableCounts:
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    total: int = 0
    """Planned routes in place after the pass."""


@dataclass
class RouteResult:
    tables: dict[int, TableCounts] = field(default_factory=dict)
    failures: list[Failure[Any]] = field(default_factory=list)

    def counts(self, table: int = MAIN_TABLE) -> TableCounts:
        return self.tables.setdefault(table, TableCounts())

    def failed_deletes(self, table: int) -> int:
        return sum(
            1
            for failure in self.failures
            if isinstance(failure.item, KernelRoute) and failure.item.table == table
        )


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
    table, dst, dst_len = route.dst_key
    return (table, dst, dst_len, int(route.gateway), device, src)


def diff_routes(
    current: Iterable[KernelRoute],
    desired: Iterable[Route],
    vxlan_ifindex: int | None,
    vxlan_name: str,
) -> RouteChanges:
    wanted = {route.dst_key: route for route in desired}
    present: dict[DstKey, RouteKey] = {}
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
    return RouteChanges(_by_key(add), _by_key(replace), tuple(delete))


def _by_key(routes: list[Route]) -> tuple[Route, ...]:
    """In a stable order, for readable reports (`key` leads with the table: never ambiguous)."""
    return tuple(sorted(routes, key=lambda route: route.key))


class RouteApplier:
    """Applies route changes through one pyroute2 IPRoute socket."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def current(self) -> list[KernelRoute]:
        return rtnl_dump.dump_routes(ROUTE_PROTOCOL, OUR_TABLES)

    def reconcile(
        self, desired: Iterable[Route], vxlan_ifindex: int | None, vxlan_name: str
    ) -> RouteResult:
        desired = list(desired)
        changes = diff_routes(self.current(), desired, vxlan_ifindex, vxlan_name)
        result = RouteResult()
        for route in desired:
            result.counts(route.table).total += 1
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
        failures: list[Failure[Any]] = [*delete_failures, *add_failures, *replace_failures]
        failed = {failure.item for failure in failures}
        for kernel_route in changes.delete:
            if kernel_route not in failed:
                result.counts(kernel_route.table).deleted += 1
        for route in changes.add:
            if route in failed:
                result.counts(route.table).total -= 1
            else:
                result.counts(route.table).added += 1
        for route in changes.replace:
            if route in failed:
                result.counts(route.table).total -= 1
            else:
                result.counts(route.table).replaced += 1
        result.failures = failures
        return result

    @staticmethod
    def _fields(route: Route, vxlan_ifindex: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "dst": str(route.dst.network_address),
            "dst_len": route.dst.prefixlen,
            "gateway": str(route.gateway),
            "table": route.table,
            "proto": ROUTE_PROTOCOL,
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
            "table": route.table,
            "proto": ROUTE_PROTOCOL,
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


_HEADER_FIELDS = ("dst_len", "proto", "scope", "type", "flags")
_ATTRS = {
    "dst": "RTA_DST",
    "gateway": "RTA_GATEWAY",
    "oif": "RTA_OIF",
    "priority": "RTA_PRIORITY",
    "prefsrc": "RTA_PREFSRC",
    "table": "RTA_TABLE",
}
_RT_TABLE_COMPAT = 252
"""What the one-byte header field holds for a table number above 255 (RTA_TABLE has it all)."""


def _rtmsg(msg_type: int, flags: int, fields: dict[str, Any]) -> Any:
    from pyroute2.netlink import NLM_F_ACK
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    message = rtmsg()
    message["family"] = 2
    for name in _HEADER_FIELDS:
        message[name] = fields.get(name, 0)
    table = fields["table"]
    message["table"] = table if table < 256 else _RT_TABLE_COMPAT
    # RTA_TABLE only where the header cannot hold the number: one attribute less to encode on
    # each of thousands of main-table routes.
    message["attrs"] = [
        (_ATTRS[name], fields[name])
        for name in _ATTRS
        if name in fields and (name != "table" or table > 255)
    ]
    message["header"]["type"] = msg_type
    message["header"]["flags"] = flags | NLM_F_ACK
    return message
