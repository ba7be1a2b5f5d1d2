"""The room: who is in the chat, and the one order of what they hear.

It knows no sockets. A member is anything with the three methods of
``Member``; a connection handler is one, a test's fake is another.

The path of a message runs one way:

    Room.publish(message, sender)         a member said something
      -> cluster.publish(message, id)     the cluster gives it its place
        -> Room.distribute(message, id)   on every server, in that order
          -> member.deliver(encoded)      into each member's send queue

``LocalCluster`` (this server alone) hands a message straight back;
``cluster.RedisCluster`` does so once the Redis stream has it, on every
server of the cluster alike. Nothing that can block (a socket call, a
log line, a Redis call) happens under the room's lock.

Joins and leaves are published through ``presence.Presence``: in a busy
room they are summed up, one line a second at most.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from socket_chat.chat import names
from socket_chat.chat.blocks import encoded_pieces, is_block, pieces
from socket_chat.chat.history import MENTIONS_CAP, HistoryStore, HistoryUnavailable, Line, MemoryHistory, Seen
from socket_chat.chat.presence import Presence
from socket_chat.protocol import (
    GREETING_NAMES,
    GUEST_MARK,
    ActionMessage,
    ChatMessage,
    Encoded,
    Greeting,
    HistoryLine,
    Message,
    Motd,
    NickChanged,
    Notice,
    PrivateMessage,
    Unread,
    UserBanned,
    UserJoined,
    UserKicked,
    UserLeft,
    UserList,
    UserParted,
    Welcome,
    encode,
)

__all__ = [
    "DEFAULT_HISTORY",
    "USER_LIST_BYTES",
    "Member",
    "Membership",
    "Cluster",
    "LocalCluster",
    "Room",
    "user_list_messages",
]

DEFAULT_HISTORY = 20  # chat lines and actions a newcomer is shown

#: Bytes of names one UserList may carry: it is one field of one frame. A
#: thousand long names of 4-byte characters would not fit.
USER_LIST_BYTES = 60_000
#: ``_heard_by`` for what every member hears.
EVERYONE = 2**63
#: A chat line or action kept for newcomers: its fields, as an older client
#: is sent it (HistoryMessage) and as a client that asked for stamps is.
Kept = tuple[Line, Encoded, Encoded]
#: What gets a message ID and a time: public lines, actions and notices.
STAMPED = (ChatMessage, ActionMessage, Notice)
#: Told to a guest, who asked for stamps, before the history.
GUEST_HISTORY = "You are a guest: what you missed is not counted (that needs a key); here are the last lines."


class Member(Protocol):
    """What the room needs of a member's connection."""

    def deliver(self, item: Encoded) -> bool:
        """Queue ``item`` to be sent. Must never block: it is called under the
        room's lock. False if the member's send queue overflowed; the room
        then calls ``send_queue_overflowed``, outside its lock."""
        ...

    def send_queue_overflowed(self) -> None:
        """The member does not read: cut it off (it may block)."""
        ...

    def close(self, reason: str) -> None:
        """Say goodbye with ``reason`` and end the connection."""
        ...


@dataclass(eq=False)
class Membership:
    """A member's place in the room, given by ``Room.join``: the name it
    has now and its key (changed only by ``Room.rename``), an ID unique in the cluster,
    when it joined (the room's monotonic clock), and who the person is: the
    fingerprint of the key they proved, or None for a guest."""

    member: Member
    name: str
    member_id: str
    joined_at: float
    #: ``names.key(name)``: what the room holds the member under.
    key: str = ""
    away: str | None = None  # the away message while away (maybe ""), else None
    #: The order of joining on this server (the number in ``member_id``).
    seq: int = 0
    #: The person's key (``SHA256:...``, its proof checked), or None: a guest.
    fingerprint: str | None = None
    #: The member asked for message IDs and times (``Stamps``).
    stamps: bool = False
    #: The member takes multi-line messages whole (``Multiline``); else it
    #: gets each as one message a line (chat.blocks).
    multiline: bool = False
    #: When the person last left (by key), as the store had it at this join.
    seen: Seen | None = None
    #: The last line ID given when the member joined.
    joined_after: int = 0

    def __post_init__(self) -> None:
        self.key = self.key or names.key(self.name)


