"""Where the room's history goes to outlive the server: a ``HistoryStore``,
and ``MemoryHistory``, the one kept in memory (``--store none``).

Every public chat line and action the room keeps is a ``Line``: its
message ID (a number the room gives, one more each line, in the room's
order), the server's time, its kind, sender and text. A store is given each
of them as it is kept, in the room's order, and gives the last of them back
when the next server starts on it; it answers ``/history`` pages and
``/mentions``, and keeps, by the person's key (fingerprint), when each
person left and their away message. The store on disk (a file, a thread
that writes it) lives at the server's edge, ``socket_chat.server.store``;
the room reaches it only through this protocol, as it reaches its cluster
through ``room.Cluster``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from socket_chat.chat.presentation import mentions
from socket_chat.protocol import HistoryLine, HistoryMessage, StampedLine

__all__ = [
    "HistoryStore",
    "HistoryUnavailable",
    "Line",
    "MemoryHistory",
    "MEMORY_LINES",
    "MENTIONS_CAP",
    "RoomHistoryStore",
    "Seen",
]

#: Lines ``MemoryHistory`` keeps for ``/history`` (``--store none``).
MEMORY_LINES = 10_000
#: Lines ``/mentions`` shows at most, newest first.
MENTIONS_CAP = 50


class HistoryUnavailable(Exception):
    """The store could not answer now (its thread is busy or stopped)."""


@dataclass(frozen=True)
class Line:
    """One line of the history: ``id`` is its message ID, ``sent_at`` Unix
    time in whole seconds, ``kind`` ``chat`` or ``action``."""

    id: int
    sent_at: int
    kind: str
    sender: str
    text: str

    def plain(self) -> HistoryMessage:
        """As an older client is sent it."""
        return HistoryMessage(self.sender, self.text, self.sent_at, self.kind)

    def stamped(self) -> HistoryLine:
        """As a client that asked for stamps is sent it."""
        return HistoryLine(str(self.id), self.sent_at, self.kind, self.sender, self.text)

    def live(self) -> StampedLine:
        return StampedLine(str(self.id), self.sent_at, self.kind, self.sender, self.text)


@dataclass(frozen=True)
class Seen:
    """When a person (by key) last left: the last line ID then, and the time."""

    last_id: int
    left_at: int


class HistoryStore(Protocol):
    """What the room needs of a store of its history."""

    def keep(self, entry: Line) -> None:
        """Store ``entry`` later. Called under the room's lock, on the path
        of every delivery: it must take O(1) time and never block, wait
        for a disk or log a line (a store that cannot keep up counts the
        entry as not stored instead)."""
        ...

    def recent(self, count: int) -> list[Line]:
        """The last ``count`` entries stored before this server started,
        oldest first (read when the store was opened: no I/O here)."""
        ...

    def last_id(self) -> int:
        """The highest line ID ever given (0: none): the room goes on from it."""
        ...

    def given(self, line_id: int) -> None:
        """The room has handed out every ID up to ``line_id`` (a notice's
        and a forgotten line's too): ``last_id`` must never fall below it
        after a restart. Called under the room's lock: O(1), never blocks."""
        ...

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool]:
        """Up to ``count`` lines with IDs below ``before`` (None: the
        newest), oldest first, and whether there are earlier ones. May
        block (not under the room's lock); raises ``HistoryUnavailable``."""
        ...

    def count_after(self, line_id: int) -> int:
        """How many lines kept have IDs above ``line_id`` (may block)."""
        ...

    def mentioning(self, name: str, after: int, upto: int, cap: int) -> list[Line]:
        """The lines with IDs in (``after``, ``upto``] that mention
        ``name`` (``presentation.mentions``), newest first, ``cap`` at most
        (may block)."""
        ...

    def forget(self, line_id: int) -> bool:
        """Remove a line; False if it is not kept (may block)."""
        ...

    def seen(self, fingerprint: str) -> Seen | None:
        """When the person with this key last left (never under the room's
        lock; no I/O but a cluster's Redis)."""
        ...

    def save_seen(self, fingerprint: str, seen: Seen) -> None:
        """Keep when they left (never under the room's lock; a cluster's
        store writes it to Redis at once)."""
        ...

    def away(self, fingerprint: str) -> str | None:
        """The away message kept for this key, or None (as ``seen``)."""
        ...

    def save_away(self, fingerprint: str, message: str | None) -> None:
        """Keep (``message``) or drop (None) the key's away state (as ``save_seen``)."""
        ...


class RoomHistoryStore(Protocol):
    """What the rooms (rooms.py) need of a store: each room's lines, by
    the room's key (``rooms.room_key``), in an ID sequence of its own."""

    def keep_room(self, room: str, entry: Line) -> None:
        """Store ``entry`` of ``room`` later; as ``HistoryStore.keep``, O(1)
        and never blocking (it is called under the room's lock)."""
        ...

    def room_recent(self, room: str, count: int) -> list[Line]:
        """The last ``count`` lines of ``room``, oldest first (read when
        the room is made, outside every lock).

        Raises:
            HistoryUnavailable: the store cannot answer now.
        """
        ...


class MemoryHistory:
    """The history in memory: the last ``capacity`` lines, and the people's
    times and away states, for as long as the server runs."""

    def __init__(self, capacity: int = MEMORY_LINES) -> None:
        self._lock = threading.Lock()
        self._lines: collections.deque[Line] = collections.deque(maxlen=capacity)
        self._last_id = 0
        self._seen: dict[str, Seen] = {}
        self._away: dict[str, str] = {}

    def keep(self, entry: Line) -> None:
        with self._lock:
            self._lines.append(entry)
            self._last_id = max(self._last_id, entry.id)

    def recent(self, count: int) -> list[Line]:
        return []  # nothing before this server started

    def last_id(self) -> int:
        with self._lock:
            return self._last_id

    def given(self, line_id: int) -> None:
        with self._lock:
            self._last_id = max(self._last_id, line_id)

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool]:
        with self._lock:
            earlier = [line for line in self._lines if before is None or line.id < before]
        return (earlier[-count:] if count > 0 else []), len(earlier) > count

    def count_after(self, line_id: int) -> int:
        return len(self._matching(lambda line: line.id > line_id))

    def mentioning(self, name: str, after: int, upto: int, cap: int) -> list[Line]:
        found = self._matching(lambda line: after < line.id <= upto and mentions(line.text, name))
        return found[::-1][:cap]

    def forget(self, line_id: int) -> bool:
        with self._lock:
            kept = [line for line in self._lines if line.id != line_id]
            if len(kept) == len(self._lines):
                return False
            self._lines = collections.deque(kept, maxlen=self._lines.maxlen)
            return True

    def seen(self, fingerprint: str) -> Seen | None:
        with self._lock:
            return self._seen.get(fingerprint)

    def save_seen(self, fingerprint: str, seen: Seen) -> None:
        with self._lock:
            self._seen[fingerprint] = seen

    def away(self, fingerprint: str) -> str | None:
        with self._lock:
            return self._away.get(fingerprint)

    def save_away(self, fingerprint: str, message: str | None) -> None:
        with self._lock:
            if message is None:
                self._away.pop(fingerprint, None)
            else:
                self._away[fingerprint] = message

    def _matching(self, wanted: Callable[[Line], bool]) -> list[Line]:
        with self._lock:
            return [line for line in self._lines if wanted(line)]
