"""Joins and leaves in a busy room, summed up: one line a second at most.

Telling everyone of every join costs a room of N members N deliveries a
join, so filling it costs about N²/2, and so does everyone coming back after
a restart. Large IRC channels and streaming chats stop announcing joins for
that reason. Here a busy room still announces them, but together:

- In a room of fewer than ``busy_from`` members, every join and leave is
  told at once, as itself (``UserJoined``, ``UserLeft``), as always.
- In a busy room, a join or leave is told at once too if no such line went
  out in the last ``interval`` seconds (a quiet room reads as it always
  did). Otherwise it waits, with any others, until ``interval`` after that
  line; then one line tells them all: ``Notice("alice, bob and 3 others
  joined the chat; carol left.")``, or the message itself if it is alone.

So joins and leaves cost a busy room at most one delivery per member per
``interval``, however many come and go. A leave with a parting line
(``UserParted``) carries the member's own words: it is never summed up,
and goes at once.

Sans-I/O: ``Presence`` is given the time and the room's size, and answers
what to publish now, and when (``due``) to be asked again with ``flush``.
``room.Room`` keeps one and a timer.
"""

from __future__ import annotations

from socket_chat.protocol import Message, Notice, UserJoined, UserLeft

__all__ = ["BUSY_FROM", "INTERVAL", "Presence", "summary_text"]

INTERVAL = 1.0  # seconds: at most one summed-up line this often
BUSY_FROM = 50  # members: a smaller room hears of every join and leave at once
NAMES_SHOWN = 3  # names a summary spells out for each of joined and left

#: What to publish: a message and the member it must not go to (None: all).
Publication = tuple[Message, "str | None"]


class Presence:
    """The joins and leaves not yet told, and when the last line went out.

    Not thread-safe: its owner holds a lock around each call.

    Args:
        interval: seconds between summed-up lines, at least.
        busy_from: members from which a room is busy (0: every room is).
    """

    def __init__(self, interval: float = INTERVAL, busy_from: int = BUSY_FROM) -> None:
        self.interval, self.busy_from = interval, busy_from
        self._pending: list[Publication] = []
        self._last_told = float("-inf")
        #: When ``flush`` must be called (by the owner's timer), or None.
        self.due: float | None = None

    def add(self, message: UserJoined | UserLeft, sender_id: str | None, now: float, members: int) -> list[Publication]:
        """A member joined or left a room of ``members`` (counted after the
        change). Returns what to publish now: the message itself, or nothing
        if it waits for ``due``."""
        quiet = now >= self._last_told + self.interval
        if not self._pending and (members < self.busy_from or quiet):
            self._last_told = now
            return [(message, sender_id)]
        self._pending.append((message, sender_id))
        if self.due is None:
            self.due = max(now, self._last_told + self.interval)
        return []

    def parted(self, name: str) -> None:
        """``name`` left with a parting line, told at once: a join of theirs
        still waiting is dropped, so that no summary says they joined after
        everyone read them leave."""
        key = name.casefold()
        self._pending = [
            (message, sender_id)
            for message, sender_id in self._pending
            if not (isinstance(message, UserJoined) and message.name.casefold() == key)
        ]

    def flush(self, now: float) -> list[Publication]:
        """What waited, as one line (none if nothing did). Call it at ``due``."""
        pending, self._pending, self.due = self._pending, [], None
        if not pending:
            return []
        self._last_told = now
        if len(pending) == 1:
            return pending  # alone, it reads as it always did
        return [(Notice(summary_text([message for message, _ in pending])), None)]


def summary_text(changes: list[Message]) -> str:
    """One line for several joins and leaves, in the order they began:
    ``alice, bob and 3 others joined the chat; carol left.``"""
    groups: dict[str, dict[str, str]] = {}  # verb -> casefolded name -> name, in order
    for message in changes:
        verb = "joined" if isinstance(message, UserJoined) else "left"
        name = message.name  # type: ignore[attr-defined]  # UserJoined and UserLeft both have one
        groups.setdefault(verb, {}).setdefault(name.casefold(), name)
    parts = [f"{_names(list(names.values()))} {verb}" for verb, names in groups.items()]
    return f"{parts[0]} the chat" + "".join(f"; {part}" for part in parts[1:]) + "."


def _names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``, ``a, b and 3 others``."""
    if len(names) <= NAMES_SHOWN:
        shown, rest = names[:-1], names[-1]
    else:
        shown, rest = names[: NAMES_SHOWN - 1], f"{len(names) - NAMES_SHOWN + 1} others"
    return f"{', '.join(shown)} and {rest}" if shown else rest
