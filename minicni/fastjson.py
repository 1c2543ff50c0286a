"""JSON through the interpreter's C accelerator (`_json`), without the json package.

`json` imports re and enum (~3 ms on every pod start) to wrap the same C scanner and encoder the
plugin uses here directly. `loads` accepts what `json.loads` accepts (given UTF-8 bytes or a
string, NaN and Infinity included) and raises ValueError (json.JSONDecodeError, a subclass) for
what it refuses; `dumps` writes compact JSON, non-ASCII escaped, as `json.dumps` does by default.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What the C scanner reads of json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # the stubs want a JSONDecoder


def loads(document: str | bytes) -> Any:
    text = document.decode() if isinstance(document, bytes) else document  # UnicodeDecodeError
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise _error("Expecting value", text, stop.value) from None
    except SystemError:
        # The C scanner's own error path raises json.JSONDecodeError, and fails when json was
        # never imported: let json itself say what is wrong (an error path: pay for json here).
        import json

        return json.loads(text)
    if text[end:].strip(_WHITESPACE):
        raise _error("Extra data", text, end + len(text[end:]) - len(text[end:].lstrip()))
    return value


def _error(message: str, text: str, position: int) -> ValueError:
    from json import JSONDecodeError  # an error path: pay for json only here

    return JSONDecodeError(message, text, position)


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    {}, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def dumps(value: object) -> str:
    return "".join(_encode(value, 0))
