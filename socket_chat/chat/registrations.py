"""Names that belong to someone: the first key to take a name registers it,
and from then on that name and every name that looks the same (its
``names.key``) is that key's alone, online or offline (as NickServ's
registered nicks, without a password: the key's proof is the password).

``Registrations`` is the table, in memory, pure: it answers at once (a
join asks it, under no lock of the room's), with time from an injected
clock. What changes is handed to a ``RegistrationStore`` (the server's
SQLite file, ``socket_chat.server.store``), which writes it later, off the
delivery path; the table is read from it once, at start.

Rules:
- A guest (no key) never registers a name and never takes a registered one.
- A key holds ``MAX_NAMES_PER_KEY`` names at most. At the cap, a free name
  is still the key's to use while online (as NickServ leaves an
  unregistered nick usable), but it is not registered: anyone may take it
  once the key is gone.
- A registration unused (its key not online under it) for ``expiry_days``
  lapses: it is free again, for anyone. 0: never.
- The operator may release one (``release``).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from socket_chat.chat import names

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "MAX_NAMES_PER_KEY",
    "Registration",
    "RegistrationStore",
    "Registrations",
    "Taken",
]

DEFAULT_EXPIRY_DAYS = 180  # NickServ's usual EXPIRE is 21 to 60 days; a chat seen less often gets longer
MAX_NAMES_PER_KEY = 5  # as NickServ's MAXNICKS (Atheme: 5 by default)
DAY = 86_400


@dataclass(frozen=True)
class Registration:
    """A name (as first registered), its key's fingerprint, and when (Unix
    time, whole seconds) it was registered and last used."""

    name: str
    fingerprint: str
    registered_at: int
    used_at: int


class RegistrationStore(Protocol):
    """What the registrations need of a store (the server's file)."""

    def registrations(self) -> list[Registration]:
        """The registrations stored before this server started (read when
        the store was opened: no I/O here)."""
        ...

    def save_registration(self, registration: Registration) -> None:
        """Store ``registration`` (replacing one of its name) later: O(1),
        never a wait for the disk."""
        ...

    def drop_registration(self, name: str) -> None:
        """Forget the registration of ``name`` (as registered) later: O(1)."""
        ...


class Taken(enum.Enum):
    """What ``Registrations.take`` did."""

    REGISTERED = "registered"  #: the name was free: it is the key's now
    RENEWED = "renewed"  #: the key's already: marked as used
    AT_CAP = "at cap"  #: free, but the key holds the most it may: not registered
    GUEST = "guest"  #: no key: nothing is registered
    #: another key registered it between the check and the taking (the name
    #: freed meanwhile, by a kick, say): it stays theirs
    OTHERS = "others"


class Registrations:
    """The registered names, by ``names.key``; safe to call from any thread.

    Args:
        store: where changes go (None: in memory only, lost at exit).
        expiry_days: days unused after which a registration lapses (0: never).
        cap: names one key may hold.
        clock: Unix time (tests pin it).
    """

    def __init__(
        self,
        store: RegistrationStore | None = None,
        expiry_days: float = DEFAULT_EXPIRY_DAYS,
        cap: int = MAX_NAMES_PER_KEY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._expiry, self.cap, self._clock = store, expiry_days * DAY, cap, clock
        self._lock = threading.Lock()
        self._by_key: dict[str, Registration] = {}
        # Oldest first: of two stored names that now share a key (a newer
        # skeleton table), the first registered keeps it.
        for registration in sorted(store.registrations() if store else [], key=lambda r: r.registered_at):
            self._by_key.setdefault(names.key(registration.name), registration)

    def lookup(self, name: str) -> Registration | None:
        """The registration of ``name`` or a look-alike, if one is in force
        (a lapsed one is dropped here)."""
        with self._lock:
            registration, lapsed = self._current(names.key(name))
        self._drop(lapsed)
        return registration

    def may_use(self, name: str, fingerprint: str | None) -> bool:
        """Whether ``fingerprint`` (None: a guest) may take ``name``: it is
        registered to no key, or to this one."""
        registration = self.lookup(name)
        return registration is None or registration.fingerprint == fingerprint

    def take(self, name: str, fingerprint: str | None) -> Taken:
        """``fingerprint`` has taken ``name`` (``may_use`` said it could):
        register it if it is free and the key is under the cap, or mark its
        registration as used."""
        if fingerprint is None:
            return Taken.GUEST
        now = int(self._clock())
        with self._lock:
            key = names.key(name)
            held, lapsed = self._current(key)
            if held is not None and held.fingerprint != fingerprint:
                registration, taken = None, Taken.OTHERS
            elif held is not None:
                registration, taken = replace(held, used_at=now), Taken.RENEWED
            elif sum(r.fingerprint == fingerprint and not self._lapsed(r) for r in self._by_key.values()) >= self.cap:
                registration, taken = None, Taken.AT_CAP
            else:
                registration, taken = Registration(name, fingerprint, now, now), Taken.REGISTERED
            if registration is not None:
                self._by_key[key] = registration
        self._drop(lapsed)  # the store is called with no lock of ours held
        if registration is not None and self._store is not None:
            self._store.save_registration(registration)
        return taken

    def release(self, name: str) -> Registration | None:
        """Free ``name`` (the operator's ``/release``); the registration it
        had, or None if it had none."""
        with self._lock:
            registration = self._by_key.pop(names.key(name), None)
        self._drop(registration)
        return None if registration is None or self._lapsed(registration) else registration

    def held_by(self, fingerprint: str) -> list[Registration]:
        """The registrations of one key, oldest first."""
        with self._lock:
            held = [r for r in self._by_key.values() if r.fingerprint == fingerprint]
        return sorted(held, key=lambda r: r.registered_at)

    def _current(self, key: str) -> tuple[Registration | None, Registration | None]:
        """Under the lock: (the registration of ``key`` in force, or None;
        the one that lapsed, taken out here, for ``_drop``)."""
        registration = self._by_key.get(key)
        if registration is None or not self._lapsed(registration):
            return registration, None
        del self._by_key[key]
        return None, registration

    def _drop(self, registration: Registration | None) -> None:
        """Tell the store a registration is gone (outside the lock)."""
        if registration is not None and self._store is not None:
            self._store.drop_registration(registration.name)

    def _lapsed(self, registration: Registration) -> bool:
        return bool(self._expiry) and self._clock() - registration.used_at >= self._expiry
