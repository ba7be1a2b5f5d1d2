"""Private messages kept for someone offline: a ``/msg`` to a name that
is registered (registrations.py) to a key, while no one is online under it,
waits for that key; its person is given it, marked with its time, when they
next join (under any of their names), and it is forgotten then.

``OfflineMessages`` is the table, in memory, pure: it answers at once, with
time from an injected clock. What changes is handed to an ``OfflineStore``
(the server's SQLite file, ``socket_chat.server.store``), which writes it
later, off the delivery path; the table is read from it once, at start.
Without a store (``--store none``) the messages wait in memory only, and a
restart loses them.

Rules:
- Only for a key: a guest's name is not registered, and nothing is kept
  for it (the sender is told).
- ``MAX_WAITING`` messages per key at most; over that, the sender is told
  the message was not kept (as a full mailbox bounces).
- Delivered once: taken out of the table (and the store) as it is given.

In a cluster the messages wait in its Redis instead
(``socket_chat.server.cluster_history.ClusterOffline``, a subclass), under
the same rules, so that a person coming back on any server gets them; there
``keep`` may raise ``OfflineUnavailable`` while Redis is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MAX_WAITING", "OfflineMessages", "OfflineStore", "OfflineUnavailable", "Waiting"]

MAX_WAITING = 100  # messages one key may have waiting (a mailbox's quota, in lines)


class OfflineUnavailable(Exception):
    """The messages cannot be kept now (a cluster's Redis is lost): this one
    was not kept, and its sender must be told so."""


@dataclass(frozen=True)
class Waiting:
    """A private line waiting for ``fingerprint``'s person: who sent it, to
    which name, what, and when (Unix seconds)."""

    fingerprint: str
    sender: str
    recipient: str
    text: str
    sent_at: int


class OfflineStore(Protocol):
    """What the waiting messages need of a store (the server's file)."""

    def waiting_messages(self) -> list[Waiting]:
        """The messages stored before this server started, oldest first
        (read when the store was opened: no I/O here)."""
        ...

    def save_waiting(self, message: Waiting) -> None:
        """Store ``message`` later: O(1), never a wait for the disk."""
        ...

    def drop_waiting(self, fingerprint: str) -> None:
        """Forget every message waiting for ``fingerprint``, later: O(1)."""
        ...


class OfflineMessages:
    """The private lines waiting for their recipients, by key; safe to
    call from any thread.

    Args:
        store: where changes go (None: in memory only, lost at exit).
        cap: messages one key may have waiting.
        clock: Unix time (tests pin it).
    """

    def __init__(
        self, store: OfflineStore | None = None, cap: int = MAX_WAITING, clock: Callable[[], float] = time.time
    ) -> None:
        self._store, self.cap, self._clock = store, cap, clock
        self._lock = threading.Lock()
        self._by_key: dict[str, list[Waiting]] = {}
        for message in store.waiting_messages() if store else []:
            self._by_key.setdefault(message.fingerprint, []).append(message)

    def keep(self, fingerprint: str, sender: str, recipient: str, text: str) -> bool:
        """Keep a line for ``fingerprint``'s person; False if they have
        ``cap`` waiting already (it is not kept).

        Raises:
            OfflineUnavailable: it cannot be kept now (only in a cluster).
        """
        message = Waiting(fingerprint, sender, recipient, text, int(self._clock()))
        with self._lock:
            waiting = self._by_key.setdefault(fingerprint, [])
            if len(waiting) >= self.cap:
                return False
            waiting.append(message)
            # Under the lock (an O(1) queue append): a take racing this keep
            # then queues its DELETE after this INSERT, never before.
            if self._store is not None:
                self._store.save_waiting(message)
        return True

    def take(self, fingerprint: str) -> list[Waiting]:
        """The lines waiting for ``fingerprint``'s person, oldest first;
        they are forgotten (here and in the store)."""
        with self._lock:
            waiting = self._by_key.pop(fingerprint, [])
            if waiting and self._store is not None:  # under the lock too: in order with the keeps
                self._store.drop_waiting(fingerprint)
        return waiting

    def count(self, fingerprint: str) -> int:
        with self._lock:
            return len(self._by_key.get(fingerprint, ()))
