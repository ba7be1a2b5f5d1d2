"""The chat protocol, sans I/O: bytes in, events out; messages in, bytes out.

No sockets, threads, prints or logging live here (the style of h11). The
caller owns the socket and drives a connection object:

    conn.receive_data(data)           # what recv() returned; b"" at EOF
    while (event := conn.next_event()) is not NEED_DATA:
        ...                           # react to the event
    sock.sendall(conn.data_to_send()) # whatever the connection wrote

and, once ``conn.state is ConnectionState.OPEN``:

    conn.send(ChatLine("hi"))
    sock.sendall(conn.data_to_send())

A server with several messages waiting for one client seals them together
(``conn.send_batch(messages)``): one record, one cipher setup. The receiver
gets the same events, one per message, as if they had come one by one.

PROTOCOL.md is the specification; this module follows its sections:
frames, the handshake, records, and application messages.
"""

from __future__ import annotations

import collections
import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal, TypeVar

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import (
    RANDOM_SIZE,
    SECRET_SIZE,
    TAG_SIZE,
    X25519_KEY_SIZE,
    CryptoError,
    EphemeralKey,
    RecordOpener,
    RecordSealer,
    SequenceExhaustedError,
)

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_FRAME_SIZE",
    "MAX_USERNAME_LENGTH",
    "NEED_DATA",
    "Event",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RecordLimitError",
    "MAX_RECORDS",
    "ConnectionState",
    "ServerHello",
    "ServerRefused",
    "HandshakeComplete",
    "ConnectionClosed",
    "MalformedMessage",
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
    "GREETING_NAMES",
    "Away",
    "Back",
    "AwayReply",
    "UsernameDeadline",
    "EchoOwnLines",
    "ClientConnection",
    "ServerConnection",
    "ServerIdentity",
    "BATCH_TYPE",
    "Encoded",
    "encode",
    "encode_message",
    "decode_message",
    "encode_batch",
    "decode_record",
    "refusal",
]

Rng = Callable[[int], bytes]

PROTOCOL_VERSION = 1
#: Largest frame body accepted or sent. Checked on the header, before the
#: body is buffered, so a peer cannot make us hold more than this.
MAX_FRAME_SIZE = 64 * 1024
MAX_USERNAME_LENGTH = 32
GREETING_NAMES = 10  # names a Greeting lists at most; it counts the rest
#: Records one direction may carry, its HI included (PROTOCOL.md section 3).
#: RFC 8446 section 5.5 allows AES-GCM 2**24.5 full-size TLS records under
#: one key; ours may be 4 times as large (64 KiB), and 2**24 of them keep
#: about the margin TLS keeps (an attacker's advantage near 2**-57). The last
#: is kept for a Goodbye, so that a side at the limit can say why it ends.
MAX_RECORDS = 2**24

_HEADER = struct.Struct("!I")
_FIELD_LENGTH = struct.Struct("!H")
_INT_FIELD = struct.Struct("!I")
_SERVER_HELLO = 0x01
_KEY_EXCHANGE = 0x02
_REFUSAL = 0x03
_SERVER_CONFIRM = b"HI"
_CLIENT_CONFIRM = b"HI"
_SERVER_FINISHED = b"OK"
#: The type byte of a Batch: a record carrying several messages (PROTOCOL.md
#: section 4). Not a Message class: the receiver unpacks it into its messages.
BATCH_TYPE = 0x0F
#: Bytes a message takes inside a batch beyond its own: its u16 length.
_BATCH_ITEM_OVERHEAD = _FIELD_LENGTH.size
#: The largest plaintext a record may carry.
_MAX_PLAINTEXT = MAX_FRAME_SIZE - TAG_SIZE


# --- errors ------------------------------------------------------------------


class ProtocolError(Exception):
    """Base class: the protocol cannot go on as asked. Abstract, as in h11:
    what is raised is always a ``LocalProtocolError`` or a
    ``RemoteProtocolError``, which say whose fault it was."""

    def __init__(self, *args: object) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError")
        super().__init__(*args)


class LocalProtocolError(ProtocolError):
    """This side misused the API (for example sent before the handshake).

    The connection's state is left as it was.
    """


