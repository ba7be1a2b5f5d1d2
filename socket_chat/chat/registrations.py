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

One person, several devices (``/device add``): the key that holds a
person's names (the owner) may let other keys (its devices) use them. A
device shares the owner's names and the owner's cap: what it registers is
the owner's. Only the owner adds or removes devices, and a device cannot
have devices of its own (as a Matrix account's master key signs its
devices, and a device signs none): a stolen device key cannot add more keys,
nor take the owner's away; the owner removes it. A removed device
disconnects nothing; its next join is a stranger's.

``NameRegistry`` is what the session needs of a table of registered names:
``Registrations`` here (one server), or ``server.cluster_names`` in a
cluster, whose ``may_use`` raises ``RegistryUnavailable`` when it cannot
tell (Redis is lost and the name was not seen before).
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
    "MAX_DEVICES",
    "MAX_NAMES_PER_KEY",
    "Device",
    "DeviceAdded",
    "NameRegistry",
    "Registration",
    "RegistryUnavailable",
    "RegistrationStore",
    "Registrations",
    "Taken",
]

DEFAULT_EXPIRY_DAYS = 180  # NickServ's usual EXPIRE is 21 to 60 days; a chat seen less often gets longer
MAX_NAMES_PER_KEY = 5  # as NickServ's MAXNICKS (Atheme: 5 by default)
MAX_DEVICES = 10  # keys one person may add besides their own (a phone, a laptop, a spare...)
DAY = 86_400


class RegistryUnavailable(Exception):
    """The registered names cannot be read now (a cluster's Redis is lost):
    whether a name is free cannot be told."""


@dataclass(frozen=True)
class Registration:
    """A name (as first registered), its key's fingerprint, and when (Unix
    time, whole seconds) it was registered and last used."""

    name: str
    fingerprint: str
    registered_at: int
    used_at: int


@dataclass(frozen=True)
class Device:
    """A key (``fingerprint``) that may use the names of ``owner``'s key,
    since ``added_at`` (Unix time, whole seconds)."""

    fingerprint: str
    owner: str
    added_at: int


class DeviceAdded(enum.Enum):
    """What ``add_device`` did (or why it did not)."""

    ADDED = "added"
    ALREADY = "already"  #: a device of this owner already
    SELF = "self"  #: the owner's own key
    NOT_OWNER = "not owner"  #: the asking key is itself a device: only owners add devices
    NO_NAMES = "no names"  #: the asking key holds no registered name: it is no one's owner
    OTHERS = "others"  #: the key is a device of another person
    HAS_DEVICES = "has devices"  #: the key is an owner with devices: no chains
    TOO_MANY = "too many"  #: the owner has ``MAX_DEVICES`` already


class NameRegistry(Protocol):
    """What a session and the console need of the registered names."""

    cap: int

    def lookup(self, name: str) -> Registration | None: ...

    def may_use(self, name: str, fingerprint: str | None) -> bool:
        """Raises RegistryUnavailable if it cannot be told."""
        ...

    def take(self, name: str, fingerprint: str | None) -> Taken: ...

    def release(self, name: str) -> Registration | None: ...

    def held_by(self, fingerprint: str) -> list[Registration]: ...

    def owner_of(self, fingerprint: str) -> str:
        """The owner whose names ``fingerprint`` uses: its own, or, for a device, its owner's."""
        ...

    def add_device(self, owner: str, device: str) -> DeviceAdded: ...

    def remove_device(self, owner: str, device: str) -> bool: ...

    def devices_of(self, owner: str) -> list[Device]: ...


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

    def devices(self) -> list[Device]:
        """The devices stored before this server started (no I/O here)."""
        ...

    def save_device(self, device: Device) -> None:
        """Store ``device`` later: O(1)."""
        ...

    def drop_device(self, fingerprint: str) -> None:
        """Forget the device ``fingerprint`` later: O(1)."""
        ...


class Taken(enum.Enum):
    """What ``Registrations.take`` did."""

    REGISTERED = "registered"  #: the name was free: it is the key's now
    RENEWED = "renewed"  #: the key's already: marked as used
    AT_CAP = "at cap"  #: free, but the key holds the most it may: not registered
    GUEST = "guest"  #: no key: nothing is registered
    #: the registrations cannot be reached (a cluster's Redis is lost): not registered
    UNCHECKED = "unchecked"
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
        self._devices: dict[str, Device] = {d.fingerprint: d for d in (store.devices() if store else [])}

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
        return registration is None or (
            fingerprint is not None and registration.fingerprint in (fingerprint, self.owner_of(fingerprint))
        )

    def take(self, name: str, fingerprint: str | None) -> Taken:
        """``fingerprint`` has taken ``name`` (``may_use`` said it could):
        register it if it is free and the key is under the cap, or mark its
        registration as used."""
        if fingerprint is None:
            return Taken.GUEST
        now = int(self._clock())
        with self._lock:
            owner = self._owner_of(fingerprint)  # a device registers for its owner
            key = names.key(name)
            held, lapsed = self._current(key)
            if held is not None and held.fingerprint not in (fingerprint, owner):
                registration, taken = None, Taken.OTHERS
            elif held is not None:
                registration, taken = replace(held, used_at=now), Taken.RENEWED
            elif sum(r.fingerprint == owner and not self._lapsed(r) for r in self._by_key.values()) >= self.cap:
                registration, taken = None, Taken.AT_CAP
            else:
                registration, taken = Registration(name, owner, now, now), Taken.REGISTERED
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

    def owner_of(self, fingerprint: str) -> str:
        with self._lock:
            return self._owner_of(fingerprint)

    def _owner_of(self, fingerprint: str) -> str:
        device = self._devices.get(fingerprint)
        return fingerprint if device is None else device.owner

    def add_device(self, owner: str, device: str) -> DeviceAdded:
        """Let ``device`` use the names of ``owner`` (the asking key)."""
        with self._lock:
            refused = self._device_refused(owner, device)
            if refused is not None:
                return refused
            added = self._devices[device] = Device(device, owner, int(self._clock()))
        if self._store is not None:
            self._store.save_device(added)
        return DeviceAdded.ADDED

    def _device_refused(self, owner: str, device: str) -> DeviceAdded | None:
        """Under the lock: why ``owner`` may not add ``device``, or None."""
        if owner in self._devices:
            return DeviceAdded.NOT_OWNER
        if device == owner:
            return DeviceAdded.SELF
        held = self._devices.get(device)
        if held is not None:
            return DeviceAdded.ALREADY if held.owner == owner else DeviceAdded.OTHERS
        if not any(r.fingerprint == owner and not self._lapsed(r) for r in self._by_key.values()):
            return DeviceAdded.NO_NAMES
        if any(d.owner == device for d in self._devices.values()):
            return DeviceAdded.HAS_DEVICES
        if sum(d.owner == owner for d in self._devices.values()) >= MAX_DEVICES:
            return DeviceAdded.TOO_MANY
        return None

    def remove_device(self, owner: str, device: str) -> bool:
        """Take ``device`` from ``owner``'s; False if it was not one of them."""
        with self._lock:
            held = self._devices.get(device)
            if held is None or held.owner != owner:
                return False
            del self._devices[device]
        if self._store is not None:
            self._store.drop_device(device)
        return True

    def devices_of(self, owner: str) -> list[Device]:
        """``owner``'s devices, oldest first."""
        with self._lock:
            return sorted((d for d in self._devices.values() if d.owner == owner), key=lambda d: d.added_at)

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
