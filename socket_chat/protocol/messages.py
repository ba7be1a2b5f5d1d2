"""The application messages (PROTOCOL.md section 4): what a client and a
server say to each other once the handshake is done.

Each message is a frozen dataclass named after what it says, with its type
byte in ``TYPE`` and its fields in wire order; every field is text
(``str``), bytes (``bytes``) or a number (``int``, a u32), as ``schema`` reads them off the
annotations. A message checks its own values when it is made, so one that
could not go on the wire cannot exist (as h11's events do).

``MESSAGE_TYPES`` finds a class by its type byte; ``CLIENT_SENDS`` and
``SERVER_SENDS`` say which role may send which, and each connection refuses
to send, and reports as malformed, what its role does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import ClassVar

from socket_chat.protocol.schema import MAX_U32, FieldType, field_specs

__all__ = [
    "MAX_USERNAME_LENGTH",
    "GREETING_NAMES",
    "GUEST_MARK",
    "Message",
    "UsernameRequest",
    "Username",
    "Welcome",
    "ChatLine",
    "ChatMessage",
    "UserJoined",
    "UserLeft",
    "Notice",
    "ErrorNotice",
    "Goodbye",
    "RateLimit",
    "PrivateLine",
    "PrivateMessage",
    "ActionLine",
    "ActionMessage",
    "NickRequest",
    "NickChanged",
    "UserListRequest",
    "UserList",
    "HistoryMessage",
    "Motd",
    "UserParted",
    "UserKicked",
    "Greeting",
    "Away",
    "Back",
    "AwayReply",
    "UsernameDeadline",
    "EchoOwnLines",
    "ProofRequest",
    "KeyProof",
    "WhoisReply",
    "WhoisRequest",
    "DeviceAdd",
    "DeviceRemove",
    "DeviceListRequest",
    "DeviceList",
    "SearchRequest",
    "SearchResult",
    "OfflineMessage",
    "OperatorCommand",
    "OperatorStatus",
    "UserBanned",
    "Stamps",
    "StampedLine",
    "HistoryRequest",
    "HistoryLine",
    "PageEnd",
    "Unread",
    "MentionsRequest",
    "HISTORY_PAGE",
    "MAX_HISTORY_PAGE",
    "TicketRequest",
    "NewTicket",
    "MultilineOffer",
    "Multiline",
    "MAX_ROOM_NAME_LENGTH",
    "MAX_TOPIC_LENGTH",
    "Rooms",
    "RoomRequest",
    "RoomLine",
    "RoomMessage",
    "RoomNotice",
    "Joined",
    "Parted",
    "RoomList",
    "RoomMembers",
    "RoomHistoryLine",
    "MESSAGE_TYPES",
    "CLIENT_SENDS",
    "SERVER_SENDS",
]

MAX_USERNAME_LENGTH = 32
GREETING_NAMES = 10  # names a Greeting lists at most; it counts the rest
#: After a guest's name in a UserList entry (PROTOCOL.md, 0x17), so that a
#: client of any version shows ``bob (guest)``.
GUEST_MARK = " (guest)"


@dataclass(frozen=True)
class Message:
    """Base of the typed application messages. Every field is a ``str``
    (UTF-8 on the wire), ``bytes`` (as they are) or an ``int`` (u32 on the
    wire)."""

    TYPE: ClassVar[int]

    def __post_init__(self) -> None:
        for spec in field_specs(type(self)):
            value = getattr(self, spec.name)
            if spec.type is FieldType.U32:
                if type(value) is not int or not 0 <= value <= MAX_U32:
                    raise TypeError(f"{type(self).__name__}.{spec.name} must be an int from 0 to 2**32-1")
            elif not isinstance(value, spec.type.value):
                raise TypeError(f"{type(self).__name__}.{spec.name} must be {spec.type.value.__name__}")


@dataclass(frozen=True)
class UsernameRequest(Message):
    """Server: choose a username. ``prompt`` says why (first ask, taken, invalid)."""

    TYPE: ClassVar[int] = 0x01
    prompt: str


@dataclass(frozen=True)
class Username(Message):
    """Client: the username it asks for."""

    TYPE: ClassVar[int] = 0x02
    name: str


@dataclass(frozen=True)
class Welcome(Message):
    """Server: the username was accepted (in its normalized form)."""

    TYPE: ClassVar[int] = 0x03
    name: str


@dataclass(frozen=True)
class ChatLine(Message):
    """Client: a line of chat for everyone else."""

    TYPE: ClassVar[int] = 0x04
    text: str


@dataclass(frozen=True)
class ChatMessage(Message):
    """Server: someone's chat line, shown as ``NAME: TEXT``."""

    TYPE: ClassVar[int] = 0x05
    sender: str
    text: str


