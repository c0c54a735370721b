"""mbox delivery (mbox.h): folder names, appends and transactions.

Contract: ``append()`` and ``Transaction.commit()`` are durable and
all-or-nothing as in C: on success every append is fsync'd, on failure
(``LockedError``, ``FullError``, ``IOFailure``, ``PermissionError_``) every
file has its old size. A Transaction keeps the Python bytes of every added
message alive until it is closed, since the C side only borrows them.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import c_void_p
from dataclasses import dataclass

from . import errors
from ._lib import MBOX_FOLDER_MAX, MboxMessage, MboxOptions, lib, options_buffer
from ._util import decode, encode


def folder_name(recipient: str, sender: str | None = "") -> str:
    """The ``<recipient>,<sender>`` folder name (sender "" or None: MAILER-DAEMON)."""
    buf = ctypes.create_string_buffer(MBOX_FOLDER_MAX)
    errors.check(
        lib.semail_mbox_folder_name(buf, len(buf), encode(recipient), encode(sender or ""))
    )
    return decode(buf.value)


@dataclass
class Options:
    """semail_mbox_options; None leaves the library's default."""

    lock_timeout_ms: int | None = None
    stale_lock_s: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    def _to_c(self):
        buf, opts = options_buffer(MboxOptions)
        errors.check(lib.semail_mbox_options_init(buf))
        for name in ("lock_timeout_ms", "stale_lock_s", "file_mode", "uid", "gid"):
            value = getattr(self, name)
            if value is not None:
                setattr(opts, name, value)
        return buf


class _Message:
    """A semail_mbox_message and the bytes it points into."""

    def __init__(self, data, sender, date, prepend):
        self.data = encode(data)
        self.prepend = encode(prepend) if prepend is not None else b""
        self.sender = encode(sender) if sender is not None else None
        self.c = MboxMessage(
            sender=self.sender,
            date=int(date),
            prepend=ctypes.cast(ctypes.c_char_p(self.prepend), c_void_p) if self.prepend else None,
            prepend_len=len(self.prepend),
            data=ctypes.cast(ctypes.c_char_p(self.data), c_void_p),
            data_len=len(self.data),
        )


def _options_arg(options: Options | None):
    return options._to_c() if options is not None else None


def append(
    path: str | os.PathLike,
    data: bytes | str,
    *,
    sender: str | None = None,
    date: int = 0,
    prepend: bytes | str | None = None,
    options: Options | None = None,
) -> None:
    """Append one message to the mbox at @p path (created when missing).

    @p sender is the envelope sender of the ``From `` line (None or "":
    MAILER-DAEMON); @p date its time in seconds since the epoch (0: now);
    @p prepend headers written before the message.
    """
    msg = _Message(data, sender, date, prepend)
    opts = _options_arg(options)
    errors.check(lib.semail_mbox_append(encode(path), ctypes.byref(msg.c), opts))


class Transaction:
    """One message appended to several mboxes, all or nothing.

    Use as a context manager; ``commit()`` writes everything::

        with Transaction() as txn:
            txn.add("INBOX", data, sender="bob@example.org")
            txn.add("alice@x,bob@example.org", data, sender="bob@example.org")
            txn.commit()
    """

    def __init__(self, options: Options | None = None):
        self._opts = _options_arg(options)
        self._messages: list[_Message] = []
        h = c_void_p()
        errors.check(lib.semail_mbox_txn_new(ctypes.byref(h), self._opts))
        self._h = h

    def add(
        self,
        path: str | os.PathLike,
        data: bytes | str,
        *,
        sender: str | None = None,
        date: int = 0,
        prepend: bytes | str | None = None,
    ) -> None:
        """Add an append (nothing is written before ``commit()``)."""
        if not self._h:
            raise ValueError("transaction is closed")
        msg = _Message(data, sender, date, prepend)
        errors.check(lib.semail_mbox_txn_add(self._h, encode(path), ctypes.byref(msg.c)))
        self._messages.append(msg)

    def commit(self) -> None:
        """Lock, append, fsync, unlock: every append or none."""
        if not self._h:
            raise ValueError("transaction is closed")
        errors.check(lib.semail_mbox_txn_commit(self._h))

    def close(self) -> None:
        """Free the transaction (committed or not)."""
        if getattr(self, "_h", None):
            lib.semail_mbox_txn_free(self._h)
            self._h = None
        self._messages = []

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
