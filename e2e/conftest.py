"""The kind e2e session: one cluster for the whole run, created, deployed and torn down here.

    make e2e                            # build the image, create the cluster, test, delete it
    MINICNI_E2E_KEEP=1 make e2e         # keep the cluster afterwards (and re-use it next time)
    MINICNI_E2E_BUILD=0 MINICNI_E2E_IMAGE=minicni:pr-7 make e2e   # an image built already

Without Docker, kind or kubectl the run stops before collecting anything, with a message naming
what is missing and how to get it. Results (matrix JSON + JUnit, diagnostics) go to results/e2e/.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.kind.cluster import KindLab, KindSettings
from lab.kind.manifests import REPO_ROOT
from lab.kind.prereqs import check_prerequisites, format_missing

RESULTS = REPO_ROOT / "results" / "e2e"
# pytest's exit code for "interrupted": the suite did not run, which is not a test failure.
EXIT_PREREQUISITES_MISSING = 2


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Before anything runs: without Docker, kind or kubectl, say once what is missing and stop
    (only when every path asked for is the e2e suite; in a wider run its tests skip instead)."""
    here = Path(__file__).resolve().parent
    asked = [Path(str(arg).split("::")[0]).resolve() for arg in config.args]
    if not asked or not all(path == here or here in path.parents for path in asked):
        return None
    missing = check_prerequisites()
    if not missing:
        return None
    sys.stderr.write(format_missing(missing) + "\n")
    return EXIT_PREREQUISITES_MISSING


def _settings(config: pytest.Config) -> KindSettings:
    """Environment settings; pytest-kind's own --keep-cluster / --kind-image / --cluster-name
    options work too when given."""
    settings = KindSettings.from_env()
    overrides: dict[str, object] = {}
    if config.getoption("keep_cluster", default=False):
        overrides["keep_cluster"] = True
    if config.getoption("kind_image", default=None):
        overrides["node_image"] = config.getoption("kind_image")
    name = config.getoption("cluster_name", default=None)
    if name and name != "pytest-kind":  # pytest-kind's default: keep ours
        overrides["cluster_name"] = name
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def kind_lab(request: pytest.FixtureRequest) -> Iterator[KindLab]:
    missing = check_prerequisites()
    if missing:  # collected as part of a wider run (sessionstart did not see this conftest)
        pytest.skip(format_missing(missing))
    RESULTS.mkdir(parents=True, exist_ok=True)
    lab = KindLab(_settings(request.config))
    try:
        lab.up()
    except Exception:
        _save_diagnostics(lab, "up")
        lab.down()
        raise
    failed_before = request.session.testsfailed
    yield lab
    if request.session.testsfailed > failed_before:
        _save_diagnostics(lab, "after-failures")
    lab.down()


def _save_diagnostics(lab: KindLab, when: str) -> None:
    path = RESULTS / f"diagnostics-{when}.txt"
    try:
        path.write_text(lab.diagnostics())
    except Exception as error:  # the cluster may not even exist; say so instead
        path.write_text(f"no diagnostics: {error}\n")


@pytest.fixture(scope="session")
def results_dir() -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS


@pytest.fixture
def kubectl(kind_lab: KindLab) -> Callable[..., str]:
    return kind_lab.kubectl


@pytest.fixture
def probe_host_pods(kind_lab: KindLab) -> dict[str, str]:
    """node name -> "<namespace>/<pod>" of its hostNetwork probe pod (the node's own netns)."""
    inventory = kind_lab.inventory()
    return {endpoint.node: endpoint.handle for endpoint in inventory.nodes}
