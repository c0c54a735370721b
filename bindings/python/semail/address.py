"""SMTP paths (smtp.h): parsing and formatting mailbox addresses.

Contract: ``parse_address("<a@b>")`` runs semail_address_parse() (RFC 5321
4.1.2, angle brackets required) and returns an ``Address``; syntax errors
raise ``InvalidError``, limits ``TooBigError``. ``str(address)`` is
semail_address_format(): ``local@domain`` with the local part quoted when it
needs it, "" for the null path.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from . import errors
from ._lib import PATH_MAX, lib
from ._lib import Address as _CAddress
from ._util import decode, encode

ALLOW_NULL = 1 << 0
ALLOW_POSTMASTER = 1 << 1


@dataclass(frozen=True)
class Address:
    """A parsed path: local part (unquoted) and domain (as written)."""

    local: str
    domain: str
    is_null: bool = False
    local_quoted: bool = False
    consumed: int = field(default=0, compare=False)
    """Bytes of the parsed text that the path used (parameters may follow)."""

    @classmethod
    def _from_c(cls, c: _CAddress, consumed: int = 0) -> Address:
        return cls(
            local=decode(c.local),
            domain=decode(c.domain),
            is_null=bool(c.is_null),
            local_quoted=bool(c.local_quoted),
            consumed=consumed,
        )

    def _to_c(self) -> _CAddress:
        c = _CAddress()
        c.is_null = int(self.is_null)
        c.local_quoted = int(self.local_quoted)
        c.local = encode(self.local)
        c.domain = encode(self.domain)
        return c

    def __str__(self) -> str:
        buf = ctypes.create_string_buffer(PATH_MAX + 3)
        errors.check(lib.semail_address_format(buf, len(buf), ctypes.byref(self._to_c())))
        return decode(buf.value)


def parse_address(
    text: str | bytes, *, allow_null: bool = False, allow_postmaster: bool = False
) -> Address:
    """Parse a path such as ``<alice@example.org>``; text after it is allowed
    (see ``Address.consumed``)."""
    data = encode(text)
    flags = (ALLOW_NULL if allow_null else 0) | (ALLOW_POSTMASTER if allow_postmaster else 0)
    out = _CAddress()
    consumed = ctypes.c_size_t()
    errors.check(
        lib.semail_address_parse(ctypes.byref(out), data, len(data), flags, ctypes.byref(consumed))
    )
    return Address._from_c(out, consumed.value)