@dataclass(frozen=True)
class UserJoined(Message):
    TYPE: ClassVar[int] = 0x06
    name: str


@dataclass(frozen=True)
class UserLeft(Message):
    TYPE: ClassVar[int] = 0x07
    name: str


@dataclass(frozen=True)
class Notice(Message):
    """Server: a line of information for the person."""

    TYPE: ClassVar[int] = 0x08
    text: str


@dataclass(frozen=True)
class ErrorNotice(Message):
    """Server: something the person sent was refused, and why."""

    TYPE: ClassVar[int] = 0x09
    text: str


@dataclass(frozen=True)
class Goodbye(Message):
    """Either side: I am closing on purpose (not a lost connection)."""

    TYPE: ClassVar[int] = 0x0A
    reason: str


@dataclass(frozen=True)
class RateLimit(Message):
    """Server: how fast this server lets the person send, so that a client
    can pace itself instead of having lines refused. A token bucket: ``burst``
    messages at once, then one more every ``interval_ms`` milliseconds."""

    TYPE: ClassVar[int] = 0x0B
    burst: int
    interval_ms: int


# The chat's commands and history, from 0x10 up (0x0C to 0x0E are free).


@dataclass(frozen=True)
class PrivateLine(Message):
    """Client: a line for one member only (``/msg NAME TEXT``)."""

    TYPE: ClassVar[int] = 0x10
    recipient: str
    text: str


@dataclass(frozen=True)
class PrivateMessage(Message):
    """Server: a private line, sent to its recipient and, as a receipt, to
    its sender; never to anyone else."""

    TYPE: ClassVar[int] = 0x11
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True)
class ActionLine(Message):
    """Client: an action for everyone else (``/me ACTION``)."""

    TYPE: ClassVar[int] = 0x12
    text: str


@dataclass(frozen=True)
class ActionMessage(Message):
    """Server: someone's action, shown as ``* NAME ACTION``."""

    TYPE: ClassVar[int] = 0x13
    sender: str
    text: str


@dataclass(frozen=True)
class NickRequest(Message):
    """Client: rename me (``/nick NEW``)."""

    TYPE: ClassVar[int] = 0x14
    name: str


@dataclass(frozen=True)
class NickChanged(Message):
    """Server, to everyone (the renamed member too): ``old`` is now ``new``."""

    TYPE: ClassVar[int] = 0x15
    old: str
    new: str


@dataclass(frozen=True)
class UserListRequest(Message):
    """Client: who is online? (``/users``; no fields)."""

    TYPE: ClassVar[int] = 0x16


@dataclass(frozen=True)
class UserList(Message):
    """Server: who is online. ``entries`` holds one ``NAME<TAB>SECONDS`` line
    per member (seconds online), and ``<TAB>AWAY`` after it for a member who
    is away (their away message, maybe empty); names never hold a tab or a
    newline, since they are printable, and away messages neither. A guest's
    NAME ends in ``GUEST_MARK``."""

    TYPE: ClassVar[int] = 0x17
    entries: str

    @classmethod
    def of(
        cls, members: list[tuple[str, int]], away: Mapping[str, str] | None = None, guests: Set[str] = frozenset()
    ) -> UserList:
        """Build the message from (name, seconds online) pairs, the away
        messages of those who are away and the names of the guests (by
        name, as in ``members``)."""
        away = away or {}
        return cls(
            "\n".join(
                _user_list_entry(name + GUEST_MARK if name in guests else name, seconds, away.get(name))
                for name, seconds in members
            )
        )

    def members(self) -> list[tuple[str, int]]:
        """The (name as listed, seconds online) pairs; lines that do not
        parse are skipped. A guest is listed with ``GUEST_MARK``."""
        return [(name, seconds) for name, seconds, _ in self._entries()]

    def names(self) -> list[str]:
        """The names of the members, without the guests' mark (to complete
        and to write to)."""
        return [name.removesuffix(GUEST_MARK) for name, _, _ in self._entries()]

    def away(self) -> dict[str, str]:
        """The away message of each member who is away, by name as listed."""
        return {name: message for name, _, message in self._entries() if message is not None}

    def _entries(self) -> list[tuple[str, int, str | None]]:
        entries = []
        for line in self.entries.split("\n"):
            name, _, rest = line.partition("\t")
            seconds, tab, message = rest.partition("\t")
            if name and seconds.isdigit():
                entries.append((name, int(seconds), message if tab else None))
        return entries


