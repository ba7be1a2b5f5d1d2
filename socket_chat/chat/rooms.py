"""Rooms besides the lobby (IRC's channels): who is in each, its topic and
mode, and the one order of what is said in it.

It knows no sockets, as the lobby's ``room.Room`` does not. Everyone is in
the lobby (``Room``) from their username to their leaving; a person who
asked for rooms (``Rooms``) may also join any number of these, up to the
caps. A member here is the lobby's ``Membership``: a room holds it by its
``member_id``, so a rename in the lobby renames them in every room too.

Each room has a lock of its own, under which what is said in it is queued
for every member (so they all hear one order) and given its ID in the
room's own sequence. The rooms' table has one more lock, taken before a
room's (never after), for joining, parting and closing. Nothing that can
block (a socket, a log line, the store's reads) happens under either.

On one server the path of a line is the lobby's, a room name on it:

    Rooms.say(...)                    a member said something in #dev
      -> publish(message, sender_id)  at once
        -> Rooms.distribute(message)  in the room's order, to its members

A server of a cluster has ``server.cluster_rooms.ClusterRooms`` instead,
whose state is in Redis: its ``say`` posts the line to the room's stream
(if Redis still has the sender in the room), and its follower thread
delivers each entry of the stream, in the stream's order, to the room's
members on this server.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from socket_chat.chat import names
from socket_chat.chat.blocks import encoded_pieces, is_block
from socket_chat.chat.history import HistoryUnavailable, Line, RoomHistoryStore
from socket_chat.chat.presentation import excerpt, printable_text
from socket_chat.chat.room import DEFAULT_HISTORY, USER_LIST_BYTES, Member, Membership, Room
from socket_chat.protocol import (
    GREETING_NAMES,
    MAX_ROOM_NAME_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_USERNAME_LENGTH,
    Encoded,
    Joined,
    Message,
    Notice,
    Parted,
    RoomHistoryLine,
    RoomList,
    RoomMembers,
    RoomMessage,
    RoomNotice,
    encode,
)

__all__ = [
    "DEFAULT_MAX_ROOMS",
    "DEFAULT_ROOMS_PER_PERSON",
    "DEFAULT_ROOM_SIZE",
    "MAX_INVITATIONS",
    "RoomCaps",
    "RoomRefused",
    "Rooms",
    "deliver_line",
    "members_answer",
    "topic_change",
    "room_key",
    "room_name",
    "room_shape",
]

#: Rooms one server holds at most (``--max-rooms``).
DEFAULT_MAX_ROOMS = 1000
#: Rooms one person may be in at once, the lobby aside (``--rooms-per-person``;
#: IRC networks' CHANLIMIT is 20 to 120).
DEFAULT_ROOMS_PER_PERSON = 20
#: People one room holds at most (``--room-size``).
DEFAULT_ROOM_SIZE = 1000
#: Invitations a room keeps; past that the oldest is dropped.
MAX_INVITATIONS = 100
#: Characters an operator's reason for closing a room may have (as a ban's,
#: ``server.app.MAX_BAN_REASON``): it goes in every member's ``Parted``.
MAX_CLOSE_REASON = 200
#: Counters of rooms made (``Rooms._made_count``), a key's by its hash.
MADE_COUNTS = 4096


@dataclass(frozen=True)
class RoomCaps:
    """The server's caps on rooms (its options ``--max-rooms``,
    ``--rooms-per-person``, ``--room-size``)."""

    max_rooms: int = DEFAULT_MAX_ROOMS
    per_person: int = DEFAULT_ROOMS_PER_PERSON
    room_size: int = DEFAULT_ROOM_SIZE


class RoomRefused(Exception):
    """A room request that cannot be done; its text is the person's line."""


def room_shape(raw: str) -> str:
    """``raw``, stripped, if it can name a room: ``#`` first, and not so long
    that it is not worth normalizing (as ``member.recipient_name``).

    Raises:
        RoomRefused: it cannot.
    """
    raw = raw.strip()
    if len(raw) > 4 * MAX_ROOM_NAME_LENGTH or not raw.startswith("#") or len(raw) < 2:
        raise RoomRefused(f"A room's name starts with # (as #dev), and may be {MAX_ROOM_NAME_LENGTH} characters long.")
    return raw


