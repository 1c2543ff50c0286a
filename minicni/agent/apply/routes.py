"""Bring the kernel's routes in line with the plan: to remote pod CIDRs in the main table, to
VXLAN peers' node IPs in our policy table, of both families.

Our routes carry a private protocol number, so one dump of that protocol over both tables is the
whole current state: routes missing are added, ours with a wrong gateway or device are replaced,
ours no longer planned are deleted, and routes of any other protocol are never touched (an `add`
that collides with a foreign route fails with EEXIST and is reported, not forced).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minicni.agent.apply.changes import Failure, Request, send_changes
from minicni.agent.model.plan import MAIN_TABLE, POLICY_TABLE, DstKey, Route, RouteKey
from minicni.defaults import ROUTE_PROTOCOL
from minicni.net import routes, wire
from minicni.net.routes import KernelRoute
from minicni.net.rtnl import Rtnl

OUR_TABLES = (MAIN_TABLE, POLICY_TABLE)
DEFAULT_PRIORITY = {4: 0, 6: 1024}
"""The metric the kernel gives a route added without one: IPv6's is IP6_RT_PRIO_USER."""


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

    def failed_deletes(self, table: int, version: int | None = None) -> int:
        """Our routes in `table` (of IP version `version`, else of any) that could not go."""
        return sum(
            1
            for failure in self.failures
            if isinstance(failure.item, KernelRoute)
            and failure.item.table == table
            and version in (None, failure.item.dst.version)
        )


def planned_key(
    route: KernelRoute, dst: DstKey, devices_by_index: Mapping[int, str]
) -> RouteKey | None:
    """The `Route.key` this kernel route (whose `dst_key` is `dst`) amounts to, or None if it
    matches no route we plan. `devices_by_index`: our VXLAN devices, ifindex -> name."""
    if route.gateway is None or route.priority != DEFAULT_PRIORITY[route.dst.version]:
        return None
    device = devices_by_index.get(route.oif)
    if device is not None and not route.onlink:
        return None
    src = int(route.prefsrc) if route.prefsrc is not None else None
    return (*dst, int(route.gateway), device, src)


def diff_routes(
    current: Iterable[KernelRoute],
    desired: Iterable[Route],
    devices: Mapping[str, int],
) -> RouteChanges:
    """`devices`: our VXLAN devices that exist, name -> ifindex."""
    by_index = {index: name for name, index in devices.items()}
    wanted = {route.dst_key: route for route in desired}
    present: dict[DstKey, RouteKey] = {}
    delete: list[KernelRoute] = []
    for route in current:
        dst = route.dst_key
        planned = planned_key(route, dst, by_index)
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
    """Applies route changes through the agent's rtnetlink client, in batches."""

    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl

    def current(self) -> list[KernelRoute]:
        """Our routes of both families (an IPv4 cluster has none of IPv6: one empty dump)."""
        return [
            route
            for family in (wire.AF_INET, wire.AF_INET6)
            for route in routes.dump_routes(
                self._rtnl, family=family, protocol=ROUTE_PROTOCOL, tables=OUR_TABLES
            )
        ]

    def reconcile(self, desired: Iterable[Route], devices: Mapping[str, int]) -> RouteResult:
        """`devices`: our VXLAN devices that exist, name -> ifindex."""
        desired = list(desired)
        changes = diff_routes(self.current(), desired, devices)
        result = RouteResult()
        for route in desired:
            result.counts(route.table).total += 1
        if not changes:
            return result
        # Delete first: a podCIDR that moved to another node frees its old destination.
        delete_failures = send_changes(
            self._rtnl, changes.delete, _delete_request, tolerate=(errno.ESRCH,)
        )
        add_failures = send_changes(
            self._rtnl, changes.add, lambda r: _change_request(r, wire.CREATE_NEW, devices)
        )
        replace_failures = send_changes(
            self._rtnl,
            changes.replace,
            lambda r: _change_request(r, wire.CREATE_OR_REPLACE, devices),
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


def _change_request(route: Route, flags: int, devices: Mapping[str, int]) -> Request:
    """Add (CREATE_NEW: a foreign route in the way is reported) or replace one of our routes;
    a VXLAN route goes onlink through its device."""
    oif = devices.get(route.device) if route.device is not None else None
    if route.device is not None and oif is None:
        raise RuntimeError(f"route {route.dst} needs {route.device}, which is absent")
    message = routes.route_request(
        route.dst,
        route.gateway,
        table=route.table,
        protocol=ROUTE_PROTOCOL,
        oif=oif,
        onlink=route.device is not None,
        prefsrc=route.src,
    )
    return message, wire.RTM_NEWROUTE, flags


def _delete_request(route: KernelRoute) -> Request:
    """The route as dumped (any type: 0), so exactly it goes."""
    message = routes.route_request(
        route.dst,
        route.gateway,
        table=route.table,
        protocol=ROUTE_PROTOCOL,
        priority=route.priority,
        route_type=0,
    )
    return message, wire.RTM_DELROUTE, 0
