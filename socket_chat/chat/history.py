"""Where the room's history goes to outlive the server: a ``HistoryStore``.

The room keeps the last chat lines and actions for newcomers (``Room``'s
history). A store is given each of them as it is kept, in the room's order,
and gives the last of them back when the next server starts on it. The
store itself (a file, a thread that writes it) lives at the server's edge,
``socket_chat.server.store``; the room reaches it only through this
protocol, as it reaches its cluster through ``room.Cluster``.
"""

from __future__ import annotations

from typing import Protocol

from socket_chat.protocol import HistoryMessage

__all__ = ["HistoryStore"]


class HistoryStore(Protocol):
    """What the room needs of a store of its history."""

    def keep(self, entry: HistoryMessage) -> None:
        """Store ``entry`` later. Called under the room's lock, on the path
        of every delivery: it must take O(1) time and never block, wait
        for a disk or log a line (a store that cannot keep up counts the
        entry as not stored instead)."""
        ...

    def recent(self, count: int) -> list[HistoryMessage]:
        """The last ``count`` entries stored before this server started,
        oldest first (read when the store was opened: no I/O here)."""
        ...
