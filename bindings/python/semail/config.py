"""The configuration file (config.h): an immutable, validated INI file.

Contract: ``Config.load()`` and ``Config.parse()`` raise ``ConfigError``
(message "FILE:LINE: key 'K': what is wrong") or ``NotFoundError`` (no
file); getters raise ``KeyError`` for a key the schema does not know and
``InvalidError`` for a value of the wrong form. A Config owns its C handle
and frees it on ``close()``, at the end of a ``with`` block or when
collected.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_int, c_size_t, c_uint64, c_void_p

from . import errors
from ._lib import lib
from ._util import decode, encode


class Config:
    """A loaded configuration; use ``Config.load()`` or ``Config.parse()``."""

    DEFAULT_PATH = "/etc/semail/semail.conf"

    def __init__(self, handle: c_void_p):
        self._h = handle

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Config:
        """Read and validate a file; None: ``$SEMAIL_CONFIG`` or the default path."""
        h = c_void_p()
        errors.check(lib.semail_config_load(ctypes.byref(h), encode(path)))
        return cls(h)

    @classmethod
    def parse(cls, text: str | bytes, name: str = "<string>") -> Config:
        """Validate configuration text; @p name replaces the file name in errors."""
        data = encode(text)
        h = c_void_p()
        errors.check(lib.semail_config_parse(ctypes.byref(h), data, len(data), encode(name)))
        return cls(h)

    def close(self) -> None:
        """Free the C configuration; the object is unusable afterwards."""
        if getattr(self, "_h", None):
            lib.semail_config_free(self._h)
            self._h = None

    def __enter__(self) -> Config:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _handle(self) -> c_void_p:
        if not self._h:
            raise ValueError("configuration is closed")
        return self._h

    @property
    def path(self) -> str:
        """The file the configuration came from (or the name given to parse)."""
        return decode(lib.semail_config_path(self._handle()))

    def has_section(self, section: str) -> bool:
        """Whether ``[section]`` appeared in the file."""
        return bool(lib.semail_config_has_section(self._handle(), encode(section)))

    def get(self, section: str, key: str) -> str:
        """The value as text (the file's or the schema's default)."""
        raw = lib.semail_config_get(self._handle(), encode(section), encode(key))
        if raw is None:
            raise KeyError(f"[{section}] {key}: not in the configuration schema")
        return decode(raw)

    def __getitem__(self, item: tuple[str, str]) -> str:
        section, key = item
        return self.get(section, key)

    def _number(self, fn, ctype, section: str, key: str):
        out = ctype()
        err = fn(self._handle(), encode(section), encode(key), ctypes.byref(out))
        if err == errors.ENOTFOUND:
            raise KeyError(f"[{section}] {key}: not in the configuration schema")
        errors.check(err)
        return out.value

    def get_size(self, section: str, key: str) -> int:
        """A size (``52428800``, ``1G``, ``256m``) in bytes."""
        return self._number(lib.semail_config_get_size, c_uint64, section, key)

    def get_duration_ms(self, section: str, key: str) -> int:
        """A duration (``30s``, ``5m``; no unit: seconds) in milliseconds."""
        return self._number(lib.semail_config_get_duration_ms, c_uint64, section, key)

    def get_bool(self, section: str, key: str) -> bool:
        """A boolean (yes/no, true/false, on/off, 1/0)."""
        return bool(self._number(lib.semail_config_get_bool, c_int, section, key))

    def get_uint(self, section: str, key: str) -> int:
        """A non-negative integer."""
        return self._number(lib.semail_config_get_uint, c_uint64, section, key)

    def get_list(self, section: str, key: str) -> list[str]:
        """A comma-separated list, items trimmed, empty items dropped."""
        arr = POINTER(c_char_p)()
        count = c_size_t()
        err = lib.semail_config_get_list(
            self._handle(), encode(section), encode(key), ctypes.byref(arr), ctypes.byref(count)
        )
        if err == errors.ENOTFOUND:
            raise KeyError(f"[{section}] {key}: not in the configuration schema")
        errors.check(err)
        try:
            return [decode(arr[i]) for i in range(count.value)]
        finally:
            lib.semail_config_list_free(arr)

    def get_range(self, section: str, key: str) -> tuple[int, int]:
        """A range ``LOW-HIGH`` as (low, high)."""
        low, high = c_uint64(), c_uint64()
        err = lib.semail_config_get_range(
            self._handle(), encode(section), encode(key), ctypes.byref(low), ctypes.byref(high)
        )
        if err == errors.ENOTFOUND:
            raise KeyError(f"[{section}] {key}: not in the configuration schema")
        errors.check(err)
        return low.value, high.value
