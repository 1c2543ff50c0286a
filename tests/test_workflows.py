"""The GitHub workflows, offline: CI runs lint, unit and root tests; e2e runs `tox -e e2e` on kind
and uploads the results; actionlint accepts both where it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_runs_lint_unit_and_root_tests_with_sudo() -> None:
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    jobs = ci["jobs"]
    assert "tox -e lint" in runs(jobs["lint"])
    assert "pytest tests" in runs(jobs["unit"])
    root = runs(jobs["root"])
    assert "sudo" in root and "netns_tests" in root
    assert "busybox-static" in root  # the bundle install test's chroot shell


def test_e2e_runs_tox_on_kind_and_uploads_the_results() -> None:
    (job,) = workflow("e2e.yml")["jobs"].values()
    assert "tox -e e2e" in runs(job)
    assert 'go install "sigs.k8s.io/kind@${KIND_VERSION}"' in runs(job)
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    (upload,) = uploads
    assert upload["if"] == "always()" and upload["with"]["path"] == "results/"


def test_e2e_runs_on_an_ipv4_and_a_dual_stack_cluster() -> None:
    (job,) = workflow("e2e.yml")["jobs"].values()
    assert job["strategy"]["matrix"]["family"] == ["ipv4", "dual"]
    (step,) = [s for s in job["steps"] if "tox -e e2e" in s.get("run", "")]
    assert step["env"]["MINICNI_E2E_FAMILY"] == "${{ matrix.family }}"
    (upload,) = [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    assert "${{ matrix.family }}" in upload["with"]["name"]  # one artifact per family


def test_actions_are_pinned_to_a_major_version() -> None:
    for name in ("ci.yml", "e2e.yml"):
        for job in workflow(name)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert "@v" in step["uses"], step["uses"]


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not on PATH")
def test_actionlint_accepts_the_workflows() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    done = subprocess.run(["actionlint", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