class Cluster(Protocol):
    """Where names are claimed and messages are put in one order.

    The room calls ``publish`` with what the others must hear; the cluster
    calls ``Room.distribute`` (or ``distribute_all``, for several at once)
    with each message exactly once, on every
    server, in one order for all (and may call ``Room.notify_here`` and
    ``Room.record_history``). Nothing here is called under the room's lock.
    """

    #: Names this server in member IDs.
    server_id: str

    def attach(self, room: Room) -> None:
        """The room to hand messages to (before ``start``)."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def claim(self, name: str, fingerprint: str | None = None) -> bool:
        """Take ``name`` for a member of this server, whose key is
        ``fingerprint`` (None: a guest); False if another holds it."""
        ...

    def release(self, name: str) -> None: ...

    def publish(self, message: Message, sender_id: str | None) -> None:
        """Give ``message`` its place in the order, then distribute it."""
        ...

    def locate(self, name: str) -> str | None:
        """The name as its holder has it, if someone on another server holds it."""
        ...

    def members(self, recent: bool = False) -> list[tuple[str, int]] | None:
        """(name, seconds online) of everyone, or None if only the room knows.
        ``recent``: a list a moment old will do (a newcomer's greeting)."""
        ...

    def set_away(self, name: str, message: str | None) -> None:
        """Mark a member here as away (``message``) or back (None), for all servers."""
        ...

    def away_messages(self) -> dict[str, str] | None:
        """The away message of everyone away, by name as held, or None if
        only the room knows."""
        ...

    def guests(self) -> set[str] | None:
        """The names, as held, of the guests online (``members``'s read),
        or None if only the room knows."""
        ...

    def away_message(self, name: str) -> str | None:
        """The away message of ``name``, held on another server, if away."""
        ...

    def fingerprint_of(self, name: str) -> str | None:
        """The key of whoever holds ``name`` on another server ("" for a
        guest), or None if it is not known."""
        ...

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool] | None:
        """A page of the history from the cluster's archive (as
        ``HistoryStore.page``), or None: the room's store has it."""
        ...

    def forget(self, line_id: int) -> bool:
        """Take a line out of the cluster's archive; False if not there."""
        ...


class LocalCluster:
    """The cluster of one: names are this server's, and a message is in its
    place as soon as it is published."""

    server_id = "local"

    def attach(self, room: Room) -> None:
        self._room = room

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def claim(self, name: str, fingerprint: str | None = None) -> bool:
        return True  # the room's own check is the whole check

    def release(self, name: str) -> None:
        pass

    def publish(self, message: Message, sender_id: str | None) -> None:
        self._room.distribute(message, sender_id)

    def locate(self, name: str) -> str | None:
        return None  # no one is anywhere else

    def members(self, recent: bool = False) -> list[tuple[str, int]] | None:
        return None  # the room knows them all

    def set_away(self, name: str, message: str | None) -> None:
        pass  # the room's membership holds it

    def away_messages(self) -> dict[str, str] | None:
        return None

    def away_message(self, name: str) -> str | None:
        return None

    def guests(self) -> set[str] | None:
        return None

    def fingerprint_of(self, name: str) -> str | None:
        return None

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool] | None:
        return None  # the room's store is the archive

    def forget(self, line_id: int) -> bool:
        return False


