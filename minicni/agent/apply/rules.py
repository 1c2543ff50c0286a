"""Keep our one policy rule (`from <own pod CIDR> lookup <our table>`) as the plan says.

The rule carries our routing protocol number (FRA_PROTOCOL), like our routes: rules with that
number are ours, any other rule is never touched. One dump of the (few) rules per pass; a rule of
ours that differs from the plan in any way (source after a podCIDR change, table, priority, extra
selectors) is deleted, and the planned one added if missing. A host has a handful of rules, so
pyroute2 decodes them (unlike routes, see `rtnl_dump`), and a rule is deleted with every
attribute it was dumped with: the kernel takes missing ones as wildcards and could otherwise
delete a sibling.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from minicni.agent.apply.netlink_batch import Failure
from minicni.agent.model.plan import PolicyRule
from minicni.defaults import ROUTE_PROTOCOL

FR_ACT_TO_TBL = 1
_PLAIN_ATTRS = frozenset({"FRA_SRC", "FRA_PRIORITY", "FRA_TABLE", "FRA_PROTOCOL", "FRA_PAD"})
"""Attributes that select nothing beyond the source: any other makes a rule narrower."""
_SUPPRESSORS = frozenset({"FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP"})
_UNSET = 0xFFFFFFFF
"""-1: a suppressor the rule does not use (the kernel always dumps FRA_SUPPRESS_PREFIXLEN)."""
_HEADER = ("family", "dst_len", "src_len", "tos", "action", "flags")


@dataclass(frozen=True)
class KernelRule:
    """An IPv4 rule as dumped. `selective`: something beyond the source narrows it (a
    destination, TOS, interface, mark, an inverted match...). `fields`: every header field and
    attribute, as `IPRoute.rule` takes them."""

    priority: int
    src: IPv4Network | None
    table: int
    action: int
    protocol: int
    selective: bool = False
    fields: tuple[tuple[str, Any], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class RuleChanges:
    add: PolicyRule | None = None
    delete: tuple[KernelRule, ...] = ()

    def __bool__(self) -> bool:
        return self.add is not None or bool(self.delete)


@dataclass
class RuleResult:
    changed: int = 0
    present: bool = False
    """Whether the planned rule is in place after the pass."""
    failures: list[Failure[Any]] = field(default_factory=list)


def kernel_rule(header: Mapping[str, int], attrs: Iterable[tuple[str, Any]]) -> KernelRule:
    """Build a `KernelRule` from a dumped rule's header fields and (name, value) attributes."""
    values = dict(attrs)
    selective = bool(header["dst_len"] or header["tos"] or header["flags"])
    for name, value in values.items():
        if name in _SUPPRESSORS:
            selective |= value != _UNSET
        elif name not in _PLAIN_ATTRS:
            selective = True
    src_len = header["src_len"]
    src = IPv4Network(f"{values['FRA_SRC']}/{src_len}") if src_len else None
    fields = {name: header[name] for name in _HEADER}
    fields.update({name[4:].lower(): value for name, value in values.items()})
    priority = int(values.get("FRA_PRIORITY", 0))
    fields["priority"] = priority  # absent means 0; pyroute2 would fill in its own default
    return KernelRule(
        priority=priority,
        src=src,
        table=int(values.get("FRA_TABLE", header.get("table", 0))),
        action=header["action"],
        protocol=int(values.get("FRA_PROTOCOL", 0)),
        selective=selective,
        fields=tuple(fields.items()),
    )


def is_ours(rule: KernelRule) -> bool:
    return rule.protocol == ROUTE_PROTOCOL


def matches(rule: KernelRule, wanted: PolicyRule) -> bool:
    return (
        rule.priority == wanted.priority
        and rule.src == wanted.src
        and rule.table == wanted.table
        and rule.action == FR_ACT_TO_TBL
        and not rule.selective
    )


def diff_rules(current: Iterable[KernelRule], wanted: PolicyRule | None) -> RuleChanges:
    """Keep one rule of ours that matches `wanted`; delete every other rule of ours."""
    kept = False
    delete: list[KernelRule] = []
    for rule in current:
        if not is_ours(rule):
            continue
        if wanted is not None and not kept and matches(rule, wanted):
            kept = True
        else:
            delete.append(rule)
    add = wanted if wanted is not None and not kept else None
    return RuleChanges(add=add, delete=tuple(delete))


class RuleApplier:
    """Applies rule changes through a pyroute2 IPRoute socket (one request each: at most a few)."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def current(self) -> list[KernelRule]:
        return [
            kernel_rule(message, message["attrs"])
            for message in self._ipr.get_rules(family=socket.AF_INET)
        ]

    def reconcile(self, wanted: PolicyRule | None) -> RuleResult:
        changes = diff_rules(self.current(), wanted)
        result = RuleResult(present=wanted is not None)
        # Add before deleting: a rule that moves (new podCIDR) never leaves a gap.
        if changes.add is not None:
            try:
                result.changed += self._add(changes.add)
            except Exception as error:  # the kernel's reason, reported by the caller
                result.present = False
                result.failures.append(Failure(changes.add, str(error)))
        for rule in changes.delete:
            try:
                self._delete(rule)
                result.changed += 1
            except Exception as error:
                result.failures.append(Failure(rule, str(error)))
        return result

    def _add(self, rule: PolicyRule) -> int:
        """1 if added, 0 if an identical rule appeared since the dump."""
        from pyroute2 import NetlinkError

        try:
            self._ipr.rule(
                "add",
                family=socket.AF_INET,
                priority=rule.priority,
                table=rule.table,
                action=FR_ACT_TO_TBL,
                src=str(rule.src.network_address),
                src_len=rule.src.prefixlen,
                protocol=ROUTE_PROTOCOL,
            )
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise
            return 0
        return 1

    def _delete(self, rule: KernelRule) -> None:
        from pyroute2 import NetlinkError

        try:
            self._ipr.rule("del", **dict(rule.fields))
        except NetlinkError as error:
            if error.code not in (errno.ENOENT, errno.ESRCH):  # already gone: what we wanted
                raise
