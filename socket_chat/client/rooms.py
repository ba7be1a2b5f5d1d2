"""The rooms as this client sees them: which it is in, the current one
(where what is typed goes, shown in the prompt), and what is unread in the
others; and how a room's messages are shown.

The lobby is where everyone is, as the chat was before rooms: its lines
are the old messages, shown as before. Lines of a room other than the
current one are shown with its name first (``[#dev] alice: hi``) and
counted as unread for it; off a terminal every room line has its name
first, so that a script can tell them apart. The status line (on a
terminal, below the prompt) lists the rooms with their unread lines and
mentions; ``Alt-1``..``Alt-9`` and ``Ctrl-N``/``Ctrl-P`` switch rooms, as
``/join`` of a room already joined does.
"""

from __future__ import annotations

import threading

from socket_chat.chat.presentation import block_text, mentions, printable_text
from socket_chat.protocol import (
    Joined,
    Parted,
    RoomHistoryLine,
    RoomList,
    RoomMembers,
    RoomMessage,
    RoomNotice,
)

__all__ = ["LOBBY", "ROOM_EVENTS", "RoomState", "render_room"]

#: The lobby's name in the status line and before its lines while in a room.
LOBBY = "lobby"
#: The messages only a client that took the offer of rooms is sent.
ROOM_EVENTS = (RoomMessage, RoomHistoryLine, RoomNotice, Joined, Parted, RoomList, RoomMembers)


class RoomState:
    """The rooms joined, in the order joined, the current one (None: the
    lobby) and the unread counts; shared by the receiver (which learns of
    joins, parts and lines) and the main thread (which reads the prompt and
    switches), under a lock.

    Args:
        lobby_prompt: the prompt in the lobby (the chat's, as before rooms).
    """

    def __init__(self, lobby_prompt: str = "> ") -> None:
        self._lock = threading.Lock()
        #: The server offered rooms (``Rooms``) and this client took them.
        self.offered = False
        #: Put the room's name before every room line (off a terminal).
        self.always_named = False
        self._lobby_prompt = lobby_prompt
        self._joined: list[str] = []  # the room names as the server holds them
        self._current: str | None = None
        self._unread: dict[str, int] = {}
        self._mentions: dict[str, int] = {}
        #: After a reconnect: the rooms joined again whose ``Joined`` does
        #: not switch, and the one (casefolded) that does: where the person was.
        self._rejoining: set[str] = set()
        self._back_to: str | None = None

    @property
    def current(self) -> str | None:
        with self._lock:
            return self._current

    def joined(self) -> list[str]:
        with self._lock:
            return list(self._joined)

    def prompt(self) -> str:
        """``#dev> `` in a room; the lobby's prompt in the lobby."""
        with self._lock:
            return f"{printable_text(self._current)}> " if self._current else self._lobby_prompt

    def find(self, name: str) -> str | None:
        """The room joined that ``name`` names (any case), or None."""
        with self._lock:
            return next((room for room in self._joined if room.casefold() == name.strip().casefold()), None)

    def entered(self, room: str) -> None:
        """``Joined``: the room is the current one."""
        with self._lock:
            if room not in self._joined:
                self._joined.append(room)
            folded = room.casefold()
            if folded in self._rejoining:
                self._rejoining.discard(folded)
                if folded != self._back_to:
                    return  # joined again after a reconnect: where the person types stays
            self._switched_locked(room)

    def rejoining(self, rooms: list[str], current: str | None) -> None:
        """After a reconnect (``forget``): ``rooms`` are being joined again;
        of their ``Joined``, only ``current``'s (None: the lobby) switches."""
        with self._lock:
            self._rejoining = {room.casefold() for room in rooms}
            self._back_to = current.casefold() if current else None

    def asked(self, room: str) -> None:
        """The person typed ``/join room``: its ``Joined`` switches to it."""
        with self._lock:
            self._rejoining.discard(room.casefold())

    def go(self, room: str | None) -> None:
        """Make ``room`` (one joined; None: the lobby) the current one."""
        with self._lock:
            if room is None or room in self._joined:
                self._switched_locked(room)

    def left(self, room: str) -> None:
        """``Parted``: out of the room; the lobby is current if it was."""
        with self._lock:
            if room in self._joined:
                self._joined.remove(room)
            self._unread.pop(room, None)
            self._mentions.pop(room, None)
            if self._current == room:
                self._current = None

    def forget(self) -> None:
        """A new connection: in the lobby alone, until the rooms are joined again."""
        with self._lock:
            self._joined.clear()
            self._unread.clear()
            self._mentions.clear()
            self._current = None
            self._rejoining.clear()

    def switch(self, to: str) -> bool:
        """Make a room current: ``to`` is ``1``..``9`` (the lobby, then the
        rooms in the order joined), ``next`` or ``previous``. False if there
        is nothing to switch to."""
        with self._lock:
            places: list[str | None] = [None, *self._joined]
            if len(places) == 1:
                return False
            here = places.index(self._current)
            if to == "next":
                wanted = places[(here + 1) % len(places)]
            elif to == "previous":
                wanted = places[(here - 1) % len(places)]
            elif to.isdigit() and 1 <= int(to) <= len(places):
                wanted = places[int(to) - 1]
            else:
                return False
            self._switched_locked(wanted)
            return True

    def note(self, room: str | None, sender: str, text: str, own_name: str) -> None:
        """A line said in ``room`` (None: the lobby): unread unless current,
        a mention if it names this person."""
        with self._lock:
            if room == self._current or not self._joined:
                return
            place = room or LOBBY
            self._unread[place] = self._unread.get(place, 0) + 1
            if own_name and sender.casefold() != own_name.casefold() and mentions(text, own_name):
                self._mentions[place] = self._mentions.get(place, 0) + 1

    def status(self) -> str:
        """The status line: every place, the current one marked, with its
        unread lines and mentions (``lobby | #dev (here) | #ops: 3 new``);
        empty in the lobby alone."""
        with self._lock:
            if not self._joined:
                return ""
            shown = []
            for number, place in enumerate([None, *self._joined], start=1):
                label = f"{number} {printable_text(place) if place else LOBBY}"
                if place == self._current:
                    shown.append(f"{label} (here)")
                    continue
                unread, named = self._unread.get(place or LOBBY, 0), self._mentions.get(place or LOBBY, 0)
                counts = [f"{unread} new"] if unread else []
                counts += [f"{named} mention{'s' if named > 1 else ''}"] if named else []
                shown.append(f"{label}: {', '.join(counts)}" if counts else label)
            return " | ".join(shown)

    def named(self, room: str | None) -> bool:
        """Whether a line of ``room`` (None: the lobby) is shown with its name first."""
        with self._lock:
            if room is None:
                return self._current is not None
            return self.always_named or room != self._current

    def _switched_locked(self, room: str | None) -> None:
        self._current = room
        self._unread.pop(room or LOBBY, None)
        self._mentions.pop(room or LOBBY, None)