class Room:
    """Who is in the chat, under one lock, and the one order of its messages.

    Every member's send queue receives the messages in the same order,
    because they are queued under the room's lock; the bytes are encoded
    once per message, before the lock is taken.

    Args:
        history_size: how many recent chat lines and actions a newcomer gets
            (0: none are kept).
        motd: the message of the day, sent on joining ("" for none).
        clock: wall-clock time (for history); monotonic: for time online.
            Tests pin both.
        cluster: where names are claimed and messages are ordered (default:
            this server alone).
        presence: how joins and leaves are summed up in a busy room
            (presence.py; default: one line a second from 50 members).
        timer: ``timer(seconds, callback)`` calls back once, later, from
            another thread (default: a ``threading.Timer``). Tests call back
            themselves.
        store: where the history is also kept, to outlive this server
            (history.py; default: nowhere). The history starts with the
            last ``history_size`` lines it has.
    """

    def __init__(
        self,
        history_size: int = DEFAULT_HISTORY,
        motd: str = "",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
        presence: Presence | None = None,
        timer: Callable[[float, Callable[[], None]], object] | None = None,
        store: HistoryStore | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, Membership] = {}  # names.key(name) -> membership
        self._history: collections.deque[Kept] = collections.deque(maxlen=history_size)
        self._store: HistoryStore = store if store is not None else MemoryHistory()
        self._history.extend(_kept(line) for line in self._store.recent(history_size))
        self._last_id = self._store.last_id()  # the last message ID given; under the lock
        self._motd = [encode(Motd(motd))] if motd else []
        self._clock, self._monotonic = clock, monotonic
        self._member_ids = itertools.count(1)
        self.cluster: Cluster = cluster if cluster is not None else LocalCluster()
        self.cluster.attach(self)
        self._presence = presence if presence is not None else Presence()
        self._presence_lock = threading.Lock()  # never held with the room's
        self._timer = timer if timer is not None else _start_timer

    # Called for the members.

    def join(
        self, member: Member, name: str, fingerprint: str | None = None, stamps: bool = False, multiline: bool = False
    ) -> Membership | None:
        """Give ``member`` (whose key is ``fingerprint``; None: a guest) the
        name if nobody has it or one that looks the same (``names.key``);
        then it is welcomed (with the message of the day and the history)
        and everyone else is told. None if the name is taken. The name must
        be one ``names.accept`` gave. ``stamps``: the member asked for
        message IDs and times; a person with a key is then told, among the
        history, how much is new since they left (``Unread``). ``multiline``:
        the member takes blocks whole."""
        if not self.cluster.claim(name, fingerprint):
            return None
        welcome, wanted = encode(Welcome(name)), names.key(name)
        everyone = self.cluster.members(recent=True)  # None: the room knows them all
        seen = self._store.seen(fingerprint) if fingerprint is not None else None
        new = self._count_after(seen) if stamps else None
        with self._lock:
            if wanted in self._members:
                return None
            seq = next(self._member_ids)
            member_id = f"{self.cluster.server_id}/{seq}"
            greeting = encode(self._greeting(name, everyone))
            membership = Membership(
                member,
                name,
                member_id,
                self._monotonic(),
                wanted,
                seq=seq,
                fingerprint=fingerprint,
                stamps=stamps,
                multiline=multiline,
                seen=seen,
                joined_after=self._last_id,
            )
            self._members[wanted] = membership
            # Under the lock: no history line missed, none twice.
            history = self._history_for(membership, new)
            greeted = all(member.deliver(item) for item in [welcome, greeting, *self._motd, *history])
            members = len(self._members)
        if not greeted:
            member.send_queue_overflowed()
        self._announce(UserJoined(name), member_id, members)
        return membership

    def leave(
        self, membership: Membership, parting: str = "", kicked: str | None = None, banned: UserBanned | None = None
    ) -> None:
        """Take the member out (if it is still in) and tell everyone else,
        with its parting line if it gave one, or that the operator removed
        it (``kicked``: the reason, maybe ""; ``banned``: the notice of a
        ban, for it alone)."""
        with self._lock:
            name, held = membership.name, membership.key
            if self._members.get(held) is not membership:
                return
            del self._members[held]
            members = len(self._members)
            seen = Seen(self._last_id, int(self._clock()))
        if membership.fingerprint is not None:  # what they had seen, for their next join (a cluster's is Redis)
            self._store.save_seen(membership.fingerprint, seen)
        if kicked is not None or parting or banned is not None:  # told at once, never summed up
            with self._presence_lock:
                self._presence.parted(name)
            farewell: Message = (
                banned
                if banned is not None
                else UserKicked(name, kicked)
                if kicked is not None
                else UserParted(name, parting)
            )
            self.cluster.publish(farewell, membership.member_id)
        else:
            self._announce(UserLeft(name), membership.member_id, members)
        self.cluster.release(name)

    def publish(self, message: Message, sender: Membership | None = None) -> None:
        """What every member but ``sender`` must hear (on every server)."""
        self.cluster.publish(message, sender.member_id if sender is not None else None)

    def send_private(self, sender: Membership, recipient: str, text: str) -> bool:
        """Deliver a private line to the member called ``recipient`` (any
        case, or any name that looks the same) and a copy to ``sender`` as
        its receipt; nobody else sees it.
        False if no one of that name is online."""
        target = self.find(recipient)
        if target is not None:
            # Outside the lock: a private line has no place in the room's order.
            item = encode(PrivateMessage(sender.name, target.name, text))
            self._deliver_each({target, sender}, item)
            return True
        elsewhere = self.cluster.locate(recipient)  # on another server of the cluster?
        if elsewhere is None:
            return False
        message = PrivateMessage(sender.name, elsewhere, text)
        self._deliver_each({sender}, encode(message))
        self.cluster.publish(message, sender.member_id)
        return True

    def rename(self, membership: Membership, new_name: str) -> bool:
        """Give the member the new name if no one else has it or one that
        looks the same; everyone, the member too, is told. False if taken."""
        old_name, wanted = membership.name, names.key(new_name)
        new_name_is_new = wanted != membership.key
        if new_name_is_new and not self.cluster.claim(new_name, membership.fingerprint):
            return False
        with self._lock:
            holder = self._members.get(wanted)
            if holder is not None and holder is not membership:
                return False
            del self._members[membership.key]
            self._members[wanted] = membership
            membership.name, membership.key = new_name, wanted
        if new_name_is_new:
            self.cluster.release(old_name)
            if membership.away is not None:
                self.cluster.set_away(new_name, membership.away)  # away under the new name too
        self.cluster.publish(NickChanged(old_name, new_name), None)
        return True

    def set_away(self, membership: Membership, message: str | None) -> None:
        """Mark the member as away, with ``message`` (maybe ""), or as back
        (None), for ``/users`` and the senders of private lines."""
        with self._lock:
            membership.away = message
        if membership.fingerprint is not None:  # kept for the key, to outlive a restart
            self._store.save_away(membership.fingerprint, message)
        self.cluster.set_away(membership.name, message)

    def kept_away(self, membership: Membership) -> str | None:
        """The away message the store keeps for the member's key, if any."""
        return None if membership.fingerprint is None else self._store.away(membership.fingerprint)

    # The history, read back.

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool]:
        """``/history``: up to ``count`` lines before the ID ``before``
        (None: the newest), oldest first, and whether earlier ones exist:
        from the cluster's archive (the stream) if it has one, else the store.

        Raises:
            HistoryUnavailable: the store cannot answer now.
        """
        answer = self.cluster.page(before, count)
        return answer if answer is not None else self._store.page(before, count)

    def missed_mentions(self, membership: Membership, cap: int = MENTIONS_CAP) -> list[Line] | None:
        """``/mentions``: the lines that mentioned the member between its
        last leaving and this join, newest first; None if that is not known
        (a guest, or a key's first visit).

        Raises:
            HistoryUnavailable: the store cannot answer now.
        """
        if membership.seen is None:
            return None
        return self._store.mentioning(membership.name, membership.seen.last_id, membership.joined_after, cap)

    def forget(self, line_id: int) -> bool:
        """Take the line ``line_id`` out of the history (the newcomers' and
        the store's); False if it is in neither.

        Raises:
            HistoryUnavailable: the store cannot answer now.
        """
        with self._lock:
            before = len(self._history)
            self._history = collections.deque(
                (kept for kept in self._history if kept[0].id != line_id), maxlen=self._history.maxlen
            )
            here = len(self._history) < before
        in_stream = self.cluster.forget(line_id)
        return self._store.forget(line_id) or here or in_stream

    def away_message(self, name: str) -> tuple[str, str] | None:
        """(name as held, away message) if the member called ``name`` (on
        any server) is away, else None."""
        here = self.find(name)
        if here is not None:
            return None if here.away is None else (here.name, here.away)
        elsewhere = self.cluster.locate(name)
        message = None if elsewhere is None else self.cluster.away_message(elsewhere)
        return None if elsewhere is None or message is None else (elsewhere, message)

    def away_messages(self) -> dict[str, str]:
        """The away message of everyone away, by name as held."""
        away = self.cluster.away_messages()
        if away is not None:
            return away
        with self._lock:
            return {m.name: m.away for m in self._members.values() if m.away is not None}

    def guests(self) -> set[str]:
        """The names, as held, of the guests online (for ``/users``)."""
        guests = self.cluster.guests()
        if guests is not None:
            return guests
        with self._lock:
            return {m.name for m in self._members.values() if m.fingerprint is None}

    def find(self, name: str) -> Membership | None:
        """The member called ``name`` (any case, or a name that looks the
        same) on this server, or None."""
        wanted = names.key(name)
        with self._lock:
            return self._members.get(wanted)

    def holder(self, name: str) -> str | None:
        """The name, as its holder has it, of whoever holds ``name`` or one
        that looks the same, here or on another server; None if no one."""
        found = self.find(name)
        return found.name if found is not None else self.cluster.locate(name)

    def who(self) -> list[tuple[str, int]]:
        """(name, whole seconds online) of everyone online, sorted by name
        (case-folded): on every server of the cluster, or on this one if it
        cannot say."""
        members = self.cluster.members()
        if members is None:
            members = self.local_members()
        return sorted(members, key=lambda entry: entry[0].casefold())

    def local_members(self) -> list[tuple[str, int]]:
        """(name, whole seconds online) of the members on this server."""
        with self._lock:
            now = self._monotonic()
            return [(m.name, int(now - m.joined_at)) for m in self._members.values()]

    def names(self) -> list[str]:
        """The names of the members on this server, sorted (case-folded)."""
        with self._lock:
            return sorted((m.name for m in self._members.values()), key=str.casefold)

    # Called by the cluster.

    def distribute(self, message: Message, sender_id: str | None, sent_at: float | None = None) -> None:
        """Deliver a message in its place in the one order: to every member
        but its sender, or a private one to its recipient only. Chat lines
        and actions are kept for newcomers (``sent_at``: when, if not now)."""
        self.distribute_all([(message, sender_id, sent_at)])

    def distribute_all(
        self,
        entries: Sequence[tuple[Message, str | None, float | None]],
        ids: Sequence[int | None] | None = None,
    ) -> None:
        """``distribute`` each of several (message, sender_id, sent_at), in
        order. The room's lock is taken once for each run of broadcasts, and
        each member is given the whole run at once: its writer then finds
        them queued together and seals them as one record. ``ids``: the
        message ID of each, from the cluster's one order (None: the room
        numbers them)."""
        run: list[_Outgoing] = []
        for index, (message, sender_id, sent_at) in enumerate(entries):
            if isinstance(message, PrivateMessage):
                self._broadcast(run)  # what came before it goes first
                run = []
                self._deliver_private(message, encode(message), sender_id)
            else:
                when = int(self._clock() if sent_at is None else sent_at)
                out = _Outgoing(encode(message), message, sender_id, when, self._heard_by(message, sender_id))
                out.line_id = ids[index] if ids is not None else None
                if self._history.maxlen and isinstance(message, (ChatMessage, ActionMessage)):
                    out.plain = encode(_line(0, when, message).plain())  # needs no ID: made before the lock
                if is_block(message):
                    out.pieces = encoded_pieces(out.item)  # for those who take no blocks
                run.append(out)
        self._broadcast(run)

    def _heard_by(self, message: Message, sender_id: str | None) -> int:
        """Members of this server whose ``seq`` is below this hear ``message``.
        A join of this server's is told after the newcomer's Welcome, outside
        the lock, so someone may join in between: the Greeting already named
        the newcomer to them, and they are not told again."""
        if isinstance(message, UserJoined) and sender_id is not None:
            server, _, seq = sender_id.rpartition("/")
            if server == self.cluster.server_id and seq.isdigit():
                return int(seq)
        return EVERYONE

    def record_history(self, message: Message, sent_at: float, line_id: int | None = None) -> None:
        """Keep a chat line or action said before this server started (it
        is stored already: it does not go to the store); ``line_id``: its
        ID in the cluster's order."""
        if self._history.maxlen and isinstance(message, (ChatMessage, ActionMessage)):
            with self._lock:
                self._last_id = line_id if line_id is not None else self._last_id + 1
                self._history.append(_kept(_line(self._last_id, int(sent_at), message)))

    def notify_here(self, notice: Notice) -> None:
        """Deliver ``notice`` to the members on this server only (the
        cluster's news about itself)."""
        item = encode(notice)
        with self._lock:
            overflowed = [m.member for m in self._members.values() if not m.member.deliver(item)]
        self._cut_off(overflowed)

    # Internals.

    def _announce(self, message: UserJoined | UserLeft, member_id: str, members: int) -> None:
        """Tell everyone of a join or leave, at once or summed up later
        (presence.py); the room's lock is not held."""
        with self._presence_lock:
            waiting = self._presence.due is not None
            now = self._monotonic()
            publish = self._presence.add(message, member_id, now, members)
            due = self._presence.due
        if due is not None and not waiting:
            self._timer(max(0.0, due - now), self._flush_presence)
        for item, sender_id in publish:
            self.cluster.publish(item, sender_id)

    def _flush_presence(self) -> None:
        """The timer: tell the joins and leaves that waited."""
        with self._presence_lock:
            publish = self._presence.flush(self._monotonic())
        for item, sender_id in publish:
            self.cluster.publish(item, sender_id)

    def _broadcast(self, run: list[_Outgoing]) -> None:
        """Queue each item of ``run`` for every member but its sender (and
        those who joined after, for a join: see ``_heard_by``), under one
        taking of the lock, member by member. Public lines, actions and
        notices get their message IDs here, in the room's order, and those
        kept go to the history and the store; a member who asked for stamps
        gets their stamped form."""
        if not run:
            return
        overflowed = []
        with self._lock:
            stamped = False
            for out in run:
                if isinstance(out.message, STAMPED):
                    stamped = True
                    self._last_id = out.line_id if out.line_id is not None else self._last_id + 1
                    line = _line(self._last_id, out.sent_at, out.message)
                    out.stamped = encode(line.live())
                    if out.pieces is not None:  # a block (rare): its stamped pieces need the ID
                        out.stamped_pieces = [encode(piece) for piece in pieces(out.stamped.message)]
                    if self._history.maxlen and not isinstance(out.message, Notice):
                        self._history.append(_kept(line, out.stamped, out.plain))
                        self._store.keep(line)  # O(1), never blocks: in the room's order
            if stamped:
                self._store.given(self._last_id)  # O(1): the high-water mark, notices' IDs too
            for m in self._members.values():
                if not all(
                    m.member.deliver(out.stamped if m.stamps and out.stamped is not None else out.item)
                    if out.pieces is None or m.multiline
                    else _deliver_pieces(m, out)
                    for out in run
                    if m.member_id != out.sender_id and m.seq < out.heard_by
                ):
                    overflowed.append(m.member)
        self._cut_off(overflowed)

    def _count_after(self, seen: Seen | None) -> int | None:
        """How many lines were kept since ``seen`` (None: unknown)."""
        if seen is None:
            return None
        try:
            return self._store.count_after(seen.last_id)
        except HistoryUnavailable:
            return None

    def _history_for(self, membership: Membership, new: int | None) -> list[Encoded]:
        """A newcomer's history (under the lock), its blocks whole or, to a
        member that takes none, one message a line."""
        items = self._history_forms(membership, new)
        return items if membership.multiline else [piece for item in items for piece in encoded_pieces(item)]

    def _history_forms(self, membership: Membership, new: int | None) -> list[Encoded]:
        """A newcomer's history (under the lock): stamped or plain, with
        ``Unread`` where what they had seen ends, or a guest told why not."""
        stamped = membership.stamps
        items = [kept[2] if stamped else kept[1] for kept in self._history]
        if not stamped:
            return items
        if membership.fingerprint is None:
            return [encode(Notice(GUEST_HISTORY)), *items] if items else items
        seen = membership.seen
        if seen is None or new is None:
            return items
        shown = sum(1 for kept in self._history if kept[0].id > seen.last_id)
        unread = encode(Unread(min(new, 0xFFFFFFFF), max(0, seen.left_at), shown))
        items.insert(len(items) - shown, unread)
        return items

    def _deliver_private(self, message: PrivateMessage, item: Encoded, sender_id: str | None) -> None:
        target = self.find(message.recipient)
        if target is not None and target.member_id != sender_id:
            self._deliver_each({target}, item)

    def _greeting(self, name: str, everyone: list[tuple[str, int]] | None) -> Greeting:
        """Who else is here, for a newcomer: everyone in the cluster, or
        (under the lock) those of this room, listing ``GREETING_NAMES`` at
        most. Here the first to have joined are listed, taken without a sort,
        so that a join costs the same in a room of thousands."""
        if everyone is None:
            others = [m.name for m in itertools.islice(self._members.values(), GREETING_NAMES + 1)]
            count = len(self._members)
        else:
            others = [n for n, _ in everyone if n != name]  # the cluster holds it as claimed
            count = len(others)
        listed = sorted(others, key=str.casefold)[:GREETING_NAMES]
        return Greeting(name, count, "\n".join(listed))

    def _deliver_each(self, memberships: Iterable[Membership], item: Encoded) -> None:
        self._cut_off([m.member for m in memberships if not m.member.deliver(item)])

    @staticmethod
    def _cut_off(members: list[Member]) -> None:
        for member in members:
            member.send_queue_overflowed()