def _user_list_entry(name: str, seconds: int, away: str | None) -> str:
    return f"{name}\t{seconds}" if away is None else f"{name}\t{seconds}\t{away}"


@dataclass(frozen=True)
class HistoryMessage(Message):
    """Server: a chat line or action from before the newcomer joined.
    ``sent_at`` is Unix time in whole seconds; ``kind`` is ``"chat"`` or
    ``"action"``."""

    TYPE: ClassVar[int] = 0x18
    sender: str
    text: str
    sent_at: int
    kind: str


@dataclass(frozen=True)
class Motd(Message):
    """Server: the message of the day, on joining; may hold several lines."""

    TYPE: ClassVar[int] = 0x19
    text: str


@dataclass(frozen=True)
class UserParted(Message):
    """Server: someone left with a parting line (``/quit MESSAGE``)."""

    TYPE: ClassVar[int] = 0x1A
    name: str
    message: str


@dataclass(frozen=True)
class UserKicked(Message):
    """Server: the operator removed a member (instead of UserLeft);
    ``reason`` may be empty."""

    TYPE: ClassVar[int] = 0x1B
    name: str
    reason: str


@dataclass(frozen=True)
class Greeting(Message):
    """Server, right after Welcome: who you are and who else is here.
    ``others`` counts everyone else online; ``names`` holds up to
    ``GREETING_NAMES`` of them, one per line (LF)."""

    TYPE: ClassVar[int] = 0x1C
    name: str
    others: int
    names: str

    def listed(self) -> list[str]:
        """The names of the others it lists."""
        return [name for name in self.names.split("\n") if name]


@dataclass(frozen=True)
class Away(Message):
    """Client: mark me as away (``/away [MESSAGE]``); ``message`` may be empty."""

    TYPE: ClassVar[int] = 0x1D
    message: str


@dataclass(frozen=True)
class Back(Message):
    """Client: I am back (``/back``; no fields)."""

    TYPE: ClassVar[int] = 0x1E


@dataclass(frozen=True)
class AwayReply(Message):
    """Server, to the sender of a private line: its recipient is away, and
    their away message (may be empty)."""

    TYPE: ClassVar[int] = 0x1F
    name: str
    message: str


# Added later, from 0x20 up: UsernameDeadline (an older client reports it as
# a message it cannot read, once), and EchoOwnLines, which a client sends only
# to a server that sent UsernameDeadline.


@dataclass(frozen=True)
class UsernameDeadline(Message):
    """Server: the connection is closed unless a username is accepted
    within ``seconds`` of this message, so that the client can say so."""

    TYPE: ClassVar[int] = 0x20
    seconds: int


@dataclass(frozen=True)
class EchoOwnLines(Message):
    """Client: send my own chat lines and actions back to me, as the others
    get them (ChatMessage, ActionMessage), in the room's order, so that I can
    show them as they see them. Server: the same back, as the answer: from
    here on, they come."""

    TYPE: ClassVar[int] = 0x21


# Added with keys for people (PROTOCOL.md, "Key proof"): a client sends a
# KeyProof only to a server that sent ProofRequest, so an older server never
# gets one, and an older client, which never sends one, is a guest.


@dataclass(frozen=True)
class ProofRequest(Message):
    """Server: before the username, this server takes a ``KeyProof`` (a
    client without a key may skip it, as a guest, where guests are allowed)."""

    TYPE: ClassVar[int] = 0x22


@dataclass(frozen=True)
class KeyProof(Message):
    """Client: the person's public key and its signature of this
    connection's session identifier (PROTOCOL.md, "Key proof"). The key and
    the signature stay out of ``repr``, and so out of every log line."""

    TYPE: ClassVar[int] = 0x23
    key_type: str
    public_key: bytes = field(repr=False)
    signature: bytes = field(repr=False)


