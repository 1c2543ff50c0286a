"""minicni-lab when there is nothing to act on, and how it counts: no root needed for these (`down`
of no lab runs through `dispatch`, as `main` does once it has checked for root)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import EXIT_OK, Progress, dispatch, parser, topology_from
from lab.cluster.build import counted


def test_list_without_any_lab_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", "--state-dir", str(tmp_path / "state"), "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == EXIT_OK
    assert done.stdout == ""  # nothing a script would read as a lab
    assert "no lab is up" in done.stderr


# "hlnone" is no id `minicni-lab up` makes (those are "ml" and four hex digits): no lab of anyone
# else's on this machine can carry it.
@pytest.mark.parametrize("argv", [["down"], ["down", "--all"], ["down", "--id", "hlnone"]])
def test_down_of_no_lab_succeeds_and_says_there_was_nothing_to_remove(
    tmp_path: Path, argv: list[str]
) -> None:
    state_dir = tmp_path / "state"
    said = io.StringIO()
    code = dispatch(parser().parse_args(["--state-dir", str(state_dir), *argv]), Progress(said))
    assert code == EXIT_OK
    assert "nothing to remove" in said.getvalue()
    assert "removed" not in said.getvalue().replace("nothing to remove", "")
    assert not state_dir.exists()


@pytest.mark.parametrize(
    ("number", "noun", "text"),
    [(1, "pod", "1 pod"), (2, "pod", "2 pods"), (0, "node", "0 nodes"), (1, "node", "1 node")],
)
def test_counts_agree_with_their_number(number: int, noun: str, text: str) -> None:
    assert counted(number, noun) == text


def test_the_family_flags_override_the_topology_file(tmp_path: Path) -> None:
    from lab.cli import topology_from

    path = tmp_path / "lab.yaml"
    path.write_text("family: ipv6\nplugin: reference\n")
    args = parser().parse_args(["run", "--topology", str(path)])
    assert topology_from(args).family == "ipv6"
    args = parser().parse_args(["run", "--topology", str(path), "--family", "dual"])
    assert topology_from(args).family == "dual"
    args = parser().parse_args(
        ["up", "--family", "dual", "--underlay-family", "ipv4", "--backend", "vxlan"]
    )
    topology = topology_from(args)
    assert (topology.pod_versions, topology.underlay_versions) == ((4, 6), (4,))


def test_the_runtime_is_a_flag_of_up_and_run() -> None:
    args = parser().parse_args(["run", "--runtime", "cri", "--nodes", "2"])
    assert topology_from(args).runtime == "cri"
    assert topology_from(parser().parse_args(["up"])).runtime == "libcni"
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--runtime", "docker"])
