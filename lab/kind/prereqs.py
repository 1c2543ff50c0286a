"""What `make kind-up` and the kind e2e suite need and this machine may lack: the Docker CLI and a
running engine, kind and kubectl, each named with how to get it. Checks only; installs nothing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Missing:
    """One thing the kind e2e needs and does not have, and how to get it."""

    what: str
    problem: str
    how_to_get: str

    def __str__(self) -> str:
        return f"- {self.what}: {self.problem}\n    how to get it: {self.how_to_get}"


class PrerequisiteError(RuntimeError):
    def __init__(self, missing: Sequence[Missing]) -> None:
        self.missing = tuple(missing)
        super().__init__(format_missing(self.missing))


E2E_CANNOT_RUN = "the kind e2e suite cannot run"


def format_missing(missing: Sequence[Missing], cannot: str = E2E_CANNOT_RUN) -> str:
    """`cannot` says what cannot be done without them: the e2e suite, or one `make` target."""
    names = ", ".join(m.what for m in missing)
    lines = [f"{cannot}: missing {names}", *map(str, missing)]
    return "\n".join(lines)


Which = Callable[[str], str | None]
Probe = Callable[[Sequence[str]], tuple[bool, str]]


def _probe(argv: Sequence[str]) -> tuple[bool, str]:
    """Run a short check command; (succeeded, what it said)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def check_prerequisites(which: Which = shutil.which, probe: Probe = _probe) -> list[Missing]:
    """Everything missing for the kind e2e (Docker CLI and a reachable engine, kind, kubectl)."""
    missing = []
    docker = which("docker")
    if docker is None:
        missing.append(
            Missing(
                "docker",
                "the docker command is not on PATH",
                "install Docker Engine (https://docs.docker.com/engine/install/; "
                "Debian/Ubuntu: sudo apt-get install docker.io)",
            )
        )
    else:
        ok, said = probe([docker, "info", "--format", "{{.ServerVersion}}"])
        if not ok:
            first = said.splitlines()[0] if said else "no answer"
            missing.append(
                Missing(
                    "a running Docker engine",
                    f"`docker info` failed: {first}",
                    "start it (sudo systemctl start docker) and let this user use it "
                    "(sudo usermod -aG docker $USER, then log in again); for a remote or "
                    "rootless engine set DOCKER_HOST",
                )
            )
    missing += check_kind(which)
    if which("kubectl") is None:
        missing.append(
            Missing(
                "kubectl",
                "the kubectl command is not on PATH",
                "https://kubernetes.io/docs/tasks/tools/#kubectl (any version within one minor "
                "of the cluster's)",
            )
        )
    return missing


def check_kind(which: Which = shutil.which) -> list[Missing]:
    """The kind command alone: all `make kind-down` needs."""
    if which("kind") is not None:
        return []
    return [
        Missing(
            "kind",
            "the kind command is not on PATH",
            "go install sigs.k8s.io/kind@v0.27.0, or a release binary from "
            "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
        )
    ]
