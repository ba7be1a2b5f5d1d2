"""The server's resumption tickets (PROTOCOL.md section 2, "Resumption"):
the ticket keys, how they rotate and where they are kept, and which
tickets were used.

A ticket key belongs to a period of ``rotation`` seconds (its id is the
period's number, Unix time // rotation): tickets are sealed under the
current period's key, and opened under it or any of the ``keep`` before it,
so that every ticket can live its whole lifetime; older keys are dropped,
and the tickets sealed under them with them. Where the keys live:

- ``MemoryTicketKeys``: this process only (tests, the benchmark);
- ``FileTicketKeys``: a 0600 file beside the server's key, so that a
  restart, when everyone comes back at once, takes the tickets of before;
- ``SharedTicketKeys``: Redis, for a cluster: the first server to need a
  period's key sets it (SET NX), every server reads the same one, and
  Redis drops it when it is no longer kept.

A ticket is single use: its id is remembered until the ticket would have
expired anyway (in memory on one server, SET NX in a cluster).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from socket_chat.crypto import keystore
from socket_chat.crypto import random_bytes as default_rng
from socket_chat.crypto import tickets as sealed
from socket_chat.crypto.rng import Rng
from socket_chat.protocol import NewTicket, ServerConnection, ServerIdentity

__all__ = [
    "ROTATION",
    "LIFETIME",
    "TicketKeyStore",
    "MemoryTicketKeys",
    "FileTicketKeys",
    "SharedTicketKeys",
    "TicketService",
]

#: A new ticket key every day (as TLS servers commonly rotate theirs)...
ROTATION = 24 * 3600
#: ...and a ticket lives at most 7 days (RFC 8446 section 4.6.1).
LIFETIME = sealed.MAX_LIFETIME
#: Used ids kept before the expired ones are swept out.
_SWEEP_EVERY = 4096

log = logging.getLogger("chat.server")


class TicketKeyStore(Protocol):
    """Where ticket keys and used ticket ids are kept."""

    def key(self, period: int, create: bool, keep: int) -> bytes | None:
        """The key of ``period``; made now if ``create`` and none is kept
        (the keys more than ``keep`` periods older may go then). None: none
        (or the store cannot be reached)."""
        ...

    def spend(self, ticket_id: bytes, until: float) -> bool:
        """Mark a ticket id used until ``until`` (Unix time); False if it
        was used already (or the store cannot be reached: no resumption)."""
        ...


class MemoryTicketKeys:
    """Ticket keys and used ids in this process only."""

    def __init__(self, clock: Callable[[], float] = time.time, rng: Rng = default_rng) -> None:
        self._keys: dict[int, bytes] = {}
        self._used: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._clock, self._rng = clock, rng
        self._spent = 0

    def key(self, period: int, create: bool, keep: int) -> bytes | None:
        with self._lock:
            found = self._keys.get(period)
            if found is None and create:
                found = self._keys[period] = self._rng(sealed.TICKET_KEY_SIZE)
                for old in [p for p in self._keys if p < period - keep]:
                    del self._keys[old]
                self._created(period)
            return found

    def _created(self, period: int) -> None:
        """A key was made (under the lock): the file store saves them."""

    def spend(self, ticket_id: bytes, until: float) -> bool:
        with self._lock:
            if ticket_id in self._used:
                return False
            self._used[ticket_id] = until
            self._spent += 1
            if self._spent % _SWEEP_EVERY == 0:
                now = self._clock()
                self._used = {used: expiry for used, expiry in self._used.items() if expiry > now}
            return True


_KEY_LINE = re.compile(r"([0-9]{1,19}) ([0-9a-f]{64})")


class FileTicketKeys(MemoryTicketKeys):
    """Ticket keys kept in a file (mode 0600), one ``PERIOD HEXKEY`` a line,
    rewritten whole (``keystore.replace_file``) each time a key is made,
    and read again whenever it changes, so that deleting (or editing) it
    revokes at once in a running server; a file that became unreadable
    or unsafe revokes too (logged). Used ids in memory (a restart forgets
    them: a ticket used just before one could be used once more, within its
    lifetime, by whoever holds its secret: the person it was given to).

    Raises (on construction):
        keystore.KeyFileError: the file cannot be read, is readable by
            others, or is not a ticket key file.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, rng: Rng = default_rng) -> None:
        super().__init__(clock, rng)
        self.path = path
        self._seen = _file_state(path)
        if self._seen is not None:
            self._keys.update(self._read(path))

    def key(self, period: int, create: bool, keep: int) -> bytes | None:
        self._follow_file()
        return super().key(period, create, keep)

    def _follow_file(self) -> None:
        # A stat per key look-up (a handshake's), against an RSA operation.
        state = _file_state(self.path)
        if state == self._seen:
            return
        with self._lock:
            self._seen = state
            try:
                self._keys = self._read(self.path) if state is not None else {}
            except keystore.KeyFileError as exc:
                self._keys = {}
                log.warning("%s: every ticket key dropped", exc)

    @staticmethod
    def _read(path: Path) -> dict[int, bytes]:
        what = "ticket key file"
        keystore.check_safe_path(path, what, private=True)
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise keystore.KeyFileError(f"Cannot read the {what} {path}: {exc}") from None
        keys = {}
        for number, line in enumerate(lines, 1):
            match = _KEY_LINE.fullmatch(line)
            if match is None:
                raise keystore.KeyFileError(f"The {what} {path} is not one: line {number} is not PERIOD HEXKEY.")
            keys[int(match[1])] = bytes.fromhex(match[2])
        return keys

    def _created(self, period: int) -> None:
        text = "".join(f"{p} {k.hex()}\n" for p, k in sorted(self._keys.items()))
        try:
            keystore.replace_file(self.path, text, "ticket key file")
            self._seen = _file_state(self.path)  # its own write: nothing to read back
        except keystore.KeyFileError as exc:
            # The key still works in this process; after a restart its
            # tickets fall back to a full handshake.
            log.warning("%s: tickets given now will not survive a restart", exc)


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file (inode, size, mtime); None: there is none."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return (-1, -1, -1)  # unreadable now: _read will say so
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class SharedKeys(Protocol):
    """What a cluster offers the ticket keys (``cluster.RedisCluster``)."""

    def ticket_key(self, period: int, candidate: bytes | None, ttl: int) -> bytes | None: ...

    def spend_ticket(self, ticket_id: bytes, ttl: int) -> bool: ...