# Added with registered names (PROTOCOL.md, "Registered names"): an older
# server does not know a WhoisRequest and answers it with an ErrorNotice
# (a type it cannot read), which a client shows as any other.


@dataclass(frozen=True)
class WhoisRequest(Message):
    """Client: who is ``name`` (``/whois NAME``)?"""

    TYPE: ClassVar[int] = 0x24
    name: str


@dataclass(frozen=True)
class WhoisReply(Message):
    """Server: the answer to a ``WhoisRequest``. ``name``: as held online,
    else as registered; ``state``: ``online``, ``away`` or ``offline``;
    ``online``: whole seconds online (0 offline); ``fingerprint``: the key
    of whoever is online under the name (empty: a guest), else the
    registration's; ``registered_at``: Unix time of the registration, 0 if
    the name is not registered; ``away``: the away message (maybe empty)."""

    TYPE: ClassVar[int] = 0x25
    name: str
    state: str
    online: int
    fingerprint: str
    registered_at: int
    away: str


# Added with devices (PROTOCOL.md, "Devices"): an older server answers these
# with an ErrorNotice (a type it cannot read), which a client shows.


@dataclass(frozen=True)
class DeviceAdd(Message):
    """Client: let the key ``key`` (a fingerprint, ``SHA256:...``, or an
    OpenSSH public key line, ``ssh-ed25519 AAAA... [comment]``) use my names
    (``/device add``). Answered with a Notice or an ErrorNotice."""

    TYPE: ClassVar[int] = 0x38
    key: str


@dataclass(frozen=True)
class DeviceRemove(Message):
    """Client: ``key`` (as in ``DeviceAdd``) may no longer use my names
    (``/device remove``). Answered with a Notice or an ErrorNotice."""

    TYPE: ClassVar[int] = 0x39
    key: str


@dataclass(frozen=True)
class DeviceListRequest(Message):
    """Client: which keys may use my names (``/device list``)?"""

    TYPE: ClassVar[int] = 0x3A


@dataclass(frozen=True)
class DeviceList(Message):
    """Server: the answer to a ``DeviceListRequest``. ``owner``: the key
    whose names they are (the asker's, or, asked from a device, its
    owner's); ``entries``: one ``FINGERPRINT<TAB>ADDED_AT`` line per device
    (Unix time), oldest first, joined by newlines; empty: none."""

    TYPE: ClassVar[int] = 0x3B
    owner: str
    entries: str

    @classmethod
    def of(cls, owner: str, devices: list[tuple[str, int]]) -> DeviceList:
        return cls(owner, "\n".join(f"{fingerprint}\t{added_at}" for fingerprint, added_at in devices))

    def devices(self) -> list[tuple[str, int]]:
        """(fingerprint, added_at) of each entry; a garbled entry is left out."""
        found = []
        for line in self.entries.split("\n") if self.entries else []:
            fingerprint, _, added = line.partition("\t")
            if added.isdigit():
                found.append((fingerprint, int(added)))
        return found


# Search and the messages kept for someone offline: 0x48 to 0x4F.


@dataclass(frozen=True)
class SearchRequest(Message):
    """Client: ``/search WORDS [from:NAME] [before:DATE] [after:DATE]``.
    ``words``: separated by spaces, each one a word to find (a trailing
    ``*``: a prefix); ``sender``: only lines of this name ("" for anyone);
    ``after``: only lines sent at or after this Unix time, ``before``: only
    before it (0: no bound)."""

    TYPE: ClassVar[int] = 0x48
    words: str
    sender: str
    after: int
    before: int


@dataclass(frozen=True)
class SearchResult(Message):
    """Server: one line that matched a ``SearchRequest``, after a Notice
    that says how many follow; newest first. Its fields as a
    ``HistoryMessage``'s."""

    TYPE: ClassVar[int] = 0x49
    sender: str
    text: str
    sent_at: int
    kind: str


@dataclass(frozen=True)
class OfflineMessage(Message):
    """Server: a private line kept for its recipient while they were
    offline, given after their Welcome; ``sent_at`` in Unix seconds."""

    TYPE: ClassVar[int] = 0x4A
    sender: str
    recipient: str
    text: str
    sent_at: int


