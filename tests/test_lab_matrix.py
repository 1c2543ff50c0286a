"""Cases, verdicts and the runner. The runner test drives real probe processes over 127.0.0.1
through an executor that runs them locally: no root, no namespace, traffic only on loopback."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import pytest

from lab.executors import NODE, POD, Endpoint, Inventory, NetnsExecutor
from lab.matrix import (
    CASE_KINDS,
    NATED,
    NOT_APPLICABLE,
    OK,
    PROBE_ERROR,
    UNREACHABLE,
    Case,
    MatrixRunner,
    Observation,
    build_cases,
    case_kind,
    judge,
)

N1 = Endpoint("n1", NODE, "n1", "172.30.0.11", "ml1-n1")
N2 = Endpoint("n2", NODE, "n2", "172.30.0.12", "ml1-n2")
P10 = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "ml1-n1p0")
P11 = Endpoint("n1/p1", POD, "n1", "10.244.1.3", "ml1-n1p1")
P20 = Endpoint("n2/p0", POD, "n2", "10.244.2.2", "ml1-n2p0")
INVENTORY = Inventory.build([N1, N2, P10, P11, P20])


@pytest.mark.parametrize(
    ("src", "dst", "kind"),
    [
        (P10, P11, "pod->pod same node"),
        (P10, P20, "pod->pod other node"),
        (P10, N1, "pod->own node"),
        (P10, N2, "pod->other node"),
        (N1, P10, "node->pod same node"),
        (N1, P20, "node->pod other node"),
        (N1, N2, None),
        (P10, P10, None),
    ],
)
def test_case_kinds(src: Endpoint, dst: Endpoint, kind: str | None) -> None:
    assert case_kind(src, dst) == kind


def test_cases_cover_every_kind_and_protocol_with_distinct_ports() -> None:
    cases = build_cases(INVENTORY, ["icmp", "tcp", "udp"])
    assert {c.kind for c in cases} == set(CASE_KINDS)
    per_proto = {p: [c for c in cases if c.proto == p] for p in ("icmp", "tcp", "udp")}
    # 3 pods: 2 same-node pairs, 4 across; 3 own-node, 3 other-node; 2 + 1 node->pod, twice
    assert all(len(v) == 2 + 4 + 3 + 3 + 3 + 3 for v in per_proto.values())
    assert len({c.port for c in cases}) == len(cases)


def test_cases_can_be_restricted_to_some_kinds() -> None:
    cases = build_cases(INVENTORY, ["tcp"], kinds=["pod->pod other node"])
    assert {(c.src.name, c.dst.name) for c in cases} == {
        ("n1/p0", "n2/p0"),
        ("n1/p1", "n2/p0"),
        ("n2/p0", "n1/p0"),
        ("n2/p0", "n1/p1"),
    }


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="sctp"):
        build_cases(INVENTORY, ["sctp"])


def case(src: Endpoint = P10, dst: Endpoint = P20) -> Case:
    return Case(case_kind(src, dst) or "", "tcp", src, dst, 31000)


def sent(local: str, reply: bool = True) -> dict[str, object]:
    return {"local": local, "reply": reply}


def seen(src: str | None) -> dict[str, object]:
    return {"received": src is not None, "observed_src": src}


@pytest.mark.parametrize(
    ("observation", "verdict"),
    [
        (Observation(sent("10.244.1.2"), seen("10.244.1.2")), OK),
        (Observation(sent("10.244.1.2"), seen("172.30.0.11")), NATED),
        (Observation(sent("10.244.1.2", reply=False), seen(None)), UNREACHABLE),
        (Observation(sent("10.244.1.2", reply=False), seen("10.244.1.2")), UNREACHABLE),
        (Observation(sent("10.244.1.2", reply=False), seen("172.30.0.11")), NATED),
        (Observation(error="receiver did not start"), PROBE_ERROR),
        (Observation(sent("10.244.1.2"), {"error": "PermissionError"}), PROBE_ERROR),
        (Observation(None, seen("10.244.1.2")), PROBE_ERROR),
    ],
)
def test_judge_pod_source(observation: Observation, verdict: str) -> None:
    assert judge(case(), observation)[0] == verdict


def test_a_pod_must_be_seen_with_its_own_address_whatever_it_sent_from() -> None:
    # the sender's socket left from another address (e.g. a second one on the pod): not the pod's
    observation = Observation(sent("10.244.1.99"), seen("10.244.1.99"))
    assert judge(case(), observation)[0] == NATED


def test_a_node_is_judged_by_the_address_it_chose_to_send_from() -> None:
    # node -> local pod leaves from the bridge address: that is the node's own address too
    observation = Observation(sent("10.244.1.1"), seen("10.244.1.1"))
    assert judge(case(N1, P10), observation) == (OK, "")
    masqueraded = Observation(sent("10.244.1.1"), seen("172.30.0.11"))
    assert judge(case(N1, P10), masqueraded)[0] == NATED


class LoopbackExecutor:
    """Runs probes right here, receivers listening on 127.0.0.1 only. `break_port` makes every
    receiver listen elsewhere (the probe never arrives); `recv_error` makes receivers fail."""

    def __init__(self, break_port: bool = False, recv_error: bool = False) -> None:
        self.break_port = break_port
        self.recv_error = recv_error

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if argv[0] == "recv":
            argv += ["--bind", "127.0.0.1"]
            if self.break_port:
                argv[argv.index("--port") + 1] = str(int(argv[argv.index("--port") + 1]) + 1)
            if self.recv_error:
                argv += ["--bind", "192.0.2.1"]  # not an address of this host: bind fails
        return [sys.executable, "-m", "lab.probes", *argv]


def loopback_inventory(src_ip: str) -> Inventory:
    return Inventory.build(
        [
            Endpoint("a/p0", POD, "a", src_ip, "-"),
            Endpoint("b/p0", POD, "b", "127.0.0.1", "-"),
        ]
    )


def run_loopback(executor: LoopbackExecutor, src_ip: str = "127.0.0.1", retries: int = 0):  # type: ignore[no-untyped-def]
    inventory = loopback_inventory(src_ip)
    cases = [
        c
        for c in build_cases(inventory, ["tcp", "udp"], port_base=random.randint(40000, 60000))
        if c.dst.name == "b/p0"
    ]
    runner = MatrixRunner(executor, timeout=0.5, retries=retries, workers=4)
    return runner.run(inventory, cases)


def test_runner_ok_over_loopback() -> None:
    report = run_loopback(LoopbackExecutor())
    assert [c.verdict for c in report.cells] == [OK, OK]
    assert report.ok
    assert all(c.observation.receiver["observed_src"] == "127.0.0.1" for c in report.cells)  # type: ignore[index]


def test_runner_sees_a_wrong_source_as_nat() -> None:
    # the pod claims 127.0.0.2 but the probe leaves from 127.0.0.1: exactly what NAT looks like
    report = run_loopback(LoopbackExecutor(), src_ip="127.0.0.2")
    assert [c.verdict for c in report.cells] == [NATED, NATED]
    assert not report.ok


def test_runner_sees_a_lost_probe_as_unreachable_and_retries_it() -> None:
    report = run_loopback(LoopbackExecutor(break_port=True), retries=1)
    assert [c.verdict for c in report.cells] == [UNREACHABLE, UNREACHABLE]
    assert [c.attempts for c in report.cells] == [2, 2]
    assert all("reproduce" not in c.detail and c.reproduce for c in report.cells)


def test_runner_reports_a_probe_that_cannot_run_as_an_error() -> None:
    report = run_loopback(LoopbackExecutor(recv_error=True))
    assert [c.verdict for c in report.cells] == [PROBE_ERROR, PROBE_ERROR]
    assert "receiver" in report.cells[0].detail


class FlakyExecutor(LoopbackExecutor):
    """Breaks the first attempt of every cell only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        port = argv[list(argv).index("--port") + 1]
        self.break_port = argv[0] == "recv" and port not in self.seen
        if argv[0] == "recv":
            self.seen.add(port)
        return super().command(endpoint, argv)


