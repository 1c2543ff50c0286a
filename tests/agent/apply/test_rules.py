"""Our policy rule: which rules are ours, what the diff keeps, adds and deletes (no kernel)."""

from ipaddress import IPv4Network
from typing import Any

import pytest

from minicni.agent.apply.rules import FR_ACT_TO_TBL, KernelRule, diff_rules, kernel_rule
from minicni.agent.model.plan import POLICY_RULE_PRIORITY, POLICY_TABLE, PolicyRule
from minicni.defaults import ROUTE_PROTOCOL

WANTED = PolicyRule(IPv4Network("10.244.1.0/24"))
UNSET = 0xFFFFFFFF


def krule(
    src: str | None = "10.244.1.0/24",
    table: int = POLICY_TABLE,
    priority: int = POLICY_RULE_PRIORITY,
    protocol: int = ROUTE_PROTOCOL,
    selective: bool = False,
) -> KernelRule:
    network = IPv4Network(src) if src is not None else None
    return KernelRule(priority, network, table, FR_ACT_TO_TBL, protocol, selective)


KERNEL_DEFAULTS = [
    krule(None, 255, 0, protocol=2),
    krule(None, 254, 32766, protocol=2),
    krule(None, 253, 32767, protocol=2),
]


def test_the_planned_rule_in_place_needs_nothing() -> None:
    assert not diff_rules([*KERNEL_DEFAULTS, krule()], WANTED)


def test_a_missing_rule_is_added_and_nothing_else_touched() -> None:
    foreign = krule(protocol=4)  # the same rule by hand (proto static): not ours
    changes = diff_rules([*KERNEL_DEFAULTS, foreign], WANTED)
    assert changes.add == WANTED
    assert changes.delete == ()


@pytest.mark.parametrize(
    "stale",
    [
        krule("10.244.9.0/24"),  # our podCIDR changed
        krule(table=100),
        krule(priority=1000),
        krule(selective=True),  # e.g. narrowed by an `iif`
    ],
)
def test_a_rule_of_ours_that_differs_is_replaced(stale: KernelRule) -> None:
    changes = diff_rules([*KERNEL_DEFAULTS, stale], WANTED)
    assert changes.add == WANTED
    assert changes.delete == (stale,)


def test_duplicates_of_ours_are_deleted_one_kept() -> None:
    changes = diff_rules([krule(), krule()], WANTED)
    assert changes.add is None
    assert len(changes.delete) == 1


def test_no_vxlan_peer_left_deletes_our_rule_only() -> None:
    changes = diff_rules([*KERNEL_DEFAULTS, krule(), krule(protocol=4)], None)
    assert changes.add is None
    assert changes.delete == (krule(),)


def dumped(attrs: list[tuple[str, Any]], **header: int) -> KernelRule:
    fields = {"family": 2, "dst_len": 0, "src_len": 24, "tos": 0, "action": 1, "flags": 0}
    fields.update(header)
    return kernel_rule(fields, attrs)


OUR_ATTRS: list[tuple[str, Any]] = [
    ("FRA_TABLE", POLICY_TABLE),
    ("FRA_SUPPRESS_PREFIXLEN", UNSET),
    ("FRA_PROTOCOL", ROUTE_PROTOCOL),
    ("FRA_PRIORITY", POLICY_RULE_PRIORITY),
    ("FRA_SRC", "10.244.1.0"),
]


def test_a_dumped_rule_is_read_with_every_field_kept_for_its_deletion() -> None:
    rule = dumped(OUR_ATTRS)
    assert rule == krule()
    fields = dict(rule.fields)
    assert fields["table"] == POLICY_TABLE and fields["src"] == "10.244.1.0"
    assert fields["src_len"] == 24 and fields["protocol"] == ROUTE_PROTOCOL


@pytest.mark.parametrize(
    ("extra", "header"),
    [
        ([("FRA_IIFNAME", "eth0")], {}),
        ([("FRA_FWMARK", 1)], {}),
        ([("FRA_SUPPRESS_PREFIXLEN", 0)], {}),
        ([], {"dst_len": 8}),
        ([], {"flags": 2}),  # FIB_RULE_INVERT: `not from ...`
    ],
)
def test_anything_narrowing_a_dumped_rule_makes_it_selective(
    extra: list[tuple[str, Any]], header: dict[str, int]
) -> None:
    replaced = {name for name, _ in extra}
    attrs = [attr for attr in OUR_ATTRS if attr[0] not in replaced] + extra
    assert dumped(attrs, **header).selective


def test_a_rule_without_priority_attribute_is_priority_zero() -> None:
    rule = kernel_rule(
        {"family": 2, "dst_len": 0, "src_len": 0, "tos": 0, "action": 1, "flags": 0},
        [("FRA_TABLE", 255), ("FRA_PROTOCOL", 2)],
    )
    assert (rule.priority, rule.src, rule.table) == (0, None, 255)
    assert dict(rule.fields)["priority"] == 0
