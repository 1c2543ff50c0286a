"""Our policy rule: which rules are ours, what the diff keeps, adds and deletes (no kernel)."""

import errno
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg

from minicni.agent.apply.rules import RuleApplier, diff_rules
from minicni.agent.model.plan import POLICY_RULE_PRIORITY, POLICY_TABLE, PolicyRule
from minicni.defaults import ROUTE_PROTOCOL
from minicni.net import wire
from minicni.net.rtnl import Rtnl
from minicni.net.rules import KernelRule
from minicni.net.wire import FR_ACT_TO_TBL
from tests.rtnl_fakes import ScriptedSocket, ack, done, fails, rule_reply

WANTED = PolicyRule(IPv4Network("10.244.1.0/24"))


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
    assert not diff_rules([*KERNEL_DEFAULTS, krule()], {WANTED})


def test_a_missing_rule_is_added_and_nothing_else_touched() -> None:
    foreign = krule(protocol=4)  # the same rule by hand (proto static): not ours
    changes = diff_rules([*KERNEL_DEFAULTS, foreign], {WANTED})
    assert changes.add == (WANTED,)
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
    changes = diff_rules([*KERNEL_DEFAULTS, stale], {WANTED})
    assert changes.add == (WANTED,)
    assert changes.delete == (stale,)


def test_duplicates_of_ours_are_deleted_one_kept() -> None:
    changes = diff_rules([krule(), krule()], {WANTED})
    assert changes.add == ()
    assert len(changes.delete) == 1


def test_no_vxlan_peer_left_deletes_our_rule_only() -> None:
    changes = diff_rules([*KERNEL_DEFAULTS, krule(), krule(protocol=4)], set())
    assert changes.add == ()
    assert changes.delete == (krule(),)


def our_rule(seq: int, src: str = "10.244.9.0") -> bytes:
    header = {"family": 2, "src_len": 24, "action": 1, "table": 252}
    attrs: list[tuple[str, Any]] = [
        ("FRA_TABLE", POLICY_TABLE),
        ("FRA_PRIORITY", POLICY_RULE_PRIORITY),
        ("FRA_SRC", src),
        ("FRA_PROTOCOL", ROUTE_PROTOCOL),
    ]
    return rule_reply(seq, header, attrs)


def test_a_moved_rule_is_added_before_the_old_one_goes() -> None:
    sock = ScriptedSocket([lambda seq: our_rule(seq) + done(seq)], [done], [ack], [ack])
    result = RuleApplier(Rtnl(sock)).reconcile({WANTED})
    assert (result.changed, result.present, result.failures) == (2, 1, [])
    assert sock.sent_types() == [*[wire.RTM_GETRULE] * 2, wire.RTM_NEWRULE, wire.RTM_DELRULE]
    assert sock.sent_message(2, fibmsg).get_attr("FRA_SRC") == "10.244.1.0"
    assert sock.sent_message(3, fibmsg).get_attr("FRA_SRC") == "10.244.9.0"


def test_a_rule_the_kernel_refuses_is_reported_and_not_present() -> None:
    sock = ScriptedSocket([done], [done], [fails(errno.EPERM)])
    result = RuleApplier(Rtnl(sock)).reconcile({WANTED})
    assert not result.present and result.changed == 0
    [failure] = result.failures
    assert failure.item == WANTED and "Operation not permitted" in failure.reason


def test_a_dual_stack_node_keeps_one_rule_per_family() -> None:
    wanted6 = PolicyRule(IPv6Network("fd00:10:244:1::/64"))
    six = KernelRule(POLICY_RULE_PRIORITY, wanted6.src, POLICY_TABLE, FR_ACT_TO_TBL, ROUTE_PROTOCOL)
    assert not diff_rules([krule(), six], {WANTED, wanted6})
    changes = diff_rules([krule()], {WANTED, wanted6})
    assert (changes.add, changes.delete) == ((wanted6,), ())
    changes = diff_rules([krule(), six], {WANTED})  # the last IPv6 peer left
    assert (changes.add, changes.delete) == ((), (six,))


def test_an_ipv6_rule_is_added_in_the_ipv6_list() -> None:
    wanted6 = PolicyRule(IPv6Network("fd00:10:244:1::/64"))
    sock = ScriptedSocket([done], [done], [ack])
    result = RuleApplier(Rtnl(sock)).reconcile({wanted6})
    assert (result.changed, result.present) == (1, 1)
    dumps = [sock.sent_message(i, fibmsg)["family"] for i in (0, 1)]
    assert dumps == [wire.AF_INET, wire.AF_INET6]
    added = sock.sent_message(2, fibmsg)
    assert (added["family"], added["src_len"], added.get_attr("FRA_SRC")) == (
        wire.AF_INET6,
        64,
        "fd00:10:244:1::",
    )
