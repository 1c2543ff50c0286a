"""`python -m lab.kind up|down`, as `make kind-up` and `make kind-down` run it, on a machine
without Docker, kind and kubectl: what is missing, named for the command the user ran, with how to
get it; exit code 2; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXIT_MISSING = 2


def kind_cli(action: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    bare = tmp_path / "bin"  # a PATH with none of the tools on it
    bare.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "lab.kind", action],
        env={**os.environ, "PATH": str(bare), "MINICNI_E2E_CLUSTER": "mc-test"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kind_down_without_kind_says_so_instead_of_a_traceback(tmp_path: Path) -> None:
    done = kind_cli("down", tmp_path)
    assert done.returncode == EXIT_MISSING, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("cannot delete the kind cluster mc-test: missing kind\n")
    assert "how to get it: go install sigs.k8s.io/kind" in done.stderr


def test_kind_up_names_what_it_cannot_do_not_the_e2e_suite(tmp_path: Path) -> None:
    done = kind_cli("up", tmp_path)
    assert done.returncode == EXIT_MISSING, done.stderr
    assert "e2e suite" not in done.stderr
    assert done.stderr.startswith(
        "cannot create the kind cluster mc-test: missing docker, kind, kubectl\n"
    )
    assert done.stderr.count("how to get it") == 3
