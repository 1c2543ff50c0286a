"""Policy rules without a kernel: a dumped rule read into a `KernelRule` (what is selective, what
a deletion must name), the dump through a scripted socket, and the requests decoded back."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg

from minicni.net import rules, wire
from minicni.net.rtnl import Rtnl
from tests.rtnl_fakes import ScriptedSocket, ack, done, rule_reply

OURS = 109
TABLE = 28003
PRIORITY = 32109
UNSET = 0xFFFFFFFF


def dumped(attrs: list[tuple[str, Any]], **header: int) -> rules.KernelRule:
    fields = {"family": 2, "dst_len": 0, "src_len": 24, "tos": 0, "action": 1, "flags": 0}
    fields.update(header)
    return rules.kernel_rule(fields, attrs)


OUR_ATTRS: list[tuple[str, Any]] = [
    ("FRA_TABLE", TABLE),
    ("FRA_SUPPRESS_PREFIXLEN", UNSET),
    ("FRA_PROTOCOL", OURS),
    ("FRA_PRIORITY", PRIORITY),
    ("FRA_SRC", "10.244.1.0"),
]


def test_a_dumped_rule_is_read_with_every_field_kept_for_its_deletion() -> None:
    rule = dumped(OUR_ATTRS)
    assert rule == rules.KernelRule(
        PRIORITY, IPv4Network("10.244.1.0/24"), TABLE, wire.FR_ACT_TO_TBL, OURS
    )
    fields = dict(rule.fields)
    assert fields["table"] == TABLE and fields["src"] == "10.244.1.0"
    assert fields["src_len"] == 24 and fields["protocol"] == OURS


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
    rule = rules.kernel_rule(
        {"family": 2, "dst_len": 0, "src_len": 0, "tos": 0, "action": 1, "flags": 0},
        [("FRA_TABLE", 255), ("FRA_PROTOCOL", 2)],
    )
    assert (rule.priority, rule.src, rule.table) == (0, None, 255)
    assert dict(rule.fields)["priority"] == 0


HEADER = {"family": 2, "dst_len": 0, "src_len": 24, "tos": 0, "action": 1, "flags": 0}


def test_the_dump_reads_every_rule_of_the_family() -> None:
    def answer(seq: int) -> bytes:
        kernel = rule_reply(seq, dict(HEADER, src_len=0, table=254), [("FRA_TABLE", 254)])
        ours = rule_reply(seq, dict(HEADER, table=wire.RT_TABLE_COMPAT), OUR_ATTRS)
        return kernel + ours + done(seq)

    sock = ScriptedSocket([answer])
    kernel, ours = rules.dump_rules(Rtnl(sock))
    assert (kernel.table, kernel.src, kernel.protocol) == (254, None, 0)
    assert (ours.table, ours.src, ours.protocol) == (TABLE, IPv4Network("10.244.1.0/24"), OURS)
    assert sock.sent_message(0, fibmsg)["family"] == wire.AF_INET


def test_a_new_rule_names_its_table_priority_source_and_protocol() -> None:
    request = rules.rule_request(
        IPv4Network("10.244.1.0/24"), table=TABLE, priority=PRIORITY, protocol=OURS
    )
    sock = ScriptedSocket([ack])
    Rtnl(sock).request(request, wire.RTM_NEWRULE, wire.CREATE_NEW)
    sent = sock.sent_message(0, fibmsg)
    assert (sent["family"], sent["src_len"], sent["action"], sent["table"]) == (
        wire.AF_INET,
        24,
        wire.FR_ACT_TO_TBL,
        wire.RT_TABLE_COMPAT,
    )
    assert sent.get_attr("FRA_TABLE") == TABLE
    assert sent.get_attr("FRA_PRIORITY") == PRIORITY
    assert sent.get_attr("FRA_SRC") == "10.244.1.0"
    assert sent.get_attr("FRA_PROTOCOL") == OURS


def test_a_deletion_sends_the_rule_back_with_every_field_it_was_dumped_with() -> None:
    narrowed = [*OUR_ATTRS, ("FRA_FWMARK", 7)]
    rule = dumped(narrowed, flags=2)
    sock = ScriptedSocket([ack])
    Rtnl(sock).request(rules.delete_rule_request(rule), wire.RTM_DELRULE)
    sent = sock.sent_message(0, fibmsg)
    assert {key: sent[key] for key in HEADER} == dict(HEADER, flags=2)
    assert sent["table"] == wire.RT_TABLE_COMPAT
    sent_attrs = {name: value for name, value in sent["attrs"]}
    assert sent_attrs == dict(narrowed)