def room_name(raw: str) -> str:
    """The name of a room made under ``raw``, as everyone will see it:
    ``#`` and a name that ``names.accept`` takes. A room that exists is
    found by its key instead (``room_key``), so that a look-alike of its
    name (``#dеv``, a Cyrillic е, for ``#dev``) is that room, not another.

    Raises:
        RoomRefused: it is not a room's name (the text says why).
    """
    raw = room_shape(raw)
    try:
        return "#" + names.accept(raw[1:])
    except names.NameRefused as exc:
        raise RoomRefused(f"That is not a valid room name: it {exc.reason}.") from None


def room_key(name: str) -> str:
    """What rooms are compared by (``#dev`` and ``#dеv`` are one room)."""
    return names.key(name[1:] if name.startswith("#") else name)


@dataclass(frozen=True)
class Invitation:
    """Who may join an invite-only room: the person's key if they have one
    (a look-alike, or a guest later under the name, cannot use it), else
    only the connection that was invited."""

    name: str
    fingerprint: str | None
    member_id: str

    def admits(self, membership: Membership) -> bool:
        if self.fingerprint is not None:
            return membership.fingerprint == self.fingerprint
        return membership.member_id == self.member_id


@dataclass(eq=False)
class ChatRoom:
    """One room: its members in the order they joined (by member ID), its
    topic and mode, and its history. Changed only under ``lock`` (and, to
    add or take out members, the table's lock too)."""

    name: str
    key: str
    history: collections.deque[Encoded]  #: the last lines, as a newcomer is sent them (RoomHistoryLine)
    last_id: int = 0
    topic: str = ""
    invite_only: bool = False
    founder: str = ""  #: the member ID of whoever may set the mode and invite
    seats: dict[str, Membership] = field(default_factory=dict)
    invited: collections.deque[Invitation] = field(default_factory=lambda: collections.deque(maxlen=MAX_INVITATIONS))
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


