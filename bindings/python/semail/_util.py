"""Text conversions between Python and the C API.

Contract: C strings are bytes; Python callers may pass str (encoded as
UTF-8, lone surrogates from surrogateescape turned back into their bytes),
bytes, or os.PathLike. Bytes coming back are decoded the same way, so that
any byte sequence survives a round trip.
"""

from __future__ import annotations

import os


def encode(value) -> bytes | None:
    """str / bytes / PathLike / None to bytes (or None)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def decode(raw: bytes | None) -> str | None:
    """bytes (or None) to str, losslessly (surrogateescape)."""
    if raw is None:
        return None
    return raw.decode("utf-8", "surrogateescape")