@dataclass(eq=False)
class _Outgoing:
    """One broadcast on its way: its bytes, the message, its sender, its
    time, who hears it (``_heard_by``), and its stamped bytes once it has
    its ID."""

    item: Encoded
    message: Message
    sender_id: str | None
    sent_at: int
    heard_by: int
    stamped: Encoded | None = None
    line_id: int | None = None  # given by the cluster's order
    plain: Encoded | None = None  # its HistoryMessage, for older newcomers, if it is kept
    #: A block's pieces, plain and stamped, for members that take no blocks.
    pieces: list[Encoded] | None = None
    stamped_pieces: list[Encoded] | None = None


def _deliver_pieces(m: Membership, out: _Outgoing) -> bool:
    """A block to a member that takes none: one message a line (under the
    room's lock, as every delivery)."""
    stamped = m.stamps and out.stamped_pieces is not None
    return all(m.member.deliver(item) for item in (out.stamped_pieces if stamped else out.pieces) or [])


def _line(line_id: int, sent_at: int, message: Message) -> Line:
    if isinstance(message, Notice):
        return Line(line_id, sent_at, "notice", "", message.text)
    assert isinstance(message, (ChatMessage, ActionMessage))
    return Line(
        line_id, sent_at, "action" if isinstance(message, ActionMessage) else "chat", message.sender, message.text
    )


