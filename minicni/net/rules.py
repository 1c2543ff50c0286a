"""Policy routing rules: the typed dump, and the requests that add a rule or delete one exactly as
it was dumped.

A host has a handful of rules, so pyroute2 decodes them (unlike routes). A rule is deleted with
every attribute it was dumped with: the kernel takes missing ones as wildcards and could otherwise
delete a sibling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg

from minicni.net import wire
from minicni.net.rtnl import Rtnl

_PLAIN_ATTRS = frozenset({"FRA_SRC", "FRA_PRIORITY", "FRA_TABLE", "FRA_PROTOCOL", "FRA_PAD"})
"""Attributes that select nothing beyond the source: any other makes a rule narrower."""
_SUPPRESSORS = frozenset({"FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP"})
_UNSET = 0xFFFFFFFF
"""-1: a suppressor the rule does not use (the kernel always dumps FRA_SUPPRESS_PREFIXLEN)."""
_HEADER = ("family", "dst_len", "src_len", "tos", "action", "flags")


@dataclass(frozen=True)
class KernelRule:
    """A rule as dumped. `selective`: something beyond the source narrows it (a destination, TOS,
    interface, mark, an inverted match...). `fields`: every header field and attribute (by its
    name without FRA_, lower case), to delete exactly this rule."""

    priority: int
    src: wire.IPNetwork | None
    table: int
    action: int
    protocol: int
    selective: bool = False
    fields: tuple[tuple[str, Any], ...] = field(default=(), compare=False)


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
    src = ip_network(f"{values['FRA_SRC']}/{src_len}") if src_len else None
    fields = {name: header[name] for name in _HEADER}
    fields.update({name[4:].lower(): value for name, value in values.items()})
    priority = int(values.get("FRA_PRIORITY", 0))
    fields["priority"] = priority  # absent means 0
    return KernelRule(
        priority=priority,
        src=src,
        table=int(values.get("FRA_TABLE", header.get("table", 0))),
        action=header["action"],
        protocol=int(values.get("FRA_PROTOCOL", 0)),
        selective=selective,
        fields=tuple(fields.items()),
    )


def dump_rules(rtnl: Rtnl, family: int = wire.AF_INET) -> list[KernelRule]:
    """The rules of `family` (AF_INET or AF_INET6: the kernel keeps one list per family)."""
    request = fibmsg()
    request["family"] = family
    return [
        kernel_rule(message, message["attrs"]) for message in rtnl.dump(request, wire.RTM_GETRULE)
    ]


def rule_request(
    src: wire.IPNetwork,
    *,
    table: int,
    priority: int,
    protocol: int,
    action: int = wire.FR_ACT_TO_TBL,
) -> Any:
    """`from <src> lookup <table>` at `priority`, for RTM_NEWRULE (in `src`'s family's list)."""
    msg = fibmsg()
    msg["family"] = wire.AF_INET6 if src.version == 6 else wire.AF_INET
    msg["src_len"] = src.prefixlen
    msg["action"] = action
    msg["table"] = table if table < 256 else wire.RT_TABLE_COMPAT
    msg["attrs"] = [
        ("FRA_TABLE", table),
        ("FRA_PRIORITY", priority),
        ("FRA_SRC", str(src.network_address)),
        ("FRA_PROTOCOL", protocol),
    ]
    return msg


def delete_rule_request(rule: KernelRule) -> Any:
    """The dumped rule again, every header field and attribute, for RTM_DELRULE."""
    values = dict(rule.fields)
    msg = fibmsg()
    for name in _HEADER:
        msg[name] = values.pop(name, 0)
    table = int(values.get("table", 0))
    msg["table"] = table if table < 256 else wire.RT_TABLE_COMPAT
    msg["attrs"] = [(f"FRA_{name.upper()}", value) for name, value in values.items()]
    return msg