def render_room(event: object, rooms: RoomState, style_name, notice, error) -> list[str]:
    """The lines that show a room's message (``style_name``, ``notice``
    and ``error`` colour a name, a notice and a refusal). Every piece of
    network text passes ``printable_text``."""
    clean = printable_text
    if isinstance(event, (RoomMessage, RoomHistoryLine)):
        where = f"[{clean(event.room)}] " if rooms.named(event.room) else ""
        if isinstance(event, RoomHistoryLine):
            where = f"[{clean(event.room)} history] "
        if event.kind == "action":
            return [f"{where}* {style_name(clean(event.sender))} {clean(event.text)}"]
        sender = clean(event.sender)
        return [f"{where}{style_name(sender)}: {block_text(event.text, f'{where}{sender}: ')}"]
    if isinstance(event, RoomNotice):
        return [notice(f"* [{clean(event.room)}] {clean(event.text)}")]
    if isinstance(event, Joined):
        topic = f" (topic: {clean(event.topic)})" if event.topic else ""
        names = [clean(name) for name in event.names.split("\n") if name]
        more = f" and {event.count - len(names)} more" if event.count > len(names) else ""
        return [notice(f"* You are in {clean(event.room)}{topic}: {event.count} here: {', '.join(names)}{more}.")]
    if isinstance(event, Parted):
        if event.reason:
            return [notice(f"* You are no longer in {clean(event.room)}: {clean(event.reason)}")]
        return [notice(f"* You left {clean(event.room)}.")]
    if isinstance(event, RoomList):
        listed = event.rooms()
        if not listed:
            return [notice("* No rooms yet: /join #NAME makes one.")]
        return [notice(f"* {len(listed)} room{'s' if len(listed) > 1 else ''}:")] + [
            notice(f"*   {clean(name)} ({count}){': ' + clean(topic) if topic else ''}")
            for name, count, topic in listed
        ]
    if isinstance(event, RoomMembers):
        names = [clean(name) for name in event.names.split("\n") if name]
        return [notice(f"* In {clean(event.room)} ({len(names)}): {', '.join(names)}")]
    return []
