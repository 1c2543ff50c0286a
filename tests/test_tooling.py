"""The tooling as a new user meets it, offline: `make image` without a working container engine,
the kind targets and the host's packages, the e2e suite without Docker or kind, the README's
commands in a root shell, and what a passing pytest run leaves in /tmp."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _stub(directory: Path, name: str, body: str) -> None:
    script = directory / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


@pytest.fixture
def broken_engines(tmp_path: Path) -> dict[str, str]:
    """PATH where docker has no engine behind it and podman cannot start: what a CI container or
    a laptop with Docker stopped looks like."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    refused = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    _stub(stubs, "docker", f'echo "Client: Docker Engine"; echo "{refused}" >&2; exit 1')
    _stub(stubs, "podman", 'echo "Error: cannot re-exec process" >&2; exit 125')
    return {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "CONTAINER_ENGINE": ""}


@needs_make
def test_make_image_without_a_working_engine_says_why_in_one_line_each(
    broken_engines: dict[str, str],
) -> None:
    done = subprocess.run(
        [str(MAKE), "-s", "image", "IMAGE_ARCHIVE="],
        cwd=REPO, env=broken_engines, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert lines[0] == "no container engine to build the image with:"
    docker = next(line for line in lines if line.strip().startswith("docker:"))
    podman = next(line for line in lines if line.strip().startswith("podman:"))
    assert "Cannot connect to the Docker daemon" in docker and "does not answer" in docker
    assert "cannot re-exec process" in podman
    assert any("apt-get install podman" in line for line in lines)
    # stopped before anything was built or fetched
    assert "build" not in done.stdout.lower() and "wheels" not in done.stderr


def test_a_named_engine_that_does_not_work_is_reported_as_named(
    broken_engines: dict[str, str],
) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "container-engine.sh")],
        env={**broken_engines, "CONTAINER_ENGINE": "docker"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith('CONTAINER_ENGINE="docker": installed, but its engine')
    assert len(done.stderr.splitlines()) == 1


def test_an_engine_that_answers_is_chosen(tmp_path: Path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    _stub(stubs, "docker", "exit 1")
    _stub(stubs, "podman", "exit 0")
    done = subprocess.run(
        [str(REPO / "scripts" / "container-engine.sh")],
        env={**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "CONTAINER_ENGINE": ""},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "podman\n")


@needs_make
@pytest.mark.parametrize("target", ["kind-up", "kind-down", "e2e"])
def test_kind_targets_never_install_debian_packages(target: str) -> None:
    """On a Docker CE host, podman/runc/containerd from apt conflict with containerd.io."""
    done = subprocess.run(
        [str(MAKE), "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    setups = [line for line in done.stdout.splitlines() if "setup-host.sh" in line]
    assert setups, done.stdout  # the venv is still set up
    assert all("MINICNI_SKIP_APT=1" in line for line in setups), setups
    assert "apt-get" not in done.stdout


def test_the_e2e_suite_without_docker_or_kind_says_so_once_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "e2e"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert said.count("the kind e2e suite cannot run") == 1, said
    assert "kind: the kind command is not on PATH" in said
    assert "Traceback" not in said and "collected" not in said


def _shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_commands_work_as_written_in_a_root_shell() -> None:
    """No `sudo` to type: minimal images and root containers have none."""
    readme = (REPO / "README.md").read_text()
    lines = [line for block in _shell_blocks(readme) for line in block.splitlines()]
    assert lines
    assert [line for line in lines if re.search(r"(^|[;&|]\s*)sudo\s", line)] == []
    assert not re.search(r"`sudo [^`]*`", readme)
    # tox lives in the venv, not on PATH: the documented commands are the ones that exist
    assert not [line for line in lines if re.match(r"\s*tox\s", line)]


def test_a_passing_run_leaves_no_temporary_directories(tmp_path: Path) -> None:
    """pytest keeps the last three runs' tmp_path directories by default (~150 MB for
    `make test`); with the project's configuration only a failed test's directory stays."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_inner.py").write_text(
        "def test_passes(tmp_path):\n"
        "    (tmp_path / 'big').write_bytes(b'x' * 1024)\n"
        "def test_fails(tmp_path):\n"
        "    (tmp_path / 'evidence').write_text('kept')\n"
        "    assert False\n"
    )
    temproot = tmp_path / "temproot"
    temproot.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c",
         str(REPO / "pyproject.toml"), "--rootdir", str(suite), str(suite)],
        env={**os.environ, "PYTEST_DEBUG_TEMPROOT": str(temproot)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    left = sorted(p.name for p in temproot.rglob("*") if p.is_file())
    assert left == ["evidence"]
