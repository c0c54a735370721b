"""The user registry (registry.h): snapshots, look-ups and writes.

Contract: a ``Registry`` is an immutable snapshot of ``STATE_DIR/registry``
(a missing file is an empty registry); every record handed out is a
``User`` dataclass copied out of the C snapshot, so it stays valid after
the registry is closed. Look-ups return None when nothing matches; writes
(``add``, ``update``, ``remove``) go straight to the file with the
library's locking, and raise ``ExistsError``, ``NotFoundError``,
``InvalidError``, ``LockedError`` or ``IOFailure``.
"""

from __future__ import annotations

import ctypes
import enum
import os
from collections.abc import Iterator
from ctypes import POINTER, c_void_p
from dataclasses import asdict, dataclass

from . import errors
from ._lib import USER_VERSION, lib
from ._lib import User as _CUser
from ._util import decode, encode


class DomainKind(enum.IntEnum):
    """semail_domain_kind."""

    SUBDOMAIN = 1
    OWN = 2


class UserState(enum.IntEnum):
    """semail_user_state."""

    CREATING = 1
    ACTIVE = 2
    DELETING = 3


@dataclass
class User:
    """One box (semail_user). Optional strings are None when absent."""

    login: str
    id: str
    domain: str
    kind: DomainKind = DomainKind.SUBDOMAIN
    uid: int = 0
    gid: int = 0
    storage: str = "directory"
    size: int = 0
    container: str | None = None
    ssh_port: int = 0
    ssh_keys: str | None = None
    state: UserState = UserState.ACTIVE
    created: int = 0

    @property
    def address(self) -> str:
        """``id@domain``."""
        return f"{self.id}@{self.domain}"

    def as_dict(self) -> dict:
        """The record as a plain dict (enums as their names, lower case)."""
        d = asdict(self)
        d["kind"] = self.kind.name.lower()
        d["state"] = self.state.name.lower()
        d["address"] = self.address
        return d

    @classmethod
    def _from_c(cls, c: _CUser) -> User:
        return cls(
            login=decode(c.login),
            id=decode(c.id),
            domain=decode(c.domain),
            kind=DomainKind(c.kind),
            uid=c.uid,
            gid=c.gid,
            storage=decode(c.storage),
            size=c.size,
            container=decode(c.container),
            ssh_port=c.ssh_port,
            ssh_keys=decode(c.ssh_keys),
            state=UserState(c.state),
            created=c.created,
        )

    def _to_c(self) -> _CUser:
        return _CUser(
            version=USER_VERSION,
            login=encode(self.login),
            id=encode(self.id),
            domain=encode(self.domain),
            kind=int(self.kind),
            uid=self.uid,
            gid=self.gid,
            storage=encode(self.storage),
            size=self.size,
            container=encode(self.container),
            ssh_port=self.ssh_port,
            ssh_keys=encode(self.ssh_keys),
            state=int(self.state),
            created=self.created,
        )


class Registry:
    """A snapshot of the registry of a state directory.

    Iterating yields ``User`` records in login order; ``len()`` counts them.
    """

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = os.fspath(state_dir)
        h = c_void_p()
        errors.check(lib.semail_registry_load(ctypes.byref(h), encode(self.state_dir)))
        self._h = h

    @classmethod
    def load(cls, state_dir: str | os.PathLike) -> Registry:
        """Same as ``Registry(state_dir)``."""
        return cls(state_dir)

    def close(self) -> None:
        """Free the snapshot; records already returned stay valid."""
        if getattr(self, "_h", None):
            lib.semail_registry_free(self._h)
            self._h = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _handle(self) -> c_void_p:
        if not self._h:
            raise ValueError("registry is closed")
        return self._h

    def __len__(self) -> int:
        return lib.semail_registry_count(self._handle())

    def __iter__(self) -> Iterator[User]:
        h = self._handle()
        for i in range(lib.semail_registry_count(h)):
            p = lib.semail_registry_get(h, i)
            if p:
                yield User._from_c(p.contents)

    def users(self) -> list[User]:
        """Every record, in login order."""
        return list(self)

    def changed(self) -> bool:
        """Whether the file changed since this snapshot was loaded."""
        return bool(lib.semail_registry_changed(self._handle()))

    def _find(self, fn, *args) -> User | None:
        p = POINTER(_CUser)()
        err = fn(ctypes.byref(p), self._handle(), *args)
        if err == errors.ENOTFOUND:
            return None
        errors.check(err)
        return User._from_c(p.contents)

    def find_login(self, login: str) -> User | None:
        """The box of @p login, or None."""
        return self._find(lib.semail_registry_find_login, encode(login))

    def find_address(self, address_or_local: str, domain: str | None = None) -> User | None:
        """The active box receiving mail for ``local@domain`` (case-insensitive), or None.

        Accepts ``find_address("alice@x.test")`` or ``find_address("alice", "x.test")``.
        """
        if domain is None:
            local, sep, domain = address_or_local.rpartition("@")
            if not sep:
                raise ValueError(f"not an address: {address_or_local!r}")
        else:
            local = address_or_local
        return self._find(lib.semail_registry_find_address, encode(local), encode(domain))

    def has_domain(self, domain: str) -> bool:
        """Whether @p domain is the domain of any record."""
        return bool(lib.semail_registry_has_domain(self._handle(), encode(domain)))


def add(state_dir: str | os.PathLike, user: User) -> None:
    """Add a record (semail_registry_add)."""
    c = user._to_c()
    errors.check(lib.semail_registry_add(encode(state_dir), ctypes.byref(c)))


def update(state_dir: str | os.PathLike, user: User) -> None:
    """Replace the record with the same login (semail_registry_update)."""
    c = user._to_c()
    errors.check(lib.semail_registry_update(encode(state_dir), ctypes.byref(c)))


def remove(state_dir: str | os.PathLike, login: str) -> None:
    """Remove the record of @p login (semail_registry_remove)."""
    errors.check(lib.semail_registry_remove(encode(state_dir), encode(login)))


def validate_name(name: str) -> None:
    """Raise InvalidError unless @p name is a valid login or id."""
    errors.check(lib.semail_validate_name(encode(name)))


def validate_domain(domain: str) -> None:
    """Raise InvalidError unless @p domain is a valid DNS domain name."""
    errors.check(lib.semail_validate_domain(encode(domain)))
