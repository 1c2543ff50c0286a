"""SHA-256 without hashlib: hashlib loads OpenSSL's libcrypto (~5 ms on every pod start) for a
digest the interpreter also has built in (`_sha256`; `_sha2` from Python 3.12)."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing

if TYPE_CHECKING:
    from collections.abc import Callable


def _builtin_sha256() -> Callable[[bytes], object]:
    for name in ("_sha256", "_sha2"):
        try:
            module = __import__(name)  # by name: no stubs, and only one exists per version
        except ImportError:
            continue
        return module.sha256  # type: ignore[no-any-return]
    import hashlib

    return hashlib.sha256


_SHA256 = _builtin_sha256()


def sha256_hex(data: bytes) -> str:
    digest = _SHA256(data)
    return digest.hexdigest()  # type: ignore[attr-defined,no-any-return]
