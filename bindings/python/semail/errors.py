"""Python exceptions for libsemail's error convention (errors.h).

Contract: a C function returning a negative ``semail_err`` becomes an
exception whose class says the code (``NotFoundError`` for
SEMAIL_ENOTFOUND, ...), all derived from ``SemailError``, carrying the code
and the message of ``semail_error_last()`` read in the same thread right
after the failing call.
"""

from __future__ import annotations

from ._lib import lib

OK = 0
ERROR = -1
ENOTFOUND = -3
EEXISTS = -4
ELOCKED = -5
ETEMP = -6
EFULL = -7
EINVAL = -8
ENOMEM = -9
EIO = -10
ECONFIG = -11
ETOOBIG = -12
EPERM = -13

_NAMES = {
    ERROR: "SEMAIL_ERROR",
    ENOTFOUND: "SEMAIL_ENOTFOUND",
    EEXISTS: "SEMAIL_EEXISTS",
    ELOCKED: "SEMAIL_ELOCKED",
    ETEMP: "SEMAIL_ETEMP",
    EFULL: "SEMAIL_EFULL",
    EINVAL: "SEMAIL_EINVAL",
    ENOMEM: "SEMAIL_ENOMEM",
    EIO: "SEMAIL_EIO",
    ECONFIG: "SEMAIL_ECONFIG",
    ETOOBIG: "SEMAIL_ETOOBIG",
    EPERM: "SEMAIL_EPERM",
}


class SemailError(Exception):
    """A libsemail failure.

    Attributes:
        code: the negative ``semail_err`` value.
        name: its C name, e.g. ``"SEMAIL_ECONFIG"``.
        message: the text of ``semail_error_last()`` (may be empty).
    """

    def __init__(self, code: int, message: str):
        self.code = code
        self.name = _NAMES.get(code, f"SEMAIL_E({code})")
        self.message = message
        super().__init__(f"{message} [{self.name}]" if message else self.name)


class NotFoundError(SemailError, LookupError):
    """SEMAIL_ENOTFOUND: the object asked for does not exist."""


class ExistsError(SemailError):
    """SEMAIL_EEXISTS: the object to create already exists."""


class LockedError(SemailError):
    """SEMAIL_ELOCKED: a lock could not be taken in time; retry later."""


class TemporaryError(SemailError):
    """SEMAIL_ETEMP: a transient failure."""


class FullError(SemailError):
    """SEMAIL_EFULL: no space left."""


class InvalidError(SemailError, ValueError):
    """SEMAIL_EINVAL: an argument or input is malformed."""


class NoMemoryError(SemailError, MemoryError):
    """SEMAIL_ENOMEM."""


class IOFailure(SemailError, OSError):
    """SEMAIL_EIO: a system call failed (see the message)."""


class ConfigError(SemailError):
    """SEMAIL_ECONFIG: the message names file, line and key."""


class TooBigError(SemailError, ValueError):
    """SEMAIL_ETOOBIG: an input exceeds a limit."""


class NotPermittedError(SemailError, PermissionError):
    """SEMAIL_EPERM: the operation is not permitted."""


_CLASSES: dict[int, type[SemailError]] = {
    ENOTFOUND: NotFoundError,
    EEXISTS: ExistsError,
    ELOCKED: LockedError,
    ETEMP: TemporaryError,
    EFULL: FullError,
    EINVAL: InvalidError,
    ENOMEM: NoMemoryError,
    EIO: IOFailure,
    ECONFIG: ConfigError,
    ETOOBIG: TooBigError,
    EPERM: NotPermittedError,
}


def last_message() -> str:
    """semail_error_last() of the calling thread."""
    raw = lib.semail_error_last()
    return raw.decode("utf-8", "replace") if raw else ""


def strerror(code: int) -> str:
    """semail_strerror(): a short static description of @p code."""
    return lib.semail_strerror(code).decode("ascii", "replace")


def error_for(code: int) -> SemailError:
    """The exception for a negative return @p code, with the last message."""
    return _CLASSES.get(code, SemailError)(code, last_message())


def check(code: int) -> int:
    """Raise for a negative @p code; return it otherwise."""
    if code < 0:
        raise error_for(code)
    return code
