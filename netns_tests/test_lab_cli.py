"""minicni-lab as a user runs it: `run` writes its reports and prints timings; a lab survives its
creator only until `down`; Ctrl-C and SIGTERM tear down; `down` cleans a run killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.cluster.build import lab_namespaces
from lab.cluster.processes import processes_in
from lab.cluster.state import LabState, known_labs

SMALL = ["--plugin", "reference", "--nodes", "2", "--pods-per-node", "1"]


def lab_cli(state_dir: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "--state-dir", str(state_dir), *argv]


def wait_for_phase(state_dir: Path, phase: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lab_id in known_labs(str(state_dir)):
            try:
                if LabState.load(lab_id, str(state_dir)).phase == phase:
                    return lab_id
            except (FileNotFoundError, ValueError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no lab reached phase {phase}")


def assert_gone(state_dir: Path, lab_id: str) -> None:
    assert lab_namespaces(lab_id) == []
    assert known_labs(str(state_dir)) == []
    assert not (state_dir / lab_id).exists()


def test_run_prints_grids_and_timings_and_writes_json_and_junit(tmp_path: Path) -> None:
    out_json, out_xml = tmp_path / "results" / "m.json", tmp_path / "results" / "m.xml"
    done = subprocess.run(
        lab_cli(
            tmp_path / "state", "run", *SMALL, "--json", str(out_json), "--junit", str(out_xml)
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ICMP  |" in done.stdout and "UDP   |" in done.stdout
    assert "Service probe-tcp 10.96.0.20:80/tcp: rows reach it" in done.stdout
    # 30 pair cells; 4 clients x 2 endpoints through each of the 2 Services
    assert done.stdout.splitlines()[-1].startswith("PASS: 46 cells (46 .)")
    timings = [line for line in done.stderr.splitlines() if "timings:" in line]
    assert timings and all(f"{p} " in timings[0] for p in ("up", "matrix", "down", "total"))
    report = json.loads(out_json.read_text())
    assert report["ok"] is True and report["topology"]["plugin"] == "reference"
    assert [s["name"] for s in report["services"]] == ["probe-tcp", "probe-udp"]
    assert sorted(report["service_grids"]) == ["probe-tcp", "probe-udp"]
    hairpin = [
        c for c in report["cells"] if c["case"] == "pod->ClusterIP endpoint itself (hairpin)"
    ]
    assert len(hairpin) == 2 * 2 and all(c["reply_src"].startswith("10.96.0.") for c in hairpin)
    junit = ET.parse(out_xml).getroot()
    assert junit.tag == "testsuites"
    suites = {suite.get("name"): suite.get("tests") for suite in junit}
    assert suites["minicni-lab matrix service probe-udp"] == "8"
    assert_gone(tmp_path / "state", report["lab"])


def test_up_leaves_a_lab_that_matrix_and_down_find(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = subprocess.run(lab_cli(state, "up", *SMALL), capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert ": 2 nodes x 1 pod, plugin reference" in up.stderr
    (lab_id,) = known_labs(str(state))
    assert len(lab_namespaces(lab_id)) == 1 + 2 + 2
    matrix = subprocess.run(
        lab_cli(state, "matrix", "--protocols", "tcp"), capture_output=True, text=True, timeout=60
    )
    assert matrix.returncode == 0, matrix.stdout + matrix.stderr
    down = subprocess.run(lab_cli(state, "down"), capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert_gone(state, lab_id)
    again = subprocess.run(lab_cli(state, "down"), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stderr


def test_ctrl_c_during_the_matrix_tears_the_lab_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.Popen(
        lab_cli(state, "run", *SMALL), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lab_id = wait_for_phase(state, "up")
    time.sleep(0.3)  # into the matrix
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "down took" in err
    assert_gone(state, lab_id)


@pytest.mark.parametrize("moment", ["first node namespace", "first pod namespace"])
def test_sigterm_during_up_removes_what_was_built(tmp_path: Path, moment: str) -> None:
    state = tmp_path / "state"
    run = subprocess.Popen(
        lab_cli(state, "run", "--plugin", "reference", "--nodes", "3", "--pods-per-node", "8"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lab_id = wait_for_phase(state, "creating")
    suffix = "p0" if "pod" in moment else ""
    while not [name for name in lab_namespaces(lab_id) if name.endswith(suffix)]:
        time.sleep(0.005)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 130
    assert_gone(state, lab_id)


def test_down_cleans_up_after_a_run_killed_with_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.Popen(
        lab_cli(state, "run", "--plugin", "reference"),  # 198 cells: seconds of probing
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab_id = wait_for_phase(state, "up")
    try:
        paths = [f"/run/netns/{name}" for name in lab_namespaces(lab_id)]
        deadline = time.monotonic() + 30
        while not processes_in(paths) and time.monotonic() < deadline:
            time.sleep(0.005)  # until probes run in the namespaces
        run.kill()
        run.wait()
        names = lab_namespaces(lab_id)
        assert names, "the killed run left its namespaces, as expected"
        inodes = {os.stat(f"/run/netns/{name}").st_ino for name in names}
        assert processes_in([f"/run/netns/{name}" for name in names]), "and probes in them"
    finally:
        down = subprocess.run(
            lab_cli(state, "down", "--id", lab_id), capture_output=True, text=True, timeout=60
        )
    assert down.returncode == 0, down.stderr
    assert_gone(state, lab_id)
    assert live_processes_in(inodes) == []


def live_processes_in(netns_inodes: set[int]) -> list[int]:
    """Processes (not zombies: those have no namespace left) still in one of the namespaces."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in netns_inodes:
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_down_without_any_lab_succeeds_and_says_so(tmp_path: Path) -> None:
    down = subprocess.run(lab_cli(tmp_path, "down"), capture_output=True, text=True, timeout=30)
    assert down.returncode == 0, down.stderr
    assert "no lab is up: nothing to remove" in down.stderr
    assert os.listdir(tmp_path) == []
