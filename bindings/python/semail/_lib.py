"""Loading libsemail.so.0 and declaring its C API for ctypes.

Contract: the structures below mirror include/semail/*.h field for field
(same order, same C types). Option structures that the library may grow
(semail_session_options, semail_mbox_options) are never allocated at the
size known here: callers use ``options_buffer()``, which reserves room for
fields appended by a newer library and lets that library's ``*_init``
function fill in its own defaults and version.

Where the library is looked for, first match wins:

1. ``$SEMAIL_LIBRARY``: the path of the shared library; when set, nothing
   else is tried.
2. ``$SEMAIL_BUILD/lib/libsemail.so.0`` (a CMake build directory).
3. ``<repository>/build/lib/libsemail.so.0`` when this package is used from
   a source checkout (bindings/python/semail/).
4. ``libsemail.so.0`` through the dynamic loader's search (the installed
   library, e.g. the libsemail0 Debian package).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

SONAME = "libsemail.so.0"

# smtp.h limits.
LOCAL_MAX = 64
DOMAIN_MAX = 255
PATH_MAX = 256
REPLY_MAX = 512
# mbox.h
MBOX_FOLDER_MAX = 1024

# Room reserved for an options structure, far beyond what the headers hold
# today, so that fields a newer library appends land in owned memory.
OPTIONS_RESERVE = 1024

uid_t = c_uint32
gid_t = c_uint32
time_t = ctypes.c_long


class Address(Structure):
    """struct semail_address (smtp.h)."""

    _fields_ = [
        ("is_null", c_int),
        ("local_quoted", c_int),
        ("local", c_char * (LOCAL_MAX + 1)),
        ("domain", c_char * (DOMAIN_MAX + 1)),
    ]


class Reply(Structure):
    """struct semail_reply (smtp.h)."""

    _fields_ = [
        ("code", c_int),
        ("enhanced", c_char * 16),
        ("text", c_char * REPLY_MAX),
    ]


class Envelope(Structure):
    """struct semail_envelope (smtp.h); only ever read through a pointer."""

    _fields_ = [
        ("helo", c_char_p),
        ("esmtp", c_int),
        ("sender", POINTER(Address)),
        ("rcpts", POINTER(Address)),
        ("rcpt_count", c_size_t),
        ("declared_size", c_size_t),
        ("body_8bit", c_int),
        ("client_addr", c_char_p),
        ("txn_id", c_char_p),
    ]


RcptCallback = CFUNCTYPE(c_int, POINTER(Reply), POINTER(Envelope), POINTER(Address), c_void_p)
MessageCallback = CFUNCTYPE(c_int, POINTER(Reply), POINTER(Envelope), c_void_p, c_size_t, c_void_p)


class SessionOptions(Structure):
    """struct semail_session_options (smtp.h), the fields known here."""

    _fields_ = [
        ("version", c_uint),
        ("hostname", c_char_p),
        ("client_addr", c_char_p),
        ("max_message_size", c_size_t),
        ("max_recipients", c_uint),
        ("max_errors", c_uint),
        ("rcpt", RcptCallback),
        ("message", MessageCallback),
        ("payload", c_void_p),
    ]


class SessionStats(Structure):
    """struct semail_session_stats (smtp.h)."""

    _fields_ = [("messages", c_uint), ("rejected", c_uint), ("commands", c_uint)]


class MboxMessage(Structure):
    """struct semail_mbox_message (mbox.h)."""

    _fields_ = [
        ("sender", c_char_p),
        ("date", time_t),
        ("prepend", c_void_p),
        ("prepend_len", c_size_t),
        ("data", c_void_p),
        ("data_len", c_size_t),
    ]


class MboxOptions(Structure):
    """struct semail_mbox_options (mbox.h), the fields known here."""

    _fields_ = [
        ("version", c_uint),
        ("lock_timeout_ms", c_uint),
        ("stale_lock_s", c_uint),
        ("file_mode", c_int),
        ("uid", uid_t),
        ("gid", gid_t),
    ]


USER_VERSION = 1


class User(Structure):
    """struct semail_user (registry.h), version 1."""

    _fields_ = [
        ("version", c_uint),
        ("login", c_char_p),
        ("id", c_char_p),
        ("domain", c_char_p),
        ("kind", c_int),
        ("uid", uid_t),
        ("gid", gid_t),
        ("storage", c_char_p),
        ("size", c_uint64),
        ("container", c_char_p),
        ("ssh_port", c_int),
        ("ssh_keys", c_char_p),
        ("state", c_int),
        ("created", c_int64),
    ]


def options_buffer(struct_type: type[Structure]):
    """A zeroed buffer of OPTIONS_RESERVE bytes seen as @p struct_type.

    Returns (buffer, view): keep the buffer alive as long as the view.
    """
    size = max(OPTIONS_RESERVE, ctypes.sizeof(struct_type))
    buf = ctypes.create_string_buffer(size)
    return buf, struct_type.from_buffer(buf)


def _candidates() -> list[str]:
    explicit = os.environ.get("SEMAIL_LIBRARY")
    if explicit:
        return [explicit]
    found = []
    build = os.environ.get("SEMAIL_BUILD")
    if build:
        found.append(str(Path(build) / "lib" / SONAME))
    repo = Path(__file__).resolve().parents[3]
    found.append(str(repo / "build" / "lib" / SONAME))
    found.append(SONAME)
    return found


def _load() -> ctypes.CDLL:
    tried = []
    for cand in _candidates():
        if os.sep in cand and not os.path.exists(cand):
            tried.append(f"{cand}: no such file")
            continue
        try:
            return ctypes.CDLL(cand)
        except OSError as exc:
            tried.append(f"{cand}: {exc}")
    raise OSError(
        "cannot load libsemail (set SEMAIL_LIBRARY to its path or SEMAIL_BUILD to a build "
        "directory); tried: " + "; ".join(tried)
    )


lib = _load()


def _fn(name: str, restype, *argtypes) -> None:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


PP = POINTER(c_void_p)

# errors.h, version.h
_fn("semail_error_last", c_char_p)
_fn("semail_error_last_code", c_int)
_fn("semail_strerror", c_char_p, c_int)
_fn("semail_error_clear", None)
_fn("semail_version", c_char_p, POINTER(c_int), POINTER(c_int), POINTER(c_int))

# config.h
_fn("semail_config_load", c_int, PP, c_char_p)
_fn("semail_config_parse", c_int, PP, c_char_p, c_size_t, c_char_p)
_fn("semail_config_free", None, c_void_p)
_fn("semail_config_path", c_char_p, c_void_p)
_fn("semail_config_has_section", c_int, c_void_p, c_char_p)
_fn("semail_config_get", c_char_p, c_void_p, c_char_p, c_char_p)
_fn("semail_config_get_size", c_int, c_void_p, c_char_p, c_char_p, POINTER(c_uint64))
_fn("semail_config_get_duration_ms", c_int, c_void_p, c_char_p, c_char_p, POINTER(c_uint64))
_fn("semail_config_get_bool", c_int, c_void_p, c_char_p, c_char_p, POINTER(c_int))
_fn("semail_config_get_uint", c_int, c_void_p, c_char_p, c_char_p, POINTER(c_uint64))
_fn(
    "semail_config_get_list",
    c_int,
    c_void_p,
    c_char_p,
    c_char_p,
    POINTER(POINTER(c_char_p)),
    POINTER(c_size_t),
)
_fn("semail_config_list_free", None, POINTER(c_char_p))
_fn(
    "semail_config_get_range",
    c_int,
    c_void_p,
    c_char_p,
    c_char_p,
    POINTER(c_uint64),
    POINTER(c_uint64),
)

# smtp.h: addresses, replies, sessions
_fn(
    "semail_address_parse",
    c_int,
    POINTER(Address),
    c_char_p,
    c_size_t,
    c_uint,
    POINTER(c_size_t),
)
_fn("semail_address_format", c_int, c_char_p, c_size_t, POINTER(Address))
# semail_reply_set is variadic: no argtypes, arguments passed as ctypes objects.
lib.semail_reply_set.restype = None
_fn("semail_session_options_init", c_int, c_void_p)
_fn("semail_session_new", c_int, PP, c_void_p)
_fn("semail_session_free", None, c_void_p)
_fn("semail_session_feed", c_int, c_void_p, c_char_p, c_size_t)
_fn("semail_session_output", POINTER(c_char), c_void_p, POINTER(c_size_t))
_fn("semail_session_output_consume", None, c_void_p, c_size_t)
_fn("semail_session_state_get", c_int, c_void_p)
_fn("semail_session_idle", c_int, c_void_p)
_fn("semail_session_shutdown", None, c_void_p, c_char_p, c_char_p)
_fn("semail_session_stats_get", None, c_void_p, POINTER(SessionStats))

# mbox.h
_fn("semail_mbox_folder_name", c_int, c_char_p, c_size_t, c_char_p, c_char_p)
_fn("semail_mbox_options_init", c_int, c_void_p)
_fn("semail_mbox_txn_new", c_int, PP, c_void_p)
_fn("semail_mbox_txn_add", c_int, c_void_p, c_char_p, POINTER(MboxMessage))
_fn("semail_mbox_txn_commit", c_int, c_void_p)
_fn("semail_mbox_txn_free", None, c_void_p)
_fn("semail_mbox_append", c_int, c_char_p, POINTER(MboxMessage), c_void_p)

# registry.h
_fn("semail_registry_load", c_int, PP, c_char_p)
_fn("semail_registry_free", None, c_void_p)
_fn("semail_registry_changed", c_int, c_void_p)
_fn("semail_registry_count", c_size_t, c_void_p)
_fn("semail_registry_get", POINTER(User), c_void_p, c_size_t)
_fn("semail_registry_find_login", c_int, POINTER(POINTER(User)), c_void_p, c_char_p)
_fn(
    "semail_registry_find_address",
    c_int,
    POINTER(POINTER(User)),
    c_void_p,
    c_char_p,
    c_char_p,
)
_fn("semail_registry_has_domain", c_int, c_void_p, c_char_p)
_fn("semail_registry_add", c_int, c_char_p, POINTER(User))
_fn("semail_registry_update", c_int, c_char_p, POINTER(User))
_fn("semail_registry_remove", c_int, c_char_p, c_char_p)
_fn("semail_validate_name", c_int, c_char_p)
_fn("semail_validate_domain", c_int, c_char_p)
_fn("semail_validate_label", c_int, c_char_p)
