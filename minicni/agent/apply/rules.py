"""Keep our one policy rule (`from <own pod CIDR> lookup <our table>`) as the plan says.

The rule carries our routing protocol number (FRA_PROTOCOL), like our routes: rules with that
number are ours, any other rule is never touched. One dump of the (few) rules per pass; a rule of
ours that differs from the plan in any way (source after a podCIDR change, table, priority, extra
selectors) is deleted, and the planned one added if missing.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
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
    """Applies rule changes through the agent's rtnetlink client (one request each: at most a
    few)."""

    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl

    def current(self) -> list[KernelRule]:
        return rules.dump_rules(self._rtnl)

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
