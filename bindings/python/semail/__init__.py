"""semail: Python bindings of libsemail (ctypes, no compiled code).

Contract: every function and class here calls the C library
``libsemail.so.0`` (found through ``$SEMAIL_LIBRARY``, ``$SEMAIL_BUILD/lib``,
the source tree's ``build/lib``, then the system's loader path) and turns
its negative ``semail_err`` returns into ``SemailError`` subclasses carrying
the code and ``semail_error_last()``.

    >>> import semail
    >>> semail.version()
    '0.1.0'
    >>> semail.mbox.folder_name("alice@alice.semail.test", "Bob@Example.org")
    'alice@alice.semail.test,bob@example.org'
"""

from __future__ import annotations

import ctypes

from . import errors, mbox, registry
from ._lib import lib
from .address import Address, parse_address
from .config import Config
from .errors import (
    ConfigError,
    ExistsError,
    FullError,
    InvalidError,
    IOFailure,
    LockedError,
    NotFoundError,
    NotPermittedError,
    SemailError,
    TemporaryError,
    TooBigError,
)
from .mbox import folder_name
from .registry import Registry, User
from .session import Envelope, Reply, Session, SessionState, Stats

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "Envelope",
    "ExistsError",
    "FullError",
    "IOFailure",
    "InvalidError",
    "LockedError",
    "NotFoundError",
    "NotPermittedError",
    "Registry",
    "Reply",
    "SemailError",
    "Session",
    "SessionState",
    "Stats",
    "TemporaryError",
    "TooBigError",
    "User",
    "errors",
    "folder_name",
    "library_path",
    "mbox",
    "parse_address",
    "registry",
    "version",
    "version_info",
]


def version() -> str:
    """The version of the loaded library, e.g. ``"0.1.0"``."""
    return lib.semail_version(None, None, None).decode("ascii")


def version_info() -> tuple[int, int, int]:
    """(major, minor, patch) of the loaded library."""
    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.semail_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return major.value, minor.value, patch.value


def library_path() -> str:
    """The file name the C library was loaded from."""
    return lib._name