class RecordLimitError(LocalProtocolError):
    """This side has sealed as many records as its direction may carry
    (``MAX_RECORDS``, PROTOCOL.md section 3) but the last: nothing more can
    be sent but a Goodbye, which should say why, and the caller must then
    close the connection (the person may reconnect, with new keys).

    The state is left as it was (receiving still works), and every later
    ``send`` raises again.
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: a bad frame, a forged or replayed record,
    a handshake that does not check out. The connection is in ``ERROR``."""


# --- states ------------------------------------------------------------------


class ConnectionState(enum.Enum):
    #: Client: waiting for the server's hello.
    AWAIT_SERVER_HELLO = enum.auto()
    #: Client: the server's key is known; the caller must call
    #: ``accept_server_key()`` if it trusts it, or close.
    AWAIT_TRUST = enum.auto()
    #: Client: key exchange sent; waiting for the server's encrypted HI.
    AWAIT_SERVER_HI = enum.auto()
    #: Client: HI sent back; waiting for the server's encrypted OK.
    AWAIT_SERVER_OK = enum.auto()
    #: Server: hello sent; waiting for the client's key exchange.
    AWAIT_KEY_EXCHANGE = enum.auto()
    #: Server: HI sent; waiting for the client's encrypted HI.
    AWAIT_CLIENT_HI = enum.auto()
    #: Handshake done: application messages flow both ways.
    OPEN = enum.auto()
    #: The peer closed the connection (EOF at a frame boundary).
    CLOSED = enum.auto()
    #: The peer broke the protocol; nothing more can be done.
    ERROR = enum.auto()


_S = ConnectionState
#: Every legal handshake step: (state, what happened) -> next state. A step
#: missing here is a bug in this module, not something a peer can cause.
_TRANSITIONS = {
    (_S.AWAIT_SERVER_HELLO, "receive hello"): _S.AWAIT_TRUST,
    (_S.AWAIT_SERVER_HELLO, "receive refusal"): _S.CLOSED,
    (_S.AWAIT_TRUST, "send key exchange"): _S.AWAIT_SERVER_HI,
    (_S.AWAIT_SERVER_HI, "receive HI, send HI"): _S.AWAIT_SERVER_OK,
    (_S.AWAIT_SERVER_OK, "receive OK"): _S.OPEN,
    (_S.AWAIT_KEY_EXCHANGE, "receive key exchange, send HI"): _S.AWAIT_CLIENT_HI,
    (_S.AWAIT_CLIENT_HI, "receive HI, send OK"): _S.OPEN,
}


# --- events ------------------------------------------------------------------


class _NeedData(enum.Enum):
    # An enum of one, so that a type checker narrows ``event is NEED_DATA``.
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event()`` when no complete event is buffered yet.
NEED_DATA = _NeedData.NEED_DATA


@dataclass(frozen=True)
class ServerHello:
    """The client received the server's identity. Decide whether to trust it."""

    version: int
    public_key: bytes  # DER SubjectPublicKeyInfo
    fingerprint: str


@dataclass(frozen=True)
class ServerRefused:
    """The server turned the connection away before the handshake (it is
    full, say). Not authenticated: see PROTOCOL.md section 2."""

    reason: str


@dataclass(frozen=True)
class HandshakeComplete:
    """Keys are confirmed both ways; application messages may flow."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection. ``clean`` if it said Goodbye first."""

    clean: bool


@dataclass(frozen=True)
class MalformedMessage:
    """An authentic record whose content this version cannot read.

    The record did come from the peer, so this is not a reason to drop the
    connection; the application decides (the server answers with an error).
    """

    reason: str


# --- application messages ----------------------------------------------------


