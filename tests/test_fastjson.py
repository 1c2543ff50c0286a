"""minicni.fastjson against the json package: the same values in, the same refusals."""

from __future__ import annotations

import json
import math

import pytest

from minicni import fastjson

DOCUMENTS = [
    b'{"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}}',
    b' \n\t[1, -2.5e3, true, false, null, "\\u00e9\\n\\"x\\""] \r\n',
    b'"just a string"',
    b'{"a": {"b": {"c": []}}}',
    '{"caf\u00e9": "\u2603"}'.encode(),
    b"NaN",
    b'{"big": 123456789012345678901234567890}',
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_what_json_reads_it_reads_the_same(document: bytes) -> None:
    ours, theirs = fastjson.loads(document), json.loads(document)
    if isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == theirs
    assert fastjson.loads(document.decode()) == ours or math.isnan(ours)


@pytest.mark.parametrize(
    "document", [b"", b"   ", b"{", b'{"a": 1} trailing', b"[1,]", b"\xff\xfe{}", b"{'a': 1}"]
)
def test_what_json_refuses_it_refuses_with_a_value_error(document: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(document)
    with pytest.raises(ValueError):
        fastjson.loads(document)


def test_it_writes_what_json_reads_back_and_escapes_as_json_does() -> None:
    document = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}], "x": [1.5, None, True]}
    document["caf\u00e9"] = "\u2603"
    written = fastjson.dumps(document)
    assert written == json.dumps(document)
    assert json.loads(written) == document


def test_what_json_cannot_write_it_refuses() -> None:
    with pytest.raises(TypeError, match="set"):
        fastjson.dumps({"a": {1, 2}})


def test_a_refusal_needs_no_json_loaded_beforehand() -> None:
    """The C scanner raises json.JSONDecodeError from its own error path, which fails when the
    json package was never imported (as in the plugin's process)."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "from minicni import fastjson\n"
        "for bad in (b'{', b'[1,', b'{\"a\" 1}'):\n"
        "    try:\n"
        "        fastjson.loads(bad)\n"
        "    except ValueError as error:\n"
        "        print(type(error).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert run.stdout.split() == ["JSONDecodeError"] * 3, run.stderr
