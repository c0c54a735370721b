"""The SMTP server session (smtp.h): bytes in, replies and callbacks out.

Contract: a ``Session`` wraps one semail_session. Python callables decide
on recipients and take delivery of messages; they are called from inside
``feed()`` (and ``consume()``/``read()``, which may resume a paused
session), in the calling thread. Their return value becomes the reply:

- ``rcpt(envelope, address)``: True (250 2.1.5 Ok), False (550 5.1.1 user
  unknown), a ``Reply`` or a ``(code, enhanced, text)`` tuple;
- ``message(envelope, data)``: True or None (250 2.0.0 Ok: queued as the
  transaction id), False (554 5.0.0), a ``Reply`` or a tuple. @p data is
  the message as bytes, lines ending in CRLF, dot-unstuffed.

An exception raised by a callback never crosses the C code: the session
answers ``451 4.3.0`` as for any failed decision, and the exception is
re-raised by the ``feed()``/``consume()`` call that triggered it (the
session stays usable). The ctypes callback objects live as long as the
Session, which is what keeps them callable.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Callable
from ctypes import c_char_p, c_int, c_size_t, c_void_p
from dataclasses import dataclass

from . import errors
from ._lib import (
    MessageCallback,
    RcptCallback,
    SessionOptions,
    SessionStats,
    lib,
    options_buffer,
)
from .address import Address
from ._util import decode, encode


class SessionState(enum.IntEnum):
    """semail_session_state."""

    INIT = 0
    READY = 1
    MAIL = 2
    RCPT = 3
    DATA = 4
    CLOSED = 5
    AUTH = 6


@dataclass(frozen=True)
class Reply:
    """A reply a callback gives: code, enhanced status code, one line of text."""

    code: int
    enhanced: str
    text: str


@dataclass(frozen=True)
class Envelope:
    """The transaction in progress, as the callbacks see it (a copy)."""

    helo: str | None
    esmtp: bool
    sender: Address | None
    rcpts: list[Address]
    declared_size: int
    body_8bit: bool
    client_addr: str | None
    txn_id: str | None

    @classmethod
    def _from_c(cls, env) -> Envelope:
        sender = Address._from_c(env.sender.contents) if env.sender else None
        rcpts = [Address._from_c(env.rcpts[i]) for i in range(env.rcpt_count)] if env.rcpts else []
        return cls(
            helo=decode(env.helo),
            esmtp=bool(env.esmtp),
            sender=sender,
            rcpts=rcpts,
            declared_size=env.declared_size,
            body_8bit=bool(env.body_8bit),
            client_addr=decode(env.client_addr),
            txn_id=decode(env.txn_id),
        )


@dataclass(frozen=True)
class Stats:
    """semail_session_stats."""

    messages: int
    rejected: int
    commands: int


RcptFn = Callable[[Envelope, Address], object]
MessageFn = Callable[[Envelope, bytes], object]


def _set_reply(reply_p, result, default_ok: Reply, default_no: Reply) -> None:
    if result is True:
        result = default_ok
    elif result is False:
        result = default_no
    if isinstance(result, tuple):
        result = Reply(*result)
    if not isinstance(result, Reply):
        raise TypeError(
            f"callback returned {result!r}: expected True, False, a Reply or (code, enhanced, text)"
        )
    lib.semail_reply_set(
        reply_p,
        c_int(result.code),
        c_char_p(encode(result.enhanced)),
        c_char_p(b"%s"),
        c_char_p(encode(result.text)),
    )


class Session:
    """An SMTP server session; the ``220`` greeting is pending at once.

    Args:
        hostname: our name, in the greeting and the EHLO reply.
        rcpt: recipient decision (see the module's contract).
        message: delivery (see the module's contract).
        client_addr: the client's address, for the envelope.
        max_message_size: advertised SIZE (0: no limit advertised).
        max_recipients: RCPT over this answer 452 (0: the library's default).
        max_errors: errors before 421 and close (0: the library's default).
    """

    def __init__(
        self,
        hostname: str,
        rcpt: RcptFn,
        message: MessageFn,
        *,
        client_addr: str | None = None,
        max_message_size: int = 0,
        max_recipients: int = 0,
        max_errors: int = 0,
    ):
        self._rcpt_fn = rcpt
        self._message_fn = message
        self._pending_exc: BaseException | None = None
        # The CFUNCTYPE objects must outlive every call into the session.
        self._rcpt_c = RcptCallback(self._on_rcpt)
        self._message_c = MessageCallback(self._on_message)
        self._opts_buf, opts = options_buffer(SessionOptions)
        errors.check(lib.semail_session_options_init(self._opts_buf))
        self._hostname = encode(hostname)
        self._client_addr = encode(client_addr)
        opts.hostname = self._hostname
        opts.client_addr = self._client_addr
        opts.max_message_size = max_message_size
        opts.max_recipients = max_recipients
        opts.max_errors = max_errors
        opts.rcpt = self._rcpt_c
        opts.message = self._message_c
        opts.payload = None
        h = c_void_p()
        errors.check(lib.semail_session_new(ctypes.byref(h), self._opts_buf))
        self._h = h

    # -- callbacks (called from C) -------------------------------------------

    def _fail(self, exc: BaseException) -> int:
        if self._pending_exc is None:
            self._pending_exc = exc
        return errors.ERROR

    def _on_rcpt(self, reply_p, env_p, addr_p, payload) -> int:
        try:
            env = Envelope._from_c(env_p.contents)
            addr = Address._from_c(addr_p.contents)
            result = self._rcpt_fn(env, addr)
            _set_reply(
                reply_p,
                result,
                Reply(250, "2.1.5", "Ok"),
                Reply(550, "5.1.1", f"<{addr}>: Recipient address rejected: User unknown"),
            )
            return 0
        except BaseException as exc:  # never unwind through C
            return self._fail(exc)

    def _on_message(self, reply_p, env_p, data_p, length, payload) -> int:
        try:
            env = Envelope._from_c(env_p.contents)
            data = ctypes.string_at(data_p, length) if length else b""
            result = self._message_fn(env, data)
            if result is None:
                result = True
            _set_reply(
                reply_p,
                result,
                Reply(250, "2.0.0", f"Ok: queued as {env.txn_id or ''}".rstrip()),
                Reply(554, "5.0.0", "Transaction failed"),
            )
            return 0
        except BaseException as exc:
            return self._fail(exc)

    def _raise_pending(self) -> None:
        exc, self._pending_exc = self._pending_exc, None
        if exc is not None:
            raise exc

    # -- the session ----------------------------------------------------------

    def _handle(self) -> c_void_p:
        if not self._h:
            raise ValueError("session is closed")
        return self._h

    def feed(self, data: bytes | str) -> None:
        """Feed bytes received from the client (callbacks run here)."""
        raw = encode(data)
        err = lib.semail_session_feed(self._handle(), raw, len(raw))
        self._raise_pending()
        errors.check(err)

    def output(self) -> bytes:
        """The pending output, without consuming it."""
        n = c_size_t()
        p = lib.semail_session_output(self._handle(), ctypes.byref(n))
        return ctypes.string_at(p, n.value) if n.value else b""

    def consume(self, n: int) -> None:
        """Mark @p n bytes of output as sent (may resume a paused session)."""
        lib.semail_session_output_consume(self._handle(), n)
        self._raise_pending()

    def read(self) -> bytes:
        """Take all pending output (what a server would send now)."""
        out = b""
        while True:
            chunk = self.output()
            if not chunk:
                return out
            out += chunk
            self.consume(len(chunk))

    def exchange(self, data: bytes | str) -> bytes:
        """``feed(data)`` then ``read()``: the replies to @p data."""
        self.feed(data)
        return self.read()

    @property
    def state(self) -> SessionState | int:
        """The current state (a plain int for a state newer than this binding)."""
        value = lib.semail_session_state_get(self._handle())
        try:
            return SessionState(value)
        except ValueError:
            return value

    @property
    def idle(self) -> bool:
        """Between commands with no partial input."""
        return bool(lib.semail_session_idle(self._handle()))

    @property
    def closed(self) -> bool:
        """The session said its last word (QUIT, 421): send the output, close."""
        return self.state == SessionState.CLOSED

    def shutdown(self, enhanced: str | None = None, text: str | None = None) -> None:
        """Queue a 421 reply and close the session (timeouts, shutdown)."""
        lib.semail_session_shutdown(self._handle(), encode(enhanced), encode(text))

    def stats(self) -> Stats:
        """Messages accepted, commands rejected, commands processed."""
        s = SessionStats()
        lib.semail_session_stats_get(self._handle(), ctypes.byref(s))
        return Stats(s.messages, s.rejected, s.commands)

    def close(self) -> None:
        """Free the C session."""
        if getattr(self, "_h", None):
            lib.semail_session_free(self._h)
            self._h = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
