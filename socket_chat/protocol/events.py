"""What ``next_event()`` can return: the events of a connection.

Besides the application messages (``messages``), a connection reports the
steps of its life as frozen dataclasses named after what happened: the
server's hello or refusal, the end of the handshake, the close, and an
authentic record this version cannot read. ``NEED_DATA`` says that no whole
event is buffered yet (as in h11).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from socket_chat.protocol.messages import Message

__all__ = [
    "NEED_DATA",
    "NeedData",
    "ServerHello",
    "ResumptionOffered",
    "ServerRefused",
    "HandshakeComplete",
    "ConnectionClosed",
    "MalformedMessage",
    "Event",
]


class _NeedData(enum.Enum):
    # An enum of one, so that a type checker narrows ``event is NEED_DATA``.
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event()`` when no complete event is buffered yet.
NEED_DATA = _NeedData.NEED_DATA
#: The type of ``NEED_DATA``, for annotations: ``Event | NeedData``.
NeedData = Literal[_NeedData.NEED_DATA]


@dataclass(frozen=True)
class ServerHello:
    """The client received the server's identity. Decide whether to trust it.
    ``work``: the effort of the proof of work a busy server asks (0: none),
    which ``accept_server_key()`` solves before it answers."""

    version: int
    public_key: bytes  # DER SubjectPublicKeyInfo
    fingerprint: str
    work: int = 0


@dataclass(frozen=True)
class ServerRefused:
    """The server turned the connection away before the handshake (it is
    full, say). Not authenticated: see PROTOCOL.md section 2."""

    reason: str


@dataclass(frozen=True)
class ResumptionOffered:
    """Server: the client offers to resume with ``ticket`` instead of a key
    exchange. The caller opens the ticket (its keys, its used ids) and then
    calls ``resume(secret)`` or ``decline_resumption()``."""

    ticket: bytes = field(repr=False)


@dataclass(frozen=True)
class HandshakeComplete:
    """Keys are confirmed both ways; application messages may flow.
    ``resumed``: by a ticket, without the server's RSA key."""

    resumed: bool = False


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


#: What ``next_event`` returns, besides ``NEED_DATA``.
Event = (
    ServerHello | ServerRefused | ResumptionOffered | HandshakeComplete | ConnectionClosed | MalformedMessage | Message
)
