"""The prerequisite report a user sees without Docker, kind or kubectl: each missing thing named
with how to get it, no traceback; and what `tox -e e2e` does on such a machine."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from lab.kind.prereqs import Missing, PrerequisiteError, check_prerequisites, format_missing

REPO = Path(__file__).resolve().parents[3]


def _which(present: Sequence[str]) -> object:
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_nothing_missing_when_docker_answers_and_kind_and_kubectl_exist() -> None:
    missing = check_prerequisites(
        which=_which(["docker", "kind", "kubectl"]),  # type: ignore[arg-type]
        probe=lambda argv: (True, "28.2.2"),
    )
    assert missing == []


def test_a_docker_client_without_an_engine_is_reported_with_how_to_start_it() -> None:
    """This machine's situation: the docker CLI exists, no engine answers."""
    said = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    missing = check_prerequisites(
        which=_which(["docker", "kubectl"]),  # type: ignore[arg-type]
        probe=lambda argv: (False, said),
    )
    assert [m.what for m in missing] == ["a running Docker engine", "kind"]
    text = format_missing(missing)
    assert said in text
    assert "systemctl start docker" in text
    assert "sigs.k8s.io/kind" in text
    assert text.startswith("the kind e2e suite cannot run: missing a running Docker engine, kind")


def test_every_missing_tool_is_named_with_how_to_get_it() -> None:
    missing = check_prerequisites(which=_which([]), probe=lambda argv: (True, ""))  # type: ignore[arg-type]
    assert [m.what for m in missing] == ["docker", "kind", "kubectl"]
    assert all(m.how_to_get for m in missing)
    error = PrerequisiteError(missing)
    assert "kubectl" in str(error) and error.missing == tuple(missing)


def test_missing_renders_as_a_readable_item() -> None:
    item = Missing("kind", "not on PATH", "go install sigs.k8s.io/kind@v0.27.0")
    expected = "- kind: not on PATH\n    how to get it: go install sigs.k8s.io/kind@v0.27.0"
    assert str(item) == expected


def test_this_machine_reports_what_it_lacks_without_a_traceback() -> None:
    """The real check, as `tox -e e2e` runs it: it must finish quickly and name things."""
    code = "from lab.kind.prereqs import check_prerequisites, format_missing; "
    code += "m = check_prerequisites(); print(format_missing(m) if m else 'ALL PRESENT')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.startswith(("the kind e2e suite cannot run: missing", "ALL PRESENT"))


def test_e2e_run_without_docker_or_kind_stops_at_once_naming_them() -> None:
    """What `tox -e e2e` does on a machine like this one: no test runs, no traceback, exit 2."""
    if not check_prerequisites():
        pytest.skip("Docker, kind and kubectl are all here: the e2e suite would really run")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "e2e", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "the kind e2e suite cannot run: missing" in output
    assert "how to get it" in output
    assert "Traceback" not in output
    assert not re.search(r"\d+ (passed|failed|error)", output), "tests ran"
