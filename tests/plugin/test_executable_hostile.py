"""The installed `minicni` executable under hostile environments and log files, as a runtime runs
it (env bytes, stdin), for the failures that come before any kernel change (no root needed):
one CNI error object on stdout, no traceback or `--- Logging error ---` anywhere, and a log in
which every record is one line."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PLUGIN = str(Path(sys.executable).parent / "minicni")
CONFIG: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "n",
    "type": "minicni",
    "subnet": "10.1.0.0/24",
}
RECORD = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} minicni\[\d+\] ")


def run_plugin(
    tmp_path: Path,
    env: dict[bytes, bytes],
    stdin: bytes,
    *,
    file_size_limit: int | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Run the executable in `tmp_path` (its working directory); return the error document and
    stderr, after checking both are clean."""
    base = {
        b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"),
        b"MINICNI_LOG_FILE": bytes(tmp_path / "env.log"),
    }

    def limit_file_size() -> None:  # a full disk for every regular file the plugin writes
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    done = subprocess.run(
        [PLUGIN],
        input=stdin,
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=limit_file_size,
    )
    assert done.returncode == 1, done
    document: dict[str, Any] = json.loads(done.stdout)
    assert set(document) == {"cniVersion", "code", "msg", "details"}, document
    assert isinstance(document["code"], int)
    assert b"Traceback" not in done.stderr and b"Logging error" not in done.stderr, done.stderr
    for line in done.stderr.splitlines():
        assert RECORD.match(line) or line.startswith(b"minicni: "), done.stderr
    return document, done.stderr


def env_for(command: bytes = b"ADD", **overrides: bytes) -> dict[bytes, bytes]:
    env = {
        b"CNI_COMMAND": command,
        b"CNI_CONTAINERID": b"c1",
        b"CNI_NETNS": b"/nonexistent/netns",
        b"CNI_IFNAME": b"eth0",
    }
    env.update({key.encode(): value for key, value in overrides.items()})
    return env


@pytest.mark.parametrize(
    "stdin",
    [b"[" * 100_000, b'{"cniVersion": "1.1.0", "mtu": ' + b"7" * 5000 + b"}"],
    ids=["100k-deep", "5000-digits"],
)
def test_unbounded_json_is_code_6(tmp_path: Path, stdin: bytes) -> None:
    document, _ = run_plugin(tmp_path, env_for(), stdin)
    assert document["code"] == 6


@pytest.mark.parametrize("value", [b"a%b", b"%d", b"%(x)s", b"%s%s%s%n"])
@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_COMMAND"])
def test_percent_in_env_never_reaches_a_format_string(
    tmp_path: Path, variable: str, value: bytes
) -> None:
    document, _ = run_plugin(tmp_path, env_for(**{variable: value}), json.dumps(CONFIG).encode())
    assert document["code"] == 4


@pytest.mark.parametrize("variable", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME"])
def test_env_bytes_that_are_not_utf8_are_code_4(tmp_path: Path, variable: str) -> None:
    document, _ = run_plugin(
        tmp_path, env_for(**{variable: b"x\xff\xfe"}), json.dumps(CONFIG).encode()
    )
    assert document["code"] == 4 and variable in document["msg"], document


def test_lone_surrogate_in_log_file_is_code_7(tmp_path: Path) -> None:
    stdin = json.dumps(dict(CONFIG, logFile="/tmp/minicni-\ud800.log")).encode()
    document, _ = run_plugin(tmp_path, env_for(), stdin)
    assert document["code"] == 7 and "logFile" in document["msg"]


@pytest.mark.parametrize("log_file", ["relative.log", "sub/relative.log", 0, True, [], {}])
def test_a_bad_log_file_is_code_7_and_writes_nothing_in_the_working_directory(
    tmp_path: Path, log_file: Any
) -> None:
    stdin = json.dumps(dict(CONFIG, logFile=log_file)).encode()
    document, _ = run_plugin(tmp_path, env_for(), stdin)
    assert document["code"] == 7 and "logFile" in document["msg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.log"]


def test_newline_in_container_id_cannot_forge_log_lines(tmp_path: Path) -> None:
    forged = b"abc\n2030-01-01 00:00:00,000 minicni[1] ADD c1 INFO forged\r\nmore"
    document, stderr = run_plugin(
        tmp_path, env_for(CNI_CONTAINERID=forged), json.dumps(CONFIG).encode()
    )
    assert document["code"] == 4
    log = (tmp_path / "env.log").read_bytes()
    assert log and len(log.splitlines()) == 1 and len(stderr.splitlines()) == 1, log
    assert b"forged" in log  # quoted, on the one line


def test_a_full_log_file_system_prints_no_logging_traceback(tmp_path: Path) -> None:
    document, stderr = run_plugin(
        tmp_path,
        env_for(CNI_CONTAINERID=b"bad/id"),
        json.dumps(CONFIG).encode(),
        file_size_limit=0,
    )
    assert document["code"] == 4
    assert b"could not write" in stderr and b"env.log" in stderr, stderr


@pytest.mark.parametrize("log_file", ["/dev/stdout", "/proc/self/fd/1", "/dev/null"])
def test_a_log_file_that_is_not_a_regular_file_is_not_written(
    tmp_path: Path, log_file: str
) -> None:
    """Logs on stdout would break the one-JSON-document contract."""
    run_plugin(
        tmp_path, env_for(CNI_CONTAINERID=b"bad/id", MINICNI_LOG_FILE=log_file.encode()), b"{"
    )


def test_a_fifo_as_log_file_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    stdin = json.dumps(dict(CONFIG, logFile=str(fifo))).encode()
    document, _ = run_plugin(tmp_path, env_for(CNI_CONTAINERID=b"bad/id"), stdin)
    assert document["code"] == 4