# Added with operators (PROTOCOL.md, "Operators and bans"): a server tells
# only an operator (and one whose standing a reload changed), so an older
# client never gets an OperatorStatus unless it is an operator's; an older
# server does not know an OperatorCommand and answers it with an ErrorNotice.


@dataclass(frozen=True)
class OperatorCommand(Message):
    """Client: an operator's command (``/ban alice 2h spam``): ``command``,
    its name without the slash (``kick``, ``ban``, ``unban``, ``bans``,
    ``release``, ``say``), and ``argument``, the rest of the line as typed.
    The server answers with Notice lines, or an ErrorNotice."""

    TYPE: ClassVar[int] = 0x30
    command: str
    argument: str


@dataclass(frozen=True)
class OperatorStatus(Message):
    """Server: whether this person is one of its operators (1) or not (0):
    right after the Greeting for an operator, and again when a reload of
    the operators file changes it. A client shows the operator's commands
    in ``/help`` only while the last one said 1."""

    TYPE: ClassVar[int] = 0x31
    operator: int


@dataclass(frozen=True)
class UserBanned(Message):
    """Server: an operator banned a member, who is gone (instead of
    UserLeft, and the only notice of it): ``seconds`` the ban's length (0:
    for ever), ``reason`` maybe empty."""

    TYPE: ClassVar[int] = 0x32
    name: str
    seconds: int
    reason: str


# Added with the history (PROTOCOL.md, "Message IDs and server time"): the
# server announces ``Stamps``; only a client that answers it gets the
# stamped types and sends the requests, so an older client sees one message
# it cannot read (the announcement) and nothing else changes for it.

#: Lines a ``/history`` page holds when the person gives no number, and at most.
HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 200


@dataclass(frozen=True)
class Stamps(Message):
    """Server, before the first UsernameRequest: this server gives every
    public line an ID and its time, and answers history requests. Client,
    in answer: send me the stamped forms (``StampedLine``, ``HistoryLine``)."""

    TYPE: ClassVar[int] = 0x40


@dataclass(frozen=True)
class StampedLine(Message):
    """Server: a public chat line (``kind`` ``chat``), action (``action``)
    or notice (``notice``, ``sender`` empty) as it happens, with its
    message ID (opaque text) and the server's Unix time in whole seconds.
    Sent in place of ChatMessage, ActionMessage or Notice to a client that
    asked with ``Stamps``."""

    TYPE: ClassVar[int] = 0x41
    id: str
    sent_at: int
    kind: str
    sender: str
    text: str


@dataclass(frozen=True)
class HistoryRequest(Message):
    """Client: ``count`` lines said before the line ``before`` (an ID; empty:
    the newest), ``/history [N]``."""

    TYPE: ClassVar[int] = 0x42
    before: str
    count: int


@dataclass(frozen=True)
class HistoryLine(Message):
    """Server: a line from the history, with its ID and time (the stamped
    form of HistoryMessage; ``kind`` ``chat`` or ``action``)."""

    TYPE: ClassVar[int] = 0x43
    id: str
    sent_at: int
    kind: str
    sender: str
    text: str

    def plain(self) -> HistoryMessage:
        """The same line as an older client gets it."""
        return HistoryMessage(self.sender, self.text, self.sent_at, self.kind)


@dataclass(frozen=True)
class PageEnd(Message):
    """Server: the end of an answer of HistoryLines. ``what`` is
    ``history`` or ``mentions``; ``count`` the lines sent; ``more`` 1 if
    there are earlier lines, 0 at the beginning."""

    TYPE: ClassVar[int] = 0x44
    what: str
    count: int
    more: int


@dataclass(frozen=True)
class Unread(Message):
    """Server, among a returning person's history: ``new`` lines were said
    since they left at ``left_at`` (Unix time); the ``shown`` lines after
    this one are new, those before it they had seen."""

    TYPE: ClassVar[int] = 0x45
    new: int
    left_at: int
    shown: int


@dataclass(frozen=True)
class MentionsRequest(Message):
    """Client: the lines that mentioned me while I was away (``/mentions``)."""

    TYPE: ClassVar[int] = 0x46


