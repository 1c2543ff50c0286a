"""Run the lab's probes in Kubernetes pods with `kubectl exec`: the kind executor of the matrix.

The matrix runner asks an executor for the argv that runs `python3 -m lab.probes <argv>` at an
endpoint; here an endpoint's handle is "<namespace>/<pod>", and the probe pods run the minicni
image, which carries the `lab` package. Same probes, same verdicts as in network namespaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.executors import Endpoint

PROBE_CONTAINER = "probe"


def split_handle(handle: str) -> tuple[str, str]:
    """("namespace", "pod") from "namespace/pod"; a bare pod name is refused, never guessed."""
    namespace, sep, pod = handle.partition("/")
    if not sep or not namespace or not pod or "/" in pod:
        raise ValueError(f"kubectl endpoint handle {handle!r} is not '<namespace>/<pod>'")
    return namespace, pod


@dataclass(frozen=True)
class KubectlExecutor:
    """Builds `kubectl exec` command lines; it runs nothing itself."""

    kubeconfig: Path | None = None
    kubectl: str = "kubectl"
    container: str | None = PROBE_CONTAINER
    python: str = "python3"
    # kubectl's own timeout for the API round trips (not the probe's): a stuck API server fails the
    # cell with `!` instead of hanging the matrix.
    request_timeout: str = "30s"

    def base(self) -> list[str]:
        command = [self.kubectl]
        if self.kubeconfig is not None:
            command += ["--kubeconfig", str(self.kubeconfig)]
        return command

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        namespace, pod = split_handle(endpoint.handle)
        command = [*self.base(), "--request-timeout", self.request_timeout]
        command += ["exec", "--namespace", namespace, pod]
        if self.container:
            command += ["--container", self.container]
        return [*command, "--", self.python, "-m", "lab.probes", *argv]