def test_a_cell_that_passes_on_retry_is_ok_and_flaky() -> None:
    inventory = loopback_inventory("127.0.0.1")
    cases = [c for c in build_cases(inventory, ["udp"], port_base=random.randint(40000, 60000))]
    report = MatrixRunner(FlakyExecutor(), timeout=0.5, retries=2, workers=1).run(
        inventory, cases[:1]
    )
    (cell,) = report.cells
    assert (cell.verdict, cell.attempts, cell.flaky) == (OK, 2, True)
    assert report.flaky() == [cell]


def test_report_lookup_of_missing_cells_is_not_applicable() -> None:
    report = run_loopback(LoopbackExecutor())
    a, b = report.inventory.endpoints
    assert report.verdict("tcp", a, b) == OK
    assert report.verdict("icmp", a, b) == NOT_APPLICABLE


def test_netns_executor_runs_the_probe_module_in_the_named_namespace() -> None:
    argv = NetnsExecutor(python="/usr/bin/python3").command(P10, ["recv", "--proto", "udp"])
    assert argv == [
        "ip",
        "netns",
        "exec",
        "ml1-n1p0",
        "/usr/bin/python3",
        "-m",
        "lab.probes",
        "recv",
        "--proto",
        "udp",
    ]


def test_inventory_round_trips_and_refuses_duplicates() -> None:
    assert Inventory.from_mapping(INVENTORY.to_mapping()) == INVENTORY
    assert INVENTORY.nodes == (N1, N2)
    assert INVENTORY.pods == (P10, P11, P20)
    with pytest.raises(ValueError, match="unique"):
        Inventory.build([P10, P10])