# Added with resumption (PROTOCOL.md section 2, "Resumption"): a client asks
# for a ticket once a connection is open; an older server answers with
# ErrorNotice("Message not understood: ..."), which this client takes as "no
# tickets here" and does not show.


@dataclass(frozen=True)
class TicketRequest(Message):
    """Client: give me a resumption ticket for my next connection."""

    TYPE: ClassVar[int] = 0x52


@dataclass(frozen=True)
class NewTicket(Message):
    """Server: a resumption ticket (RFC 8446's NewSessionTicket), good for
    one resumption within ``lifetime`` seconds; ``lifetime`` 0 and an empty
    ticket: none is given. The ticket stays out of ``repr``."""

    TYPE: ClassVar[int] = 0x53
    lifetime: int
    ticket: bytes = field(repr=False)


# Added with multi-line messages (PROTOCOL.md, "Multi-line messages"): the
# server offers them as it offers Stamps; a client that answers may send a
# ChatLine whose text holds LF and gets blocks whole, and every other client
# gets a block as one message per line, so it sees nothing new.


@dataclass(frozen=True)
class MultilineOffer(Message):
    """Server, before the first UsernameRequest: this server takes a chat
    line of several lines (LF between them), ``max_lines`` at most, as one
    message (a block)."""

    TYPE: ClassVar[int] = 0x60
    max_lines: int


@dataclass(frozen=True)
class Multiline(Message):
    """Client, in answer to ``MultilineOffer``: send me blocks whole (a
    ChatMessage, StampedLine, HistoryLine... whose text holds LF); I may
    send them too."""

    TYPE: ClassVar[int] = 0x61


# Added with rooms (PROTOCOL.md, "Rooms"): the server offers ``Rooms`` after
# ``Stamps``; only a client that answers it sends room requests and is sent
# the room messages, so an older client sees one message it cannot read (the
# offer) and stays in the lobby, which is the chat as it was.

#: Characters of a room's name after its ``#``, as many as a username's.
MAX_ROOM_NAME_LENGTH = MAX_USERNAME_LENGTH
#: Characters of a room's topic (IRC networks allow 300 to 390 bytes).
MAX_TOPIC_LENGTH = 300


@dataclass(frozen=True)
class Rooms(Message):
    """Server, after Stamps and before the first UsernameRequest: this
    server has rooms besides the lobby. Client, in answer: I take part in
    them (send me the room messages)."""

    TYPE: ClassVar[int] = 0x64


@dataclass(frozen=True)
class RoomRequest(Message):
    """Client: a room command: ``command`` (``join``, ``part``, ``rooms``,
    ``topic``, ``who``, ``mode``, ``invite``), the ``room`` it is about
    (``#dev``; empty where the command takes none), and ``argument`` (the
    topic, the mode ``+i``/``-i``, the name invited, a parting line)."""

    TYPE: ClassVar[int] = 0x65
    command: str
    room: str
    argument: str


@dataclass(frozen=True)
class RoomLine(Message):
    """Client: a line (``kind`` ``chat``) or action (``action``) for the
    room ``room``, which the sender is in."""

    TYPE: ClassVar[int] = 0x66
    room: str
    kind: str
    text: str


@dataclass(frozen=True)
class RoomMessage(Message):
    """Server: a line or action said in ``room``, with its ID in the room's
    own order and the server's Unix time (as StampedLine)."""

    TYPE: ClassVar[int] = 0x67
    room: str
    id: str
    sent_at: int
    kind: str
    sender: str
    text: str


@dataclass(frozen=True)
class RoomNotice(Message):
    """Server: news of ``room`` for its members (someone joined, parted,
    was kicked, the topic changed): one line of text."""

    TYPE: ClassVar[int] = 0x68
    room: str
    text: str


@dataclass(frozen=True)
class Joined(Message):
    """Server: you are in ``room`` now (its name as the room holds it):
    its ``topic``, how many are in it, and up to ten of their names
    (LF-separated). Its history follows as RoomHistoryLines."""

    TYPE: ClassVar[int] = 0x69
    room: str
    topic: str
    count: int
    names: str


@dataclass(frozen=True)
class Parted(Message):
    """Server: you are no longer in ``room``: ``reason`` empty if you
    parted, else why (kicked, the room closed)."""

    TYPE: ClassVar[int] = 0x6A
    room: str
    reason: str