class SharedTicketKeys:
    """Ticket keys and used ids in the cluster's Redis, so that any server
    of the cluster (with the same server key) takes a ticket another gave."""

    def __init__(
        self,
        shared: SharedKeys,
        rotation: int = ROTATION,
        clock: Callable[[], float] = time.time,
        rng: Rng = default_rng,
    ) -> None:
        self._shared, self._rotation, self._clock, self._rng = shared, rotation, clock, rng
        self._cache: dict[int, bytes] = {}  # a period's key never changes once set

    def key(self, period: int, create: bool, keep: int) -> bytes | None:
        found = self._cache.get(period)
        if found is None:
            ttl = (keep + 2) * self._rotation  # kept while the period's tickets may live, with a margin
            candidate = self._rng(sealed.TICKET_KEY_SIZE) if create else None
            found = self._shared.ticket_key(period, candidate, ttl)
            if found is not None:
                if len(found) != sealed.TICKET_KEY_SIZE:
                    return None
                self._cache = {p: k for p, k in self._cache.items() if p >= period - keep}
                self._cache[period] = found
        return found

    def spend(self, ticket_id: bytes, until: float) -> bool:
        return self._shared.spend_ticket(ticket_id, max(1, math.ceil(until - self._clock())))


class TicketService:
    """Gives tickets and takes them back, for one server key.

    Args:
        identity: the server's key: a ticket is bound to it.
        store: where the keys and the used ids are kept.
        rotation: seconds a ticket key seals tickets.
        lifetime: seconds a ticket lives (at most 7 days).
        clock: Unix time.
    """

    def __init__(
        self,
        identity: ServerIdentity,
        store: TicketKeyStore | None = None,
        rotation: int = ROTATION,
        lifetime: int = LIFETIME,
        clock: Callable[[], float] = time.time,
        rng: Rng = default_rng,
    ) -> None:
        if not 0 < lifetime <= sealed.MAX_LIFETIME or rotation <= 0:
            raise ValueError("a ticket lives 1 s to 7 days, and keys rotate after 1 s or more")
        self.store = store if store is not None else MemoryTicketKeys(clock, rng)
        self.binding = sealed.server_binding(identity.public_der)
        self.rotation, self.lifetime = rotation, lifetime
        #: Periods before the current one whose keys still open tickets.
        self.keep = math.ceil(lifetime / rotation)
        self._clock, self._rng = clock, rng

    def issue(self, secret: bytes, fingerprint: str | None) -> NewTicket:
        """A ticket for the connection whose resumption secret is ``secret``
        and whose person proved ``fingerprint`` (None: a guest); lifetime 0
        and no ticket if no key can be had (Redis unreachable)."""
        now = self._clock()
        period = int(now // self.rotation)
        key = self.store.key(period, create=True, keep=self.keep)
        if key is None:
            return NewTicket(0, b"")
        contents = sealed.TicketContents(
            self._rng(sealed.TICKET_ID_SIZE), int(now), self.lifetime, secret, fingerprint or ""
        )
        return NewTicket(self.lifetime, sealed.seal_ticket(period, key, contents, self.binding, self._rng(12)))

    def redeem(self, conn: ServerConnection, ticket: bytes) -> sealed.TicketContents | None:
        """The contents of the ticket ``conn``'s client offers, if it opens
        under a key kept, is bound to this server key, has not expired, the
        client's binder proves it holds its secret, and it was not used
        before (it is used now); None otherwise: decline, and a full
        handshake follows."""
        try:
            contents = sealed.open_ticket(ticket, self._key_for, self.binding, self._clock())
        except sealed.TicketRejected:
            return None
        if not conn.binder_matches(contents.secret):
            return None
        if not self.store.spend(contents.ticket_id, contents.expires_at):
            log.info("a ticket was offered again: declined (single use)")
            return None
        return contents

    def _key_for(self, key_id: int) -> bytes | None:
        current = int(self._clock() // self.rotation)
        if not current - self.keep <= key_id <= current:
            return None
        return self.store.key(key_id, create=False, keep=self.keep)
