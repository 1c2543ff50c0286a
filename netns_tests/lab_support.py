"""Helpers for the lab's root tests: a lab in a temporary state directory, the matrix, and the
expected verdict of every cell so a test can show exactly which cells differ."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from lab.executors import POD, Endpoint, Inventory, NetnsExecutor
from lab.matrix import MatrixReport, MatrixRunner, build_cases
from lab.netns import NetnsLab, lab_namespaces
from lab.report import render
from lab.topology import LabPlan, Topology, new_lab_id, plan

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

Expectation = Callable[[str, Endpoint, Endpoint], str]


@contextmanager
def running_lab(topology: Topology, state_root: str) -> Iterator[tuple[NetnsLab, Inventory]]:
    lab = NetnsLab(plan(topology, new_lab_id()), state_root)
    inventory = lab.up()
    try:
        yield lab, inventory
    finally:
        lab.down()
        assert lab_namespaces(lab.lab.lab_id) == []


def run_matrix(
    inventory: Inventory,
    protocols: tuple[str, ...] = ("icmp", "tcp", "udp"),
    retries: int = 1,
    timeout: float = 1.5,
    engine: str = "socket",
    workers: int = 12,
) -> MatrixReport:
    runner = MatrixRunner(
        NetnsExecutor(),
        timeout=timeout,
        retries=retries,
        workers=workers,
        engine=engine,
        launch_timeout=30.0,  # generous: these tests share the machine with others
    )
    return runner.run(inventory, build_cases(inventory, protocols))


def mismatches(report: MatrixReport, expected: Expectation) -> list[str]:
    """Cells whose verdict is not the expected one, as readable lines ('' when all match)."""
    wrong = []
    for cell in report.cells:
        want = expected(cell.case.proto, cell.case.src, cell.case.dst)
        if cell.verdict != want:
            wrong.append(f"{cell.case.label}: got {cell.verdict} want {want} ({cell.detail})")
    return wrong


def assert_matrix(report: MatrixReport, expected: Expectation) -> None:
    wrong = mismatches(report, expected)
    assert not wrong, "\n".join(wrong) + "\n\n" + render(report)


def in_node(lab: LabPlan, node: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.node(node).netns, *argv], check=True)


def masquerade_pods_of(lab: LabPlan, node: str) -> Expectation:
    """Insert the classic fault (MASQUERADE of the node's pod traffic leaving its pod CIDR) ahead
    of anything else in POSTROUTING; return what the matrix must then show."""
    cidr = lab.node(node).pod_cidr
    in_node(lab, node, "iptables", "-t", "nat", "-I", "POSTROUTING", "1",
            "-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE")  # fmt: skip

    def expected(_proto: str, src: Endpoint, dst: Endpoint) -> str:
        # Leaving `node` from its pods the source becomes the node's address; traffic to the node
        # itself is delivered locally and never reaches POSTROUTING.
        return "N" if src.kind == POD and src.node == node and dst.node != node else "."

    return expected
