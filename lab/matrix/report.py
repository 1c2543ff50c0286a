"""Readable matrix reports: a grid per protocol and one per Service, one line per wrong cell,
JSON and JUnit XML.

Grids read like the upstream netpol truth tables: rows are sources, columns destinations; in a
Service's grid the columns are the Service's endpoints, each reached through the ClusterIP.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from lab.matrix.cases import NOT_APPLICABLE, OK, CellResult, MatrixReport, grid_name
from lab.matrix.executors import IPV4, Endpoint, Service
from minicni.fileutil import write_atomic

LEGEND = (
    ". ok   X unreachable   N wrong source (NAT; from a Service: not its address)   "
    "! probe error   - not applicable"
)


def render_grid(report: MatrixReport, proto: str, family: str = IPV4) -> str:
    """One grid of pair cells: `TCP` for IPv4, `TCP6` for IPv6; an endpoint without an address of
    the family has a row and column of `-`."""
    verdicts = {
        (cell.case.src.name, cell.case.dst.name): cell.verdict
        for cell in report.cells
        if (cell.case.proto, cell.case.family) == (proto, family) and cell.case.service is None
    }
    endpoints = report.inventory.endpoints
    return _grid(grid_name(family, proto).upper(), endpoints, endpoints, verdicts)


def render_service_grid(report: MatrixReport, service: Service) -> str:
    """Rows reach the Service; columns are its endpoints, the one kube-proxy chose each time."""
    verdicts = {
        (cell.case.src.name, cell.case.dst.name): cell.verdict
        for cell in report.cells
        if cell.case.service == service
    }
    columns = [report.inventory.endpoint(name) for name in service.endpoints]
    grid = _grid(service.proto.upper(), report.inventory.endpoints, columns, verdicts)
    return f"Service {service.label}: rows reach it, columns are its endpoints\n{grid}"


def _grid(
    corner: str,
    rows: Sequence[Endpoint],
    columns: Sequence[Endpoint],
    verdicts: Mapping[tuple[str, str], str],
) -> str:
    width = max(len(corner), *(len(e.name) for e in [*rows, *columns]))
    header = f"{corner:<{width}} | " + " ".join(f"{e.name:^{width}}" for e in columns)
    lines = [header, "-" * len(header)]
    for src in rows:
        row = " ".join(
            f"{verdicts.get((src.name, dst.name), NOT_APPLICABLE):^{width}}" for dst in columns
        )
        lines.append(f"{src.name:<{width}} | {row}")
    return "\n".join(lines)


def render_cell_line(cell: CellResult) -> str:
    case = cell.case
    tries = f", {cell.attempts} attempts" if cell.attempts > 1 else ""
    return (
        f"{cell.verdict} {case.label} ({case.kind}{tries}): {cell.detail}\n"
        f"    reproduce: {cell.reproduce}"
    )


def render_summary(report: MatrixReport) -> str:
    counts = report.counts()
    parts = [f"{counts[v]} {v}" for v in counts if counts[v]]
    status = "PASS" if report.ok else "FAIL"
    flaky = len(report.flaky())
    return (
        f"{status}: {len(report.cells)} cells ({', '.join(parts) or 'none'})"
        f"{f', {flaky} flaky' if flaky else ''} in {report.duration_s:.1f} s"
    )


def render(report: MatrixReport) -> str:
    blocks = [render_grid(report, proto, family) for family, proto in report.grids()]
    blocks += [render_service_grid(report, service) for service in report.services]
    blocks.append(LEGEND)
    wrong = report.wrong()
    if wrong:
        blocks.append("Wrong cells:\n" + "\n".join(render_cell_line(c) for c in wrong))
    flaky = report.flaky()
    if flaky:
        blocks.append(
            "Flaky cells (passed on a retry):\n"
            + "\n".join(f"  {c.case.label} ({c.attempts} attempts)" for c in flaky)
        )
    blocks.append(render_summary(report))
    return "\n\n".join(blocks)


def _endpoint(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "kind": endpoint.kind,
        "node": endpoint.node,
        "ip": endpoint.ip,
        "ips": list(endpoint.addresses),
    }


def to_json(report: MatrixReport, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cells = [
        {
            "proto": cell.case.proto,
            "family": cell.case.family,
            "src": cell.case.src.name,
            "dst": cell.case.dst.name,
            "case": cell.case.kind,
            "verdict": cell.verdict,
            "flaky": cell.flaky,
            "attempts": cell.attempts,
            "detail": cell.detail,
            "service": cell.case.service.name if cell.case.service else None,
            "observed_src": (cell.observation.receiver or {}).get("observed_src"),
            "sender_src": (cell.observation.sender or {}).get("local"),
            "reply_src": (cell.observation.sender or {}).get("reply_src"),
            "duration_s": round(cell.duration_s, 3),
            "reproduce": cell.reproduce,
        }
        for cell in report.cells
    ]
    return {
        **(extra or {}),
        "ok": report.ok,
        "protocols": list(report.protocols),
        "families": list(report.families),
        "endpoints": [_endpoint(e) for e in report.inventory.endpoints],
        "services": [
            {**asdict(service), "endpoints": list(service.endpoints)} for service in report.services
        ],
        "counts": report.counts(),
        "flaky": len(report.flaky()),
        "duration_s": round(report.duration_s, 3),
        "grids": {
            grid_name(family, proto): render_grid(report, proto, family).splitlines()
            for family, proto in report.grids()
        },
        "service_grids": {
            service.name: render_service_grid(report, service).splitlines()
            for service in report.services
        },
        "cells": cells,
    }


def to_junit(report: MatrixReport, suite_name: str = "minicni-lab matrix") -> ET.Element:
    """One test suite per grid (`tcp`, `tcp6`) and one per Service, one test case per cell;
    wrong cells are failures."""
    suites = ET.Element("testsuites", name=suite_name)
    by_suite = [
        (
            grid_name(family, proto),
            [
                c
                for c in report.cells
                if (c.case.proto, c.case.family) == (proto, family) and c.case.service is None
            ],
        )
        for family, proto in report.grids()
    ]
    by_suite += [
        (f"service {service.name}", [c for c in report.cells if c.case.service == service])
        for service in report.services
    ]
    for title, cells in by_suite:
        if not cells:
            continue
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{suite_name} {title}",
            tests=str(len(cells)),
            failures=str(sum(c.verdict != OK for c in cells)),
            errors="0",
            skipped="0",
            time=f"{sum(c.duration_s for c in cells):.3f}",
        )
        for cell in cells:
            testcase = ET.SubElement(
                suite,
                "testcase",
                classname=f"matrix.{cell.case.grid}.{cell.case.kind.replace(' ', '_')}",
                name=cell.case.label.split(" ", 1)[1],
                time=f"{cell.duration_s:.3f}",
            )
            if cell.verdict != OK:
                failure = ET.SubElement(
                    testcase, "failure", message=f"{cell.verdict}: {cell.detail}", type=cell.verdict
                )
                failure.text = f"reproduce: {cell.reproduce}"
            elif cell.flaky:
                out = ET.SubElement(testcase, "system-out")
                out.text = f"flaky: passed on attempt {cell.attempts}"
    return suites


def write_json(report: MatrixReport, path: str, extra: dict[str, Any] | None = None) -> None:
    text = json.dumps(to_json(report, extra), indent=2) + "\n"
    write_atomic(path, text.encode(), durable=False)


def write_junit(report: MatrixReport, path: str) -> None:
    root = to_junit(report)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    write_atomic(path, text.encode(), durable=False)