@dataclass(frozen=True)
class RoomList(Message):
    """Server: the answer to ``/rooms``: one ``NAME`` TAB ``COUNT`` TAB
    ``TOPIC`` line per room, sorted by name, LF-separated."""

    TYPE: ClassVar[int] = 0x6B
    entries: str

    @classmethod
    def of(cls, rooms: list[tuple[str, int, str]]) -> RoomList:
        return cls("\n".join(f"{name}\t{count}\t{topic}" for name, count, topic in rooms))

    def rooms(self) -> list[tuple[str, int, str]]:
        """(name, count, topic) of each room listed; a line that is not
        NAME TAB COUNT TAB TOPIC is skipped."""
        found = []
        for line in self.entries.split("\n") if self.entries else []:
            parts = line.split("\t", 2)
            if len(parts) == 3 and parts[1].isascii() and parts[1].isdigit():
                found.append((parts[0], int(parts[1]), parts[2]))
        return found


@dataclass(frozen=True)
class RoomMembers(Message):
    """Server: the answer to ``/who #room``: its members' names, sorted
    (case-folded), LF-separated."""

    TYPE: ClassVar[int] = 0x6C
    room: str
    names: str


@dataclass(frozen=True)
class RoomHistoryLine(Message):
    """Server: a line from ``room``'s history, after its Joined: the fields
    of RoomMessage."""

    TYPE: ClassVar[int] = 0x6D
    room: str
    id: str
    sent_at: int
    kind: str
    sender: str
    text: str


#: Every message class by its type byte.
MESSAGE_TYPES: Mapping[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        UsernameRequest,
        Username,
        Welcome,
        ChatLine,
        ChatMessage,
        UserJoined,
        UserLeft,
        Notice,
        ErrorNotice,
        Goodbye,
        RateLimit,
        PrivateLine,
        PrivateMessage,
        ActionLine,
        ActionMessage,
        NickRequest,
        NickChanged,
        UserListRequest,
        UserList,
        HistoryMessage,
        Motd,
        UserParted,
        UserKicked,
        Greeting,
        Away,
        Back,
        AwayReply,
        UsernameDeadline,
        EchoOwnLines,
        ProofRequest,
        KeyProof,
        WhoisRequest,
        WhoisReply,
        DeviceAdd,
        DeviceRemove,
        DeviceListRequest,
        DeviceList,
        SearchRequest,
        SearchResult,
        OfflineMessage,
        OperatorCommand,
        OperatorStatus,
        UserBanned,
        Stamps,
        StampedLine,
        HistoryRequest,
        HistoryLine,
        PageEnd,
        Unread,
        MentionsRequest,
        TicketRequest,
        NewTicket,
        MultilineOffer,
        Multiline,
        Rooms,
        RoomRequest,
        RoomLine,
        RoomMessage,
        RoomNotice,
        Joined,
        Parted,
        RoomList,
        RoomMembers,
        RoomHistoryLine,
    )
}
# Read each class's field specs now, so that a field of a type the wire
# cannot carry fails at import, not when a peer first sends that message.
for _message_class in MESSAGE_TYPES.values():
    field_specs(_message_class)
del _message_class

#: The messages a client may send; a server reports any other from a client
#: as a ``MalformedMessage``.
CLIENT_SENDS: frozenset[type[Message]] = frozenset(
    {
        Username,
        ChatLine,
        Goodbye,
        PrivateLine,
        ActionLine,
        NickRequest,
        UserListRequest,
        Away,
        Back,
        EchoOwnLines,
        KeyProof,
        WhoisRequest,
        DeviceAdd,
        DeviceRemove,
        DeviceListRequest,
        SearchRequest,
        OperatorCommand,
        Stamps,
        HistoryRequest,
        MentionsRequest,
        TicketRequest,
        Multiline,
        Rooms,
        RoomRequest,
        RoomLine,
    }
)
#: The messages a server may send: all but the client's own, and the four
#: both send (Goodbye, EchoOwnLines as its answer, Stamps and Rooms as offers).
SERVER_SENDS: frozenset[type[Message]] = frozenset(
    set(MESSAGE_TYPES.values()) - CLIENT_SENDS | {Goodbye, EchoOwnLines, Stamps, Rooms}
)
