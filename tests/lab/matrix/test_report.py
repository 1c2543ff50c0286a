"""Report rendering: grids, wrong-cell lines with a reproduce command, JSON and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from lab.matrix.cases import (
    Case,
    CellResult,
    MatrixReport,
    Observation,
    case_kind,
    service_case_kind,
)
from lab.matrix.executors import NODE, POD, Endpoint, Inventory, Service
from lab.matrix.report import (
    render,
    render_grid,
    render_service_grid,
    to_json,
    write_json,
    write_junit,
)

N1 = Endpoint("n1", NODE, "n1", "172.30.0.11", "ml1-n1")
P10 = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "ml1-n1p0")
P20 = Endpoint("n2/p0", POD, "n2", "10.244.2.2", "ml1-n2p0")
INVENTORY = Inventory.build([N1, P10, P20])


def cell(
    src: Endpoint, dst: Endpoint, verdict: str, attempts: int = 1, proto: str = "tcp"
) -> CellResult:
    case = Case(case_kind(src, dst) or "", proto, src, dst, 31000)
    observation = Observation({"local": src.ip, "reply": verdict == "."}, {"observed_src": src.ip})
    detail = "" if verdict == "." else "the probe never arrived"
    return CellResult(case, verdict, detail, attempts, observation, 0.25, reproduce="recv & send")


def report() -> MatrixReport:
    cells = [
        cell(N1, P10, "."),
        cell(N1, P20, "X"),
        cell(P10, N1, "."),
        cell(P10, P20, "N"),
        cell(P20, N1, "!"),
        cell(P20, P10, ".", attempts=2),
    ]
    return MatrixReport(INVENTORY, ("tcp",), cells, duration_s=1.5)


def test_grid_rows_are_sources_columns_destinations() -> None:
    grid = render_grid(report(), "tcp").splitlines()
    assert grid[0].split() == ["TCP", "|", "n1", "n1/p0", "n2/p0"]
    assert grid[2].split() == ["n1", "|", "-", ".", "X"]
    assert grid[3].split() == ["n1/p0", "|", ".", "-", "N"]
    assert grid[4].split() == ["n2/p0", "|", "!", ".", "-"]


def test_render_lists_each_wrong_cell_with_a_reproduce_command_and_the_flaky_ones() -> None:
    text = render(report())
    wrong = [line for line in text.splitlines() if line[:2] in ("X ", "N ", "! ")]
    assert wrong == [
        "X tcp n1 -> n2/p0 (node->pod other node): the probe never arrived",
        "N tcp n1/p0 -> n2/p0 (pod->pod other node): the probe never arrived",
        "! tcp n2/p0 -> n1 (pod->other node): the probe never arrived",
    ]
    assert text.count("reproduce: recv & send") == 3
    assert "n2/p0 -> n1/p0 (2 attempts)" in text
    assert text.splitlines()[-1] == "FAIL: 6 cells (3 ., 1 X, 1 N, 1 !), 1 flaky in 1.5 s"


def test_json_has_every_cell_and_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "out" / "matrix.json"
    write_json(report(), str(path), {"lab": "ml1"})
    data = json.loads(path.read_text())
    assert data["lab"] == "ml1"
    assert data["ok"] is False
    assert data["counts"] == {".": 3, "X": 1, "N": 1, "!": 1, "-": 0}
    assert len(data["cells"]) == 6
    flaky = [c for c in data["cells"] if c["flaky"]]
    assert [(c["src"], c["dst"], c["attempts"]) for c in flaky] == [("n2/p0", "n1/p0", 2)]
    assert data["grids"]["tcp"][2].split() == ["n1", "|", "-", ".", "X"]


def test_a_passing_report_says_pass() -> None:
    passing = MatrixReport(INVENTORY, ("tcp",), [cell(N1, P10, ".")], 0.5)
    assert to_json(passing)["ok"] is True
    assert render(passing).splitlines()[-1] == "PASS: 1 cells (1 .) in 0.5 s"


def test_junit_has_one_suite_per_protocol_and_a_failure_per_wrong_cell(tmp_path: Path) -> None:
    cells = [*report().cells, cell(N1, P10, ".", proto="udp")]
    path = tmp_path / "matrix.xml"
    write_junit(MatrixReport(INVENTORY, ("tcp", "udp"), cells, 2.0), str(path))
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert [(s.get("tests"), s.get("failures")) for s in suites] == [("6", "3"), ("1", "0")]
    failures = root.findall(".//failure")
    assert sorted(f.get("type") for f in failures) == ["!", "N", "X"]
    assert all((f.text or "").startswith("reproduce: ") for f in failures)
    names = [t.get("name") for t in root.iter("testcase")]
    assert "n1 -> n2/p0" in names
    assert any("flaky" in (o.text or "") for o in root.iter("system-out"))


D1 = Endpoint("n1", NODE, "n1", "172.30.0.11", "ml1-n1", ips=("172.30.0.11", "fd00:172:30::11"))
D10 = Endpoint("n1/p0", POD, "n1", "10.244.1.2", "ml1-n1p0", ips=("10.244.1.2", "fd00:10:244:1::2"))
D20 = Endpoint("n2/p0", POD, "n2", "10.244.2.2", "ml1-n2p0", ips=("10.244.2.2", "fd00:10:244:2::2"))


def dual_report() -> MatrixReport:
    def both(src: Endpoint, dst: Endpoint, v4: str, v6: str) -> list[CellResult]:
        four = cell(src, dst, v4)
        case6 = Case(four.case.kind, "tcp", src, dst, 31100, family="ipv6")
        six = CellResult(case6, v6, "" if v6 == "." else "NATed", 1, four.observation, 0.5)
        return [four, six]

    cells = [*both(D1, D10, ".", "."), *both(D10, D20, ".", "N"), *both(D20, D1, ".", ".")]
    return MatrixReport(Inventory.build([D1, D10, D20]), ("tcp",), cells, 1.0)


def test_a_dual_stack_report_has_a_grid_per_family_in_text_json_and_junit(tmp_path: Path) -> None:
    dual = dual_report()
    text = render(dual)
    titles = [line.split()[0] for line in text.splitlines() if line.endswith("n2/p0")]
    assert titles == ["TCP", "TCP6"]
    assert "N tcp6 n1/p0 -> n2/p0 (pod->pod other node): NATed" in text
    data = to_json(dual)
    assert data["families"] == ["ipv4", "ipv6"]
    assert list(data["grids"]) == ["tcp", "tcp6"]
    assert data["grids"]["tcp"][3].split() == ["n1/p0", "|", "-", "-", "."]
    assert data["grids"]["tcp6"][3].split() == ["n1/p0", "|", "-", "-", "N"]
    assert [c["family"] for c in data["cells"]] == ["ipv4", "ipv6"] * 3
    assert data["endpoints"][1]["ips"] == ["10.244.1.2", "fd00:10:244:1::2"]
    path = tmp_path / "dual.xml"
    write_junit(dual, str(path))
    suites = ET.parse(path).getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        ("minicni-lab matrix tcp", "3", "0"),
        ("minicni-lab matrix tcp6", "3", "1"),
    ]
    assert suites[1].find("testcase").get("classname") == "matrix.tcp6.node->pod_same_node"  # type: ignore[union-attr]


SERVICE = Service("probe-tcp", "tcp", "10.96.0.20", 80, 30080, ("n1/p0", "n2/p0"))
WITH_SERVICE = Inventory.build([N1, P10, P20], services=[SERVICE])


def service_cell(src: Endpoint, dst: Endpoint, verdict: str) -> CellResult:
    case = Case(service_case_kind(src, dst), "tcp", src, dst, 80, SERVICE)
    observation = Observation(
        {"local": src.ip, "reply": verdict != "X", "reply_src": "10.96.0.20"},
        {"received": verdict != "X", "observed_src": src.ip},
    )
    return CellResult(case, verdict, "" if verdict == "." else "why", 1, observation, 0.1)


def service_report() -> MatrixReport:
    cells = [
        cell(P10, P20, "."),  # a pair cell between the same endpoints: its own grid
        service_cell(N1, P10, "."),
        service_cell(N1, P20, "."),
        service_cell(P10, P10, "X"),
        service_cell(P10, P20, "."),
        service_cell(P20, P10, "N"),
    ]
    return MatrixReport(WITH_SERVICE, ("tcp",), cells, duration_s=1.0)


def test_a_service_has_its_own_grid_of_clients_by_endpoint() -> None:
    report = service_report()
    assert render_grid(report, "tcp").splitlines()[3].split() == ["n1/p0", "|", "-", "-", "."]
    grid = render_service_grid(report, SERVICE).splitlines()
    assert (
        grid[0] == "Service probe-tcp 10.96.0.20:80/tcp: rows reach it, columns are its endpoints"
    )
    assert grid[1].split() == ["TCP", "|", "n1/p0", "n2/p0"]
    assert [line.split() for line in grid[3:]] == [
        ["n1", "|", ".", "."],
        ["n1/p0", "|", "X", "."],
        ["n2/p0", "|", "N", "-"],
    ]
    text = render(report)
    assert (
        "X tcp n1/p0 -> probe-tcp (n1/p0) (pod->ClusterIP endpoint itself (hairpin)): why" in text
    )


def test_service_cells_in_json_and_junit(tmp_path: Path) -> None:
    data = to_json(service_report())
    assert data["services"] == [
        {
            "name": "probe-tcp",
            "proto": "tcp",
            "cluster_ip": "10.96.0.20",
            "port": 80,
            "target_port": 30080,
            "endpoints": ["n1/p0", "n2/p0"],
        }
    ]
    assert data["service_grids"]["probe-tcp"][4].split() == ["n1/p0", "|", "X", "."]
    services = [c for c in data["cells"] if c["service"] == "probe-tcp"]
    assert len(services) == 5 and all(c["reply_src"] == "10.96.0.20" for c in services)
    path = tmp_path / "matrix.xml"
    write_junit(service_report(), str(path))
    suites = ET.parse(path).getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        ("minicni-lab matrix tcp", "1", "0"),
        ("minicni-lab matrix service probe-tcp", "5", "2"),
    ]
    names = [t.get("name") for t in suites[1].iter("testcase")]
    assert "n1/p0 -> probe-tcp (n1/p0)" in names
