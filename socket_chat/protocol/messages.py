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
    "TicketRequest",
    "NewTicket",
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
        TicketRequest,
        NewTicket,
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
        TicketRequest,
    }
)
#: The messages a server may send: all but the client's own, and the two
#: both send (Goodbye, and EchoOwnLines as its answer).
SERVER_SENDS: frozenset[type[Message]] = frozenset(set(MESSAGE_TYPES.values()) - CLIENT_SENDS | {Goodbye, EchoOwnLines})