class Rooms:
    """The rooms of this server, made when first joined and gone when the
    last member leaves (as IRC's channels; their history stays in the
    store, and a room made again under the name gets it back).

    Args:
        lobby: the lobby, where the people invited are looked up.
        history_size: lines of a room's history a newcomer gets (0: none kept).
        max_rooms, per_person, room_size: the caps, each refused with its line.
        store: where each room's lines are also kept (the server's store),
            or None: in memory only, while the room lasts.
        clock: wall-clock time, for the lines' times.
    """

    def __init__(
        self,
        lobby: Room,
        history_size: int = DEFAULT_HISTORY,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        per_person: int = DEFAULT_ROOMS_PER_PERSON,
        room_size: int = DEFAULT_ROOM_SIZE,
        store: RoomHistoryStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lobby = lobby
        self._history_size = history_size
        self.max_rooms, self.per_person, self.room_size = max_rooms, per_person, room_size
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()  # the table: taken before a room's, never after
        self._rooms: dict[str, ChatRoom] = {}  # room_key -> room
        self._joined: dict[str, set[str]] = collections.defaultdict(set)  # member ID -> room keys
        #: Rooms made so far, by a hash of their key (bounded: a collision
        #: costs only a read again): a join that read the store while one was
        #: made (and went) under its key reads again (``_seated``).
        self._made_count = [0] * MADE_COUNTS
        #: Where a room's message goes to take its place in the order (a
        #: cluster's stream, later); here at once.
        self.publish: Callable[[Message, str | None], None] = self.distribute

    # Called for the members.

    def join(self, membership: Membership, raw: str) -> None:
        """Put the member in the room ``raw`` names, made if new: they are
        sent ``Joined`` and the room's history, the others are told. A room
        the member is in already is sent again (the client switches to it).

        Raises:
            RoomRefused: a cap, an invite-only room, a bad name.
        """
        raw = room_shape(raw)
        key = room_key(raw)
        cut: list[Member] = []
        while not self._seated(membership, raw, key, cut):
            pass  # the room went (or came and went) between the look and the lock: its history is read again
        _cut_off(cut)

    def _seated(self, membership: Membership, raw: str, key: str, cut: list[Member]) -> bool:
        """``join``'s work; False if the room was there when looked at and
        gone under the lock (a room made again must start from its stored
        lines, or its IDs would be given twice)."""
        made = self._made_count[hash(key) % MADE_COUNTS]  # before the look: a room made after it changes it
        new = key not in self._rooms
        if new:
            room_name(raw)  # only a room to be made needs a name that may be taken (refused here, before any read)
        lines = self._stored_lines(key) if new else []  # the store's read: before any lock
        with self._lock:
            room = self._rooms.get(key)
            if room is None and (not new or self._made_count[hash(key) % MADE_COUNTS] != made):
                return False  # gone, or made (and gone) during the read: its lines are newer than ours
            if room is None:
                room = self._made(room_name(raw), key, membership, lines)
            elif membership.member_id not in room.seats:
                self._check_room_for(room, membership)
            self._check_person_cap(membership, key)
            with room.lock:
                arriving = membership.member_id not in room.seats
                room.seats[membership.member_id] = membership
                self._joined[membership.member_id].add(key)
                self._deliver(room, self._welcome(room, membership), cut, only=membership)
                if arriving:
                    room.invited = collections.deque(
                        (i for i in room.invited if not i.admits(membership)), maxlen=MAX_INVITATIONS
                    )
                    joined = encode(RoomNotice(room.name, f"{membership.name} joined {room.name}."))
                    self._deliver(room, joined, cut, but=membership)
        return True

    def part(self, membership: Membership, raw: str, reason: str = "") -> None:
        """Take the member out of a room they are in; they are sent
        ``Parted``, the others told (with the parting line, if any).

        Raises:
            RoomRefused: not a room, or not one they are in.
        """
        room = self._room_of(membership, raw)
        because = f" ({reason})" if reason else ""
        self._take_out(room, membership, encode(Parted(room.name, "")), f"{membership.name} left {room.name}{because}.")

    def leave_all(self, membership: Membership) -> None:
        """The member left the chat: out of every room, the others told."""
        with self._lock:
            keys = list(self._joined.get(membership.member_id, ()))
            rooms = [self._rooms[key] for key in keys if key in self._rooms]
        for room in rooms:
            self._take_out(room, membership, None, f"{membership.name} left {room.name}.")

    def say(self, membership: Membership, raw: str, kind: str, text: str, echo: bool = False) -> None:
        """A line (``kind`` chat) or action said in a room the member is in:
        to its members (and back to the sender if ``echo``), in the room's
        order, kept in its history.

        Raises:
            RoomRefused: not a room they are in.
        """
        room = self._room_of(membership, raw)
        message = RoomMessage(room.name, "", int(self._clock()), kind, membership.name, text)
        self.publish(message, membership.member_id if not echo else None)

    def distribute(self, message: Message, sender_id: str | None) -> None:
        """Give a room's line its ID and deliver it to the room's members
        but ``sender_id``, in the room's order; kept for newcomers."""
        assert isinstance(message, RoomMessage)
        with self._lock:
            room = self._rooms.get(room_key(message.room))
        if room is None:
            return  # closed (or its last member left) since
        overflowed: list[Member] = []
        with room.lock:
            if room.closed:
                return
            room.last_id += 1
            line = Line(room.last_id, message.sent_at, message.kind, message.sender, message.text)
            item = encode(RoomMessage(room.name, str(line.id), line.sent_at, line.kind, line.sender, line.text))
            if room.history.maxlen:
                room.history.append(_kept(room.name, line, item))
                if self._store is not None:
                    self._store.keep_room(room.key, line)  # O(1), never blocks: in the room's order
            # A block (rare) goes whole to those who take blocks, one message a line to the others.
            split = encoded_pieces(item) if is_block(message) else None
            for member_id, m in room.seats.items():
                if member_id != sender_id and not deliver_line(m, item, split):
                    overflowed.append(m.member)
        _cut_off(overflowed)

    def set_topic(self, membership: Membership, raw: str, topic: str) -> None:
        """Any member of a room may set its topic (IRC's, without ``+t``)."""
        room = self._room_of(membership, raw)
        topic, said = topic_change(membership.name, room.name, topic)
        cut: list[Member] = []
        with room.lock:
            room.topic = topic
            self._deliver(room, encode(RoomNotice(room.name, said)), cut)
        _cut_off(cut)

    def set_mode(self, membership: Membership, raw: str, mode: str) -> None:
        """``+i``: only those invited may join from now on; ``-i``: anyone."""
        room = self._room_of(membership, raw)
        if mode not in ("+i", "-i"):
            raise RoomRefused("The mode is +i (only those invited may join) or -i (anyone may).")
        said = "only those invited may join" if mode == "+i" else "anyone may join"
        cut: list[Member] = []
        with room.lock:
            self._check_founder(room, membership, "/mode")
            room.invite_only = mode == "+i"
            self._deliver(
                room, encode(RoomNotice(room.name, f"{membership.name} set {room.name} {mode}: {said}.")), cut
            )
        _cut_off(cut)

    def invite(self, membership: Membership, raw: str, name: str) -> str:
        """Let the person online as ``name`` join an invite-only room: bound
        to their key, or to their connection if they have none. They are
        told; the answer is the inviter's line.

        Raises:
            RoomRefused: not the room's founder, not invite-only, no one of that name.
        """
        room = self._room_of(membership, raw)
        name = name.strip()
        fits = 0 < len(name) <= 4 * MAX_USERNAME_LENGTH  # no longer text is normalized (member.recipient_name)
        invitee = self._lobby.find(name) if fits else None
        if invitee is None:
            shown = printable_text(excerpt(name, 40)) or "(no name)"
            raise RoomRefused(f"No one called {shown} is online: no one was invited.")
        with room.lock:
            self._check_founder(room, membership, "/invite")
            if not room.invite_only:
                raise RoomRefused(f"Anyone may join {room.name} (it is not +i): no invitation is needed.")
            if invitee.member_id in room.seats:
                raise RoomRefused(f"{invitee.name} is in {room.name} already.")
            room.invited.append(Invitation(invitee.name, invitee.fingerprint, invitee.member_id))
        told = Notice(f"{membership.name} invites you to {room.name}: /join {room.name}")
        if not invitee.member.deliver(encode(told)):
            invitee.member.send_queue_overflowed()
        bound = "their key" if invitee.fingerprint is not None else "this connection of theirs (a guest: no key)"
        return f"{invitee.name} is invited to {room.name} (bound to {bound})."

    def who(self, membership: Membership, raw: str) -> list[Message]:
        """The names of a room's members (one the asker is in, or any open
        one), as many as fit in one message; a Notice counts the others."""
        room = self._find(raw)
        with room.lock:
            if room.invite_only and membership.member_id not in room.seats:
                raise RoomRefused(f"{room.name} is invite-only: only its members see who is in it.")
            names = [m.name for m in room.seats.values()]
        return members_answer(room.name, names)

    def listing(self) -> list[Message]:
        """The answer to ``/rooms``: every room, its count and topic, sorted
        by name; a Notice counts those that do not fit in one message."""
        entries = sorted(self._entries(), key=lambda e: e[0].casefold())
        listed, size = [], 0
        for entry in entries:
            size += len(entry[0].encode()) + len(entry[2].encode()) + 12
            if size > USER_LIST_BYTES:
                break
            listed.append(entry)
        answer: list[Message] = [RoomList.of(listed)]
        if len(listed) < len(entries):
            answer.append(Notice(f"...and {len(entries) - len(listed)} more rooms: too many to list."))
        return answer

    def _entries(self) -> list[tuple[str, int, str]]:
        """(name, count, topic) of every room, for ``listing``."""
        with self._lock:
            return [(r.name, len(r.seats), r.topic) for r in self._rooms.values()]

    def renamed(self, membership: Membership) -> None:
        """The member was renamed in the lobby: here nothing to do (each
        room holds their Membership, whose name it is); a cluster's rooms
        write the new name where the other servers read it."""

    def rooms_of(self, membership: Membership) -> list[str]:
        """The names of the rooms the member is in."""
        with self._lock:
            keys = self._joined.get(membership.member_id, set())
            return sorted((self._rooms[k].name for k in keys if k in self._rooms), key=str.casefold)

    # Called for the operators.

    def close(self, raw: str, reason: str = "") -> str:
        """Close a room: every member is sent ``Parted`` with why; it is gone.

        Raises:
            RoomRefused: no such room.
        """
        room = self._find(raw)
        reason = " ".join(reason.split())  # one line, as a ban's
        if len(reason) > MAX_CLOSE_REASON:
            raise RoomRefused(f"A reason may be {MAX_CLOSE_REASON} characters long at most; {room.name} is not closed.")
        because = f": {reason}" if reason else "."
        told = encode(Parted(room.name, f"The operator closed {room.name}{because}"))  # before anything changes
        cut: list[Member] = []
        with self._lock, room.lock:
            if room.closed:  # gone since _find (a room made again under its key is another)
                raise RoomRefused(f"There is no room {printable_text(raw)}.")
            room.closed = True
            if self._rooms.get(room.key) is room:
                del self._rooms[room.key]
            for member_id in room.seats:
                self._joined[member_id].discard(room.key)
                if not self._joined[member_id]:
                    del self._joined[member_id]  # none kept for someone in no room
            self._deliver(room, told, cut)
            count = len(room.seats)
            room.seats.clear()
        _cut_off(cut)
        return f"{room.name} is closed ({count} {'person was' if count == 1 else 'people were'} in it)."

    def kick(self, raw: str, name: str, reason: str = "") -> str:
        """Take ``name`` out of a room: they are sent ``Parted`` with why,
        the others told.

        Raises:
            RoomRefused: no such room, or no one of that name in it.
        """
        room = self._find(raw)
        wanted = names.key(name)
        with room.lock:
            target = next((m for m in room.seats.values() if m.key == wanted), None)
        if target is None:
            raise RoomRefused(f"No one called {name} is in {room.name}.")
        because = f": {reason}" if reason else "."
        told = encode(Parted(room.name, f"You were kicked from {room.name} by the operator{because}"))
        self._take_out(room, target, told, f"{target.name} was kicked from {room.name} by the operator{because}")
        return f"{target.name} was kicked from {room.name}."

    # Internals.

    def _stored_lines(self, key: str) -> list[Line]:
        if self._store is None or not self._history_size:
            return []
        try:
            return self._store.room_recent(key, self._history_size)
        except HistoryUnavailable:
            # Made without its lines, its IDs would start again at 1 over the stored ones.
            raise RoomRefused(
                "The room cannot be made now: the server's history store did not answer. Try again."
            ) from None

    def _made(self, name: str, key: str, membership: Membership, lines: Sequence[Line]) -> ChatRoom:
        """A new room (under the table's lock), its founder the member."""
        if len(self._rooms) >= self.max_rooms:
            raise RoomRefused(
                f"This server has {self.max_rooms} rooms already, the most it holds: {name} was not made. "
                "Join one of them (/rooms lists them)."
            )
        self._check_person_cap(membership, key)
        history = collections.deque((_kept(name, line) for line in lines), maxlen=self._history_size)
        room = ChatRoom(name, key, history, last_id=max((line.id for line in lines), default=0))
        room.founder = membership.member_id
        self._rooms[key] = room
        self._made_count[hash(key) % MADE_COUNTS] += 1
        return room

    def _check_room_for(self, room: ChatRoom, membership: Membership) -> None:
        if len(room.seats) >= self.room_size:
            raise RoomRefused(f"{room.name} is full: it holds {self.room_size} people at most.")
        if room.invite_only and not any(i.admits(membership) for i in room.invited):
            raise RoomRefused(f"{room.name} is invite-only (+i): ask its founder for an /invite.")

    def _check_person_cap(self, membership: Membership, key: str) -> None:
        joined = self._joined.get(membership.member_id, set())
        if key not in joined and len(joined) >= self.per_person:
            raise RoomRefused(f"You are in {self.per_person} rooms already, the most one may be in: /part one first.")

    @staticmethod
    def _check_founder(room: ChatRoom, membership: Membership, command: str) -> None:
        if room.founder != membership.member_id:
            raise RoomRefused(f"Only the founder of {room.name} may use {command} there.")

    def _find(self, raw: str) -> ChatRoom:
        raw = room_shape(raw)
        with self._lock:
            room = self._rooms.get(room_key(raw))
        if room is None:
            raise RoomRefused(f"There is no room {printable_text(raw)}.")
        return room

    def _room_of(self, membership: Membership, raw: str) -> ChatRoom:
        room = self._find(raw)
        with room.lock:
            if membership.member_id not in room.seats:
                raise RoomRefused(f"You are not in {room.name} (/join {room.name} first).")
        return room

    def _take_out(self, room: ChatRoom, membership: Membership, told: Encoded | None, others: str) -> None:
        """Out of ``room``: ``told`` to them, ``others`` to the rest; an
        empty room is gone, a founder who left passes the role on."""
        cut: list[Member] = []
        with self._lock, room.lock:
            if room.seats.pop(membership.member_id, None) is None:
                return
            self._joined[membership.member_id].discard(room.key)
            if not self._joined[membership.member_id]:
                del self._joined[membership.member_id]
            if told is not None:
                self._deliver(room, told, cut, only=membership)
            if not room.seats:
                room.closed = True
                del self._rooms[room.key]
            else:
                if room.founder == membership.member_id:
                    room.founder = next(iter(room.seats))  # the one here longest
                self._deliver(room, encode(RoomNotice(room.name, others)), cut)
        _cut_off(cut)

    def _welcome(self, room: ChatRoom, membership: Membership) -> list[Encoded]:
        """``Joined`` and the history (under the room's lock), its blocks
        whole or, to a member that takes none, one message a line."""
        listed = [m.name for m in itertools.islice(room.seats.values(), GREETING_NAMES)]
        joined = Joined(room.name, room.topic, len(room.seats), "\n".join(sorted(listed, key=str.casefold)))
        history = room.history if membership.multiline else [p for item in room.history for p in encoded_pieces(item)]
        return [encode(joined), *history]

    @staticmethod
    def _deliver(
        room: ChatRoom,
        items: Encoded | list[Encoded],
        cut: list[Member],
        only: Membership | None = None,
        but: Membership | None = None,
    ) -> None:
        """Queue ``items`` (under the room's lock) for its members, ``only``
        one or all ``but`` one; those that overflow go in ``cut``, to be
        cut off once the locks are let go (that may block)."""
        items = items if isinstance(items, list) else [items]
        targets = [only] if only is not None else [m for m in room.seats.values() if m is not but]
        for m in targets:
            if not all(m.member.deliver(item) for item in items):
                cut.append(m.member)


def _kept(room: str, line: Line, live: Encoded | None = None) -> Encoded:
    """``line`` as a newcomer is sent it. A RoomHistoryLine has the fields
    of the RoomMessage it was (``live``), in the same order: only the type
    byte differs, so its bytes are not encoded again under the room's lock."""
    history = RoomHistoryLine(room, str(line.id), line.sent_at, line.kind, line.sender, line.text)
    return encode(history) if live is None else Encoded(history, bytes([RoomHistoryLine.TYPE]) + live.payload[1:])


def topic_change(setter: str, room: str, topic: str) -> tuple[str, str]:
    """A new topic made one line (it goes in a RoomList entry), and the
    notice that says it was set or cleared.

    Raises:
        RoomRefused: a topic over ``MAX_TOPIC_LENGTH``.
    """
    topic = " ".join(topic.split())
    if len(topic) > MAX_TOPIC_LENGTH:
        raise RoomRefused(f"A topic may be {MAX_TOPIC_LENGTH} characters long at most; the topic was not changed.")
    said = f"{setter} set the topic of {room}: {topic}" if topic else f"{setter} cleared the topic of {room}."
    return topic, said


def members_answer(room: str, names: Iterable[str]) -> list[Message]:
    """The answer to ``/who #room``: the names, sorted (case-folded), as
    many as fit in one message; a Notice counts the others."""
    ordered = sorted(names, key=str.casefold)
    listed, size = [], 0
    for name in ordered:
        size += len(name.encode()) + 1
        if size > USER_LIST_BYTES:  # one field of one frame, as the lobby's user list
            break
        listed.append(name)
    answer: list[Message] = [RoomMembers(room, "\n".join(listed))]
    if len(listed) < len(ordered):
        answer.append(Notice(f"...and {len(ordered) - len(listed)} more in {room}: too many to list."))
    return answer


def deliver_line(m: Membership, item: Encoded, split: list[Encoded] | None) -> bool:
    """A room's line to one member (under the room's lock): ``item``, or a
    block's ``split`` (its pieces, one message a line under the one ID) to
    a member that takes no blocks."""
    if split is None or m.multiline:
        return m.member.deliver(item)
    return all(m.member.deliver(piece) for piece in split)


def _cut_off(members: list[Member]) -> None:
    for member in members:
        member.send_queue_overflowed()