def _kept(line: Line, live: Encoded | None = None, plain: Encoded | None = None) -> Kept:
    """``line`` with its two history forms. A HistoryLine has the fields of
    the StampedLine it was (``live``), in the same order: only the type
    byte differs, so its bytes are not encoded again under the lock; nor is
    the plain form when it was made before (``plain``)."""
    plain = plain if plain is not None else encode(line.plain())
    if live is None:
        return line, plain, encode(line.stamped())
    return line, plain, Encoded(line.stamped(), bytes([HistoryLine.TYPE]) + live.payload[1:])


def _start_timer(seconds: float, callback: Callable[[], None]) -> object:
    timer = threading.Timer(seconds, callback)
    timer.daemon = True  # a summary due at shutdown is not worth waiting for
    timer.start()
    return timer


def user_list_messages(
    members: list[tuple[str, int]], away: dict[str, str] | None = None, guests: set[str] | None = None
) -> list[Message]:
    """The answer to /users: a UserList of as many members as fit in one
    message (with the away messages, by name as held, and the guests
    marked), and a Notice counting the rest if some do not."""
    away, guests = away or {}, guests or set()
    listed: list[tuple[str, int]] = []
    size = 0
    for name, seconds in members:
        size += len(name.encode("utf-8")) + len(str(seconds)) + 2  # a tab and a newline
        if name in guests:
            size += len(GUEST_MARK)
        message = away.get(name)
        if message is not None:
            size += len(message.encode("utf-8")) + 1
        if size > USER_LIST_BYTES:
            break
        listed.append((name, seconds))
    messages: list[Message] = [UserList.of(listed, away, guests)]
    if len(listed) < len(members):
        messages.append(Notice(f"...and {len(members) - len(listed)} more: too many to list."))
    return messages