@dataclass(frozen=True)
class Message:
    """Base of the typed application messages. Every field is a ``str``
    (UTF-8 on the wire) or an ``int`` (u32 on the wire)."""

    TYPE: ClassVar[int]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if type(value) is not int or not 0 <= value <= 0xFFFFFFFF:
                    raise TypeError(f"{type(self).__name__}.{f.name} must be an int from 0 to 2**32-1")
            elif not isinstance(value, str):
                raise TypeError(f"{type(self).__name__}.{f.name} must be str")


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
    newline, since they are printable, and away messages neither."""

    TYPE: ClassVar[int] = 0x17
    entries: str

    @classmethod
    def of(cls, members: list[tuple[str, int]], away: Mapping[str, str] | None = None) -> UserList:
        """Build the message from (name, seconds online) pairs, and the away
        messages of those who are away (by name, as in ``members``)."""
        away = away or {}
        return cls("\n".join(_user_list_entry(name, seconds, away.get(name)) for name, seconds in members))

    def members(self) -> list[tuple[str, int]]:
        """The (name, seconds online) pairs; lines that do not parse are skipped."""
        return [(name, seconds) for name, seconds, _ in self._entries()]

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


#: What ``next_event`` returns, besides ``NEED_DATA``.
Event = ServerHello | ServerRefused | HandshakeComplete | ConnectionClosed | MalformedMessage | Message

_MESSAGE_TYPES: dict[int, type[Message]] = {
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
    )
}
_CLIENT_SENDS = frozenset(
    {Username, ChatLine, Goodbye, PrivateLine, ActionLine, NickRequest, UserListRequest, Away, Back, EchoOwnLines}
)
_SERVER_SENDS = frozenset(set(_MESSAGE_TYPES.values()) - _CLIENT_SENDS | {Goodbye, EchoOwnLines})


def encode_message(message: Message) -> bytes:
    """A message's bytes: its type, then each field in order: text as u16
    length + UTF-8, a number as u32.

    Raises:
        LocalProtocolError: a field is longer than 65,535 bytes of UTF-8, or
            holds a lone surrogate, which has no UTF-8 form.
    """
    parts = [bytes([message.TYPE])]
    for f in fields(message):
        value = getattr(message, f.name)
        if f.type == "int":
            parts.append(_INT_FIELD.pack(value))
            continue
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. from undecodable input
            raise LocalProtocolError(f"{f.name} is not valid Unicode text") from None
        if len(data) > 0xFFFF:
            raise LocalProtocolError(f"{f.name} is too long to encode")
        parts += [_FIELD_LENGTH.pack(len(data)), data]
    return b"".join(parts)


@dataclass(frozen=True)
class Encoded:
    """A message with its bytes, worked out once: a message broadcast to a
    room is encoded by the room, not once for each reader, and the bytes
    travel with it through the send queue to the writer that seals them.
    Made by ``encode``, which checks it fits in a record."""

    message: Message
    payload: bytes = field(repr=False)


def encode(message: Message) -> Encoded:
    """``message`` with its bytes, ready for ``send_batch``.

    Raises:
        LocalProtocolError: as ``encode_message``, or too large for one frame.
    """
    payload = encode_message(message)
    if len(payload) > _MAX_PLAINTEXT:
        raise LocalProtocolError(f"{type(message).__name__} is too large for one frame")
    return Encoded(message, payload)


def decode_message(payload: bytes) -> Message | MalformedMessage:
    """Read bytes made by ``encode_message``; anything else is malformed."""
    if not payload:
        return MalformedMessage("empty message")
    cls = _MESSAGE_TYPES.get(payload[0])
    if cls is None:
        return MalformedMessage(f"unknown message type {payload[0]}")
    reader = _Reader(payload[1:], cls.__name__)
    try:
        values = [reader.take_int() if f.type == "int" else reader.take_sized().decode("utf-8") for f in fields(cls)]
        reader.finish()
    except RemoteProtocolError as exc:  # the record was authentic: not fatal
        return MalformedMessage(str(exc))
    except UnicodeDecodeError:
        return MalformedMessage(f"{cls.__name__} has text that is not valid UTF-8")
    return cls(*values)


def encode_batch(payloads: list[bytes]) -> bytes:
    """A Batch: the type byte, then each encoded message as u16 length + bytes."""
    parts = [bytes([BATCH_TYPE])]
    for payload in payloads:
        parts += [_FIELD_LENGTH.pack(len(payload)), payload]
    return b"".join(parts)


def decode_record(plaintext: bytes) -> list[Message | MalformedMessage]:
    """The messages of one record's plaintext: one, or those of a Batch.

    A Batch that cannot be cut into messages is one ``MalformedMessage``; a
    message inside it that cannot be read (a nested Batch among them) is a
    ``MalformedMessage`` in its place, and the others are delivered.
    """
    if plaintext[:1] != bytes([BATCH_TYPE]):
        return [decode_message(plaintext)]
    reader = _Reader(plaintext[1:], "Batch")
    payloads = []
    try:
        while not reader.at_end():
            payloads.append(reader.take_sized())
    except RemoteProtocolError as exc:  # the record was authentic: not fatal
        return [MalformedMessage(str(exc))]
    if not payloads:
        return [MalformedMessage("empty Batch")]
    return [
        MalformedMessage("Batch inside a Batch") if p[:1] == bytes([BATCH_TYPE]) else decode_message(p)
        for p in payloads
    ]


def _batch_groups(payloads: list[bytes]) -> list[list[bytes]]:
    """Cut encoded messages, in order, into as few records as fit in a frame."""
    groups: list[list[bytes]] = []
    size = _MAX_PLAINTEXT + 1  # forces a new group for the first message
    for payload in payloads:
        item = _BATCH_ITEM_OVERHEAD + len(payload)
        if size + item > _MAX_PLAINTEXT:
            groups.append([])
            size = 1  # the Batch type byte
        groups[-1].append(payload)
        size += item
    return groups


# --- framing -----------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


class _ReceiveBuffer:
    """Bytes from the peer, cut into frames once they are complete."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.at_eof = False

    def append(self, data: bytes) -> None:
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop what is buffered (an unfinished frame, at EOF)."""
        self._data.clear()

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """(header, body) of the next whole frame, or None if not all here.

        Raises:
            RemoteProtocolError: the header announces more than MAX_FRAME_SIZE.
        """
        if len(self._data) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._data)
        if length > MAX_FRAME_SIZE:
            raise RemoteProtocolError(f"frame of {length} bytes is over the {MAX_FRAME_SIZE}-byte limit")
        end = _HEADER.size + length
        if len(self._data) < end:
            return None
        header, body = bytes(self._data[: _HEADER.size]), bytes(self._data[_HEADER.size : end])
        del self._data[:end]
        return header, body


class _Reader:
    """Reads the fields of one message in order, or says it is malformed."""

    def __init__(self, body: bytes, what: str):
        self._body, self._offset, self._what = body, 0, what

    def take(self, size: int) -> bytes:
        if self._offset + size > len(self._body):
            raise RemoteProtocolError(f"{self._what} is truncated")
        chunk = self._body[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def take_byte(self) -> int:
        return self.take(1)[0]

    def take_int(self) -> int:
        (value,) = _INT_FIELD.unpack(self.take(_INT_FIELD.size))
        return value

    def take_sized(self) -> bytes:
        (length,) = _FIELD_LENGTH.unpack(self.take(_FIELD_LENGTH.size))
        return self.take(length)

    def at_end(self) -> bool:
        return self._offset == len(self._body)

    def finish(self) -> None:
        if self._offset != len(self._body):
            raise RemoteProtocolError(f"{self._what} has trailing bytes")


# --- connections -------------------------------------------------------------

_T = TypeVar("_T")


def _set(value: _T | None, what: str) -> _T:
    """``value``, which the state machine guarantees is set by now: keys
    once installed, an ephemeral key until used. None is a bug here."""
    assert value is not None, f"{what} is not set in this state"
    return value


class _Connection:
    """What both ends share: frames, records, messages, and the state.

    Two threads may drive one connection once it is OPEN, and only then:
    one receiving (``receive_data``, ``next_event``) and one sending
    (``send``, ``send_batch``, ``data_to_send``); the sending half must be
    driven by one thread at a time (the server's one sender thread drives
    the sending halves of all its connections). The two halves share no
    buffer and no cipher: the receiving half owns the receive buffer, the
    opener and the pending events; the sending half owns the outbox and the
    sealer. The only state both touch is ``state``, which the receiving half
    alone changes after the handshake (to CLOSED or ERROR), with a single
    assignment that the sending half merely reads. During the handshake,
    receiving writes answers to the outbox, so one thread must do both until
    ``HandshakeComplete`` and its ``data_to_send()`` are done.
    """

    _may_send: ClassVar[frozenset[type[Message]]]
    _may_receive: ClassVar[frozenset[type[Message]]]

    def __init__(self, state: ConnectionState, rng: Rng | None):
        self._rng = rng or crypto_utils.random_bytes
        self._state = state
        self._buffer = _ReceiveBuffer()
        self._outbox = bytearray()
        self._events: collections.deque[Message | MalformedMessage] = collections.deque()  # the rest of a Batch
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._received_goodbye = False
        self._sent_goodbye = False

    @property
    def state(self) -> ConnectionState:
        """Where the connection is; changed only by the methods below."""
        return self._state

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of an event. After ``next_event()``
        returned ``NEED_DATA``, more than zero means a frame has begun but not
        ended: a server can put a deadline on it (against slowloris)."""
        return len(self._buffer)

    # Methods for the caller.

    def receive_data(self, data: bytes) -> None:
        """Hand over bytes read from the peer; ``b""`` means EOF.

        Raises:
            LocalProtocolError: data after EOF was already reported.
        """
        if self._buffer.at_eof:
            raise LocalProtocolError("data received after EOF")
        if data:
            self._buffer.append(data)
        else:
            self._buffer.at_eof = True

    def next_event(self) -> Event | Literal[_NeedData.NEED_DATA]:
        """The next event, or ``NEED_DATA`` if more bytes are needed.

        Handshake steps that need an answer write it to ``data_to_send()``
        by themselves; check that after every call.

        EOF gives ``ConnectionClosed`` (``clean`` if a Goodbye came first),
        at a frame boundary or not: an unfinished frame is dropped unread.
        Once CLOSED, every call returns ``ConnectionClosed`` again.

        Raises:
            RemoteProtocolError: the peer broke the protocol (an oversized
                frame, a record that fails authentication, a handshake that
                does not check out, a frame after a Goodbye, more records
                than a direction may carry); the state becomes ``ERROR``
                and every later call raises again.
        """
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("the connection already failed")
        if self._state is ConnectionState.CLOSED:
            return ConnectionClosed(clean=self._received_goodbye)
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._state = ConnectionState.ERROR
            raise

    def send(self, message: Message) -> None:
        """Seal an application message; its bytes go to ``data_to_send()``.

        Raises:
            LocalProtocolError: not OPEN yet (or any more), after a Goodbye,
                a message this role may not send, one too large for a frame,
                or text that cannot be encoded (see ``encode_message``). The
                state does not change.
            RecordLimitError: this direction has no record left but the one
                kept for a Goodbye (a LocalProtocolError: the state does not
                change).
        """
        self._send_encoded([encode(message)])

    def send_batch(self, items: Sequence[Encoded]) -> None:
        """Seal several encoded messages, in order, in as few records as fit
        in a frame (a Batch; one message alone is sent as by ``send``). The
        peer reads the same messages in the same order; the cipher setup,
        which costs more than sealing a short message, is paid once per
        record.

        Raises:
            LocalProtocolError: as ``send``, for any of the messages, a
                Goodbye that is not the last, or a client calling it. Nothing
                is sent then, and the state does not change.
            RecordLimitError: the records these messages need are more than
                this direction has sequence numbers left for. Nothing is
                sent, and the state does not change.
        """
        if not self._may_send_batch:
            raise LocalProtocolError(f"a {self._role} may not send a Batch")
        self._send_encoded(items)

    def data_to_send(self) -> bytes:
        """Everything written since the last call, ready for ``sendall``."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    # Internals.

    _role = "peer"
    _may_send_batch = False
    _may_receive_batch = False

    def _send_encoded(self, items: Sequence[Encoded]) -> None:
        if any(isinstance(item.message, Goodbye) for item in items[:-1]):
            raise LocalProtocolError("Goodbye must be the last message")
        for item in items:
            self._check_sendable(item.message)
        goodbye = bool(items) and isinstance(items[-1].message, Goodbye)
        self._send_records([item.payload for item in items], ends_with_goodbye=goodbye)
        self._sent_goodbye = goodbye

    def _check_sendable(self, message: Message) -> None:
        """LocalProtocolError unless ``message`` may be sent now."""
        if self._state is not ConnectionState.OPEN or self._sent_goodbye:
            raise LocalProtocolError(f"can't send {type(message).__name__} in state {self._state.name}")
        if type(message) not in self._may_send:
            raise LocalProtocolError(f"a {self._role} may not send {type(message).__name__}")

    def _send_records(self, payloads: list[bytes], ends_with_goodbye: bool = False) -> None:
        groups = _batch_groups(payloads)
        # Checked before sealing any, so that a batch is sent whole or not at
        # all. The last record is a Goodbye's only.
        limit = MAX_RECORDS if ends_with_goodbye else MAX_RECORDS - 1
        if _set(self._sealer, "the sealer").sequence + len(groups) > limit:
            raise RecordLimitError(
                "this direction has carried the records its keys may protect: the connection must end"
            )
        for group in groups:
            self._send_record(group[0] if len(group) == 1 else encode_batch(group))

    def _next_event(self) -> Event | Literal[_NeedData.NEED_DATA]:
        if self._events:
            return self._events.popleft()
        while True:
            frame = self._buffer.next_frame()
            if frame is None:
                return self._end_of_data()
            event = self._handle_frame(*frame)
            if event is not None:
                return event

    def _end_of_data(self) -> ConnectionClosed | Literal[_NeedData.NEED_DATA]:
        if not self._buffer.at_eof:
            return NEED_DATA
        # A close in the middle of a frame is a lost connection, like any
        # close without a Goodbye (PROTOCOL.md section 1), not a sign of an
        # attack: a server cutting off a client that does not read closes
        # wherever its writer was. Nothing of the unfinished frame was
        # authenticated, so nothing of it is delivered.
        self._buffer.clear()
        self._state = ConnectionState.CLOSED
        return ConnectionClosed(clean=self._received_goodbye)

    def _handle_frame(self, header: bytes, body: bytes) -> Event | None:
        raise NotImplementedError

    def _advance(self, step: str) -> None:
        self._state = _TRANSITIONS[(self._state, step)]

    def _send_frame(self, body: bytes) -> None:
        self._outbox += _frame(body)

    def _send_record(self, plaintext: bytes) -> None:
        # The header is the record's associated data, so its length is
        # authenticated too.
        header = _HEADER.pack(len(plaintext) + TAG_SIZE)
        self._outbox += header + _set(self._sealer, "the sealer").seal(plaintext, aad=header)

    def _open_record(self, header: bytes, body: bytes) -> bytes:
        opener = _set(self._opener, "the opener")
        if opener.sequence >= MAX_RECORDS:
            raise RemoteProtocolError("the peer sent more records than a direction may carry (2**24)")
        try:
            return opener.open(body, aad=header)
        except SequenceExhaustedError:
            raise RemoteProtocolError("the peer sent more records than a direction may carry (2**24)") from None
        except CryptoError:
            raise RemoteProtocolError("record failed authentication") from None

    def _expect_record(self, header: bytes, body: bytes, expected: bytes) -> None:
        if self._open_record(header, body) != expected:
            raise RemoteProtocolError("key confirmation failed")

    def _install_keys(self, keys: crypto_utils.SessionKeys, *, is_client: bool) -> None:
        c2s = (keys.client_to_server_key, keys.client_to_server_iv)
        s2c = (keys.server_to_client_key, keys.server_to_client_iv)
        self._sealer = RecordSealer(*(c2s if is_client else s2c))
        self._opener = RecordOpener(*(s2c if is_client else c2s))

    def _receive_message(self, header: bytes, body: bytes) -> Message | MalformedMessage:
        if self._received_goodbye:
            raise RemoteProtocolError("data after Goodbye")
        plaintext = self._open_record(header, body)
        if plaintext[:1] == bytes([BATCH_TYPE]) and not self._may_receive_batch:
            return MalformedMessage(f"a {self._role} does not receive a Batch")
        events = [self._check_role(event) for event in decode_record(plaintext)]
        if any(isinstance(event, Goodbye) for event in events[:-1]):
            raise RemoteProtocolError("data after Goodbye")
        self._received_goodbye = isinstance(events[-1], Goodbye)
        self._events.extend(events[1:])
        return events[0]

    def _check_role(self, event: Message | MalformedMessage) -> Message | MalformedMessage:
        if isinstance(event, Message) and type(event) not in self._may_receive:
            # The peer may only send what its own role sends.
            return MalformedMessage(f"a {self._role} does not receive {type(event).__name__}")
        return event

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self._state.name}>"


def _check_version(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported protocol version {version}")


class ClientConnection(_Connection):
    """The client's side of one connection.

    Args:
        rng: source of random bytes (default: the OS's).
        ephemeral_key: the X25519 key to use; tests pin it, others omit it.
    """

    _may_send, _may_receive = _CLIENT_SENDS, _SERVER_SENDS
    _role = "client"
    _may_receive_batch = True

    def __init__(self, rng: Rng | None = None, ephemeral_key: EphemeralKey | None = None):
        super().__init__(ConnectionState.AWAIT_SERVER_HELLO, rng)
        self._ephemeral: EphemeralKey | None = ephemeral_key or EphemeralKey.generate(self._rng)
        self._hello = b""  # the server's hello, for the transcript
        self._server_key: crypto_utils.RSA.RsaKey | None = None
        self._client_share = self._x25519_secret = b""

    def accept_server_key(self) -> None:
        """Trust the server key from ``ServerHello`` and answer with the key
        exchange. Call it only once the key is checked (known hosts or pin).

        Raises:
            LocalProtocolError: not in ``AWAIT_TRUST``; state unchanged.
        """
        if self._state is not ConnectionState.AWAIT_TRUST:
            raise LocalProtocolError(f"can't accept a server key in state {self._state.name}")
        secret, client_random = self._rng(SECRET_SIZE), self._rng(RANDOM_SIZE)
        assert self._server_key is not None  # read with the hello, which AWAIT_TRUST follows
        wrapped = crypto_utils.wrap_key(self._server_key, secret, rng=self._rng)
        key_exchange = (
            bytes([_KEY_EXCHANGE, PROTOCOL_VERSION])
            + client_random
            + self._client_share
            + _FIELD_LENGTH.pack(len(wrapped))
            + wrapped
        )
        transcript = crypto_utils.transcript_hash(self._hello, key_exchange)
        keys = crypto_utils.derive_session_keys(secret, self._x25519_secret, transcript)
        self._x25519_secret = b""
        self._install_keys(keys, is_client=True)
        self._send_frame(key_exchange)
        self._advance("send key exchange")

    def _handle_frame(self, header: bytes, body: bytes) -> Event | None:
        state = self._state
        if state is ConnectionState.AWAIT_SERVER_HELLO:
            if body[:1] == bytes([_REFUSAL]):
                return self._receive_refusal(body)
            return self._receive_hello(body)
        if state is ConnectionState.AWAIT_SERVER_HI:
            self._expect_record(header, body, _SERVER_CONFIRM)
            self._send_record(_CLIENT_CONFIRM)
            self._advance("receive HI, send HI")
            return None
        if state is ConnectionState.AWAIT_SERVER_OK:
            self._expect_record(header, body, _SERVER_FINISHED)
            self._advance("receive OK")
            return HandshakeComplete()
        if state is ConnectionState.OPEN:
            return self._receive_message(header, body)
        raise RemoteProtocolError(f"unexpected data in state {state.name}")

    def _receive_refusal(self, body: bytes) -> ServerRefused:
        reader = _Reader(body, "server refusal")
        reader.take_byte()
        _check_version(reader.take_byte())
        try:
            reason = reader.take_sized().decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("server refusal is not valid UTF-8") from None
        reader.finish()
        self._advance("receive refusal")
        return ServerRefused(reason)

    def _receive_hello(self, body: bytes) -> ServerHello:
        reader = _Reader(body, "server hello")
        if reader.take_byte() != _SERVER_HELLO:
            raise RemoteProtocolError("expected the server hello")
        version = reader.take_byte()
        _check_version(version)
        reader.take(RANDOM_SIZE)  # server random: bound in through the transcript
        server_share = reader.take(X25519_KEY_SIZE)
        public_der = reader.take_sized()
        reader.finish()
        try:
            ephemeral = _set(self._ephemeral, "the ephemeral key")
            self._server_key = crypto_utils.import_public_key(public_der)
            self._x25519_secret = ephemeral.agree(server_share)
        except CryptoError as exc:  # KeyFormatError, KeyAgreementError
            raise RemoteProtocolError(f"bad server hello: {exc}") from None
        self._client_share = ephemeral.public_bytes
        self._ephemeral = None  # forward secrecy: forget it as soon as used
        self._hello = body
        self._advance("receive hello")
        return ServerHello(version, public_der, crypto_utils.fingerprint(public_der))


@dataclass(frozen=True)
class ServerIdentity:
    """The server's long-term key and what it shows of it, worked out once
    for every connection: the DER public key its hello carries (encoding
    it costs more than half a millisecond) and that key's fingerprint.
    The repr names the fingerprint only, never the key."""

    key: crypto_utils.RSA.RsaKey = field(repr=False)
    public_der: bytes = field(repr=False)
    fingerprint: str

    @classmethod
    def of(cls, key: crypto_utils.RSA.RsaKey) -> ServerIdentity:
        """The identity of an RSA private key."""
        der = crypto_utils.export_public_key(key)
        return cls(key, der, crypto_utils.fingerprint(der))


def refusal(reason: str) -> bytes:
    """The frame a server sends instead of its hello to turn a connection
    away (when it is full, for example), before any key is spent on it.

    Raises:
        LocalProtocolError: the reason does not fit in a field.
    """
    data = reason.encode("utf-8")
    if len(data) > 0xFFFF:
        raise LocalProtocolError("reason is too long to encode")
    return _frame(bytes([_REFUSAL, PROTOCOL_VERSION]) + _FIELD_LENGTH.pack(len(data)) + data)


def may_be_server_greeting(data: bytes) -> bool:
    """Whether ``data``, the first bytes a server sent, could begin a server
    hello or refusal of some version of this protocol: a frame header within
    the limit, then the hello's or the refusal's type byte. False means the
    peer is some other program (a web or mail server, say), which a client
    can tell the person at once."""
    if len(data) < _HEADER.size:
        return False
    (length,) = _HEADER.unpack_from(data)
    if not 0 < length <= MAX_FRAME_SIZE:
        return False
    return len(data) == _HEADER.size or data[_HEADER.size] in (_SERVER_HELLO, _REFUSAL)


class ServerConnection(_Connection):
    """The server's side of one connection. Its hello is ready at once in
    ``data_to_send()``.

    Args:
        identity: the server's long-term key (``ServerIdentity.of(key)``,
            made once for all connections).
        rng: source of random bytes (default: the OS's).
        ephemeral_key: the X25519 key to use; tests pin it, others omit it.
    """

    _may_send, _may_receive = _SERVER_SENDS, _CLIENT_SENDS
    _role = "server"
    _may_send_batch = True

    def __init__(self, identity: ServerIdentity, rng: Rng | None = None, ephemeral_key: EphemeralKey | None = None):
        super().__init__(ConnectionState.AWAIT_KEY_EXCHANGE, rng)
        self._identity_key = identity.key
        self._ephemeral: EphemeralKey | None = ephemeral_key or EphemeralKey.generate(self._rng)
        public_der = identity.public_der
        self._hello = (
            bytes([_SERVER_HELLO, PROTOCOL_VERSION])
            + self._rng(RANDOM_SIZE)
            + self._ephemeral.public_bytes
            + _FIELD_LENGTH.pack(len(public_der))
            + public_der
        )
        self._send_frame(self._hello)

    def _handle_frame(self, header: bytes, body: bytes) -> Event | None:
        state = self._state
        if state is ConnectionState.AWAIT_KEY_EXCHANGE:
            self._receive_key_exchange(body)
            self._send_record(_SERVER_CONFIRM)
            self._advance("receive key exchange, send HI")
            return None
        if state is ConnectionState.AWAIT_CLIENT_HI:
            self._expect_record(header, body, _CLIENT_CONFIRM)
            self._send_record(_SERVER_FINISHED)
            self._advance("receive HI, send OK")
            return HandshakeComplete()
        if state is ConnectionState.OPEN:
            return self._receive_message(header, body)
        raise RemoteProtocolError(f"unexpected data in state {state.name}")

    def _receive_key_exchange(self, body: bytes) -> None:
        reader = _Reader(body, "key exchange")
        if reader.take_byte() != _KEY_EXCHANGE:
            raise RemoteProtocolError("expected the key exchange")
        _check_version(reader.take_byte())
        reader.take(RANDOM_SIZE)  # client random: bound in through the transcript
        client_share = reader.take(X25519_KEY_SIZE)
        wrapped = reader.take_sized()
        reader.finish()
        try:
            shared = _set(self._ephemeral, "the ephemeral key").agree(client_share)
        except CryptoError as exc:
            raise RemoteProtocolError(f"bad key exchange: {exc}") from None
        self._ephemeral = None  # forward secrecy: forget it as soon as used
        secret = self._unwrap_secret(wrapped)
        transcript = crypto_utils.transcript_hash(self._hello, body)
        self._install_keys(crypto_utils.derive_session_keys(secret, shared, transcript), is_client=False)

    def _unwrap_secret(self, wrapped: bytes) -> bytes:
        # A bad wrapping is not reported here: like TLS with RSA key transport
        # (RFC 5246 section 7.4.7.1), go on with a random secret, so the peer
        # learns only that key confirmation failed, never why (no padding oracle).
        try:
            secret = crypto_utils.unwrap_key(self._identity_key, wrapped)
        except CryptoError:
            secret = b""
        return secret if len(secret) == SECRET_SIZE else self._rng(SECRET_SIZE)
