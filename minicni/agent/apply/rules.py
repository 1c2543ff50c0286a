"""Keep our policy rules (`from <own pod CIDR> lookup <our table>`, one per pod family) as the
plan says.

A rule carries our routing protocol number (FRA_PROTOCOL), like our routes: rules with that
number are ours, any other rule is never touched. One dump of the (few) rules of each family per
pass; a rule of ours that differs from the plan in any way (source after a podCIDR change, table,
priority, extra selectors) is deleted, and the planned one added if missing.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from minicni.agent.apply.changes import Failure
from minicni.agent.model.plan import PolicyRule
from minicni.defaults import ROUTE_PROTOCOL
from minicni.net import rules, wire
from minicni.net.rtnl import Rtnl
from minicni.net.rules import KernelRule
from minicni.net.wire import NetlinkError


@dataclass(frozen=True)
class RuleChanges:
    add: tuple[PolicyRule, ...] = ()
    delete: tuple[KernelRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add) or bool(self.delete)


@dataclass
class RuleResult:
    changed: int = 0
    present: int = 0
    """How many of the planned rules are in place after the pass."""
    failures: list[Failure[Any]] = field(default_factory=list)


def is_ours(rule: KernelRule) -> bool:
    return rule.protocol == ROUTE_PROTOCOL


def matches(rule: KernelRule, wanted: PolicyRule) -> bool:
    return (
        rule.priority == wanted.priority
        and rule.src == wanted.src
        and rule.table == wanted.table
        and rule.action == wire.FR_ACT_TO_TBL
        and not rule.selective
    )


def diff_rules(current: Iterable[KernelRule], wanted: Collection[PolicyRule]) -> RuleChanges:
    """Keep one rule of ours that matches each of `wanted`; delete every other rule of ours."""
    kept: set[PolicyRule] = set()
    delete: list[KernelRule] = []
    for rule in current:
        if not is_ours(rule):
            continue
        match = next((w for w in wanted if w not in kept and matches(rule, w)), None)
        if match is not None:
            kept.add(match)
        else:
            delete.append(rule)
    add = tuple(sorted((w for w in wanted if w not in kept), key=lambda w: w.src.version))
    return RuleChanges(add=add, delete=tuple(delete))


class RuleApplier:
    """Applies rule changes through the agent's rtnetlink client (one request each: at most a
    few)."""

    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl

    def current(self) -> list[KernelRule]:
        """Rules of both families (the kernel keeps a list per family)."""
        return rules.dump_rules(self._rtnl, wire.AF_INET) + rules.dump_rules(
            self._rtnl, wire.AF_INET6
        )

    def reconcile(self, wanted: Collection[PolicyRule]) -> RuleResult:
        changes = diff_rules(self.current(), wanted)
        result = RuleResult(present=len(wanted))
        # Add before deleting: a rule that moves (new podCIDR) never leaves a gap.
        for planned in changes.add:
            try:
                result.changed += self._add(planned)
            except Exception as error:  # the kernel's reason, reported by the caller
                result.present -= 1
                result.failures.append(Failure(planned, str(error)))
        for stale in changes.delete:
            try:
                self._delete(stale)
                result.changed += 1
            except Exception as error:
                result.failures.append(Failure(stale, str(error)))
        return result

    def _add(self, rule: PolicyRule) -> int:
        """1 if added, 0 if an identical rule appeared since the dump."""
        request = rules.rule_request(
            rule.src, table=rule.table, priority=rule.priority, protocol=ROUTE_PROTOCOL
        )
        try:
            self._rtnl.request(request, wire.RTM_NEWRULE, wire.CREATE_NEW)
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise
            return 0
        return 1

    def _delete(self, rule: KernelRule) -> None:
        try:
            self._rtnl.request(rules.delete_rule_request(rule), wire.RTM_DELRULE)
        except NetlinkError as error:
            if error.code not in (errno.ENOENT, errno.ESRCH):  # already gone: what we wanted
                raise
