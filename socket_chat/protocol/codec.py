"""Messages to bytes and back (PROTOCOL.md section 4), and the Batch.

A message is its type byte, then each field in order (``schema``): text as
a u16 length and UTF-8, bytes as a u16 length and the bytes, a number as a
u32. A Batch (type ``BATCH_TYPE``)
is one record carrying several encoded messages, each behind its u16
length; the sender cuts a run of messages into as few as fit in a frame.

Decoding never raises for what the peer put inside an authentic record:
whatever cannot be read comes back as a ``MalformedMessage``, since the
record did come from the peer and the application decides what to do.
Encoding raises ``LocalProtocolError`` for what cannot go on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from socket_chat.protocol.errors import LocalProtocolError, RemoteProtocolError
from socket_chat.protocol.events import MalformedMessage
from socket_chat.protocol.framing import MAX_PLAINTEXT
from socket_chat.protocol.messages import MESSAGE_TYPES, Message
from socket_chat.protocol.schema import FieldType, field_specs

__all__ = [
    "BATCH_TYPE",
    "FIELD_LENGTH",
    "Encoded",
    "encode",
    "encode_message",
    "decode_message",
    "encode_batch",
    "decode_record",
    "batch_groups",
    "Reader",
]

#: A text field's (and a batched message's) length prefix.
FIELD_LENGTH = struct.Struct("!H")
_INT_FIELD = struct.Struct("!I")
#: The type byte of a Batch: a record carrying several messages (PROTOCOL.md
#: section 4). Not a Message class: the receiver unpacks it into its messages.
BATCH_TYPE = 0x0F
#: Bytes a message takes inside a batch beyond its own: its u16 length.
_BATCH_ITEM_OVERHEAD = FIELD_LENGTH.size


class Reader:
    """Reads the fields of one message (or handshake message) in order, or
    says it is malformed.

    Every ``take`` raises ``RemoteProtocolError`` when the bytes run out,
    naming ``what`` was being read.
    """

    def __init__(self, body: bytes, what: str):
        self._body, self._offset, self._what = body, 0, what

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes."""
        if self._offset + size > len(self._body):
            raise RemoteProtocolError(f"{self._what} is truncated")
        chunk = self._body[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def take_byte(self) -> int:
        return self.take(1)[0]

    def take_int(self) -> int:
        """A u32."""
        (value,) = _INT_FIELD.unpack(self.take(_INT_FIELD.size))
        return value

    def take_sized(self) -> bytes:
        """A u16 length, then that many bytes."""
        (length,) = FIELD_LENGTH.unpack(self.take(FIELD_LENGTH.size))
        return self.take(length)

    def take_text(self) -> str:
        """A sized field as UTF-8; ``UnicodeDecodeError`` if it is not."""
        return self.take_sized().decode("utf-8")

    def at_end(self) -> bool:
        return self._offset == len(self._body)

    def finish(self) -> None:
        """Check that nothing is left."""
        if self._offset != len(self._body):
            raise RemoteProtocolError(f"{self._what} has trailing bytes")


def _text_field(name: str, value: str) -> bytes:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from undecodable input
        raise LocalProtocolError(f"{name} is not valid Unicode text") from None
    return _bytes_field(name, data)


def _bytes_field(name: str, data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise LocalProtocolError(f"{name} is too long to encode")
    return FIELD_LENGTH.pack(len(data)) + data


def _u32_field(name: str, value: int) -> bytes:
    return _INT_FIELD.pack(value)  # the message checked the range when it was made


#: How each wire type is written and read.
_WRITERS: dict[FieldType, Callable[[str, Any], bytes]] = {
    FieldType.TEXT: _text_field,
    FieldType.U32: _u32_field,
    FieldType.BYTES: _bytes_field,
}


def encode_message(message: Message) -> bytes:
    """A message's bytes: its type, then each field in order: text as u16
    length + UTF-8, bytes as u16 length + the bytes, a number as u32.

    Raises:
        LocalProtocolError: a field is longer than 65,535 bytes, or
            holds a lone surrogate, which has no UTF-8 form.
    """
    parts = [bytes([message.TYPE])]
    for spec in field_specs(type(message)):
        parts.append(_WRITERS[spec.type](spec.name, getattr(message, spec.name)))
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
    if len(payload) > MAX_PLAINTEXT:
        raise LocalProtocolError(f"{type(message).__name__} is too large for one frame")
    return Encoded(message, payload)


def decode_message(payload: bytes) -> Message | MalformedMessage:
    """Read bytes made by ``encode_message``; anything else is malformed."""
    if not payload:
        return MalformedMessage("empty message")
    cls = MESSAGE_TYPES.get(payload[0])
    if cls is None:
        return MalformedMessage(f"unknown message type {payload[0]}")
    try:
        values = _read_fields(payload, cls)
    except RemoteProtocolError as exc:  # the record was authentic: not fatal
        return MalformedMessage(str(exc))
    except UnicodeDecodeError:
        return MalformedMessage(f"{cls.__name__} has text that is not valid UTF-8")
    # What was read is of each field's type already (text, bytes, a u32),
    # which is all that Message.__post_init__ checks: the message is made
    # without running it again. Every client decodes every line it is sent.
    message = object.__new__(cls)
    message.__dict__.update(values)
    return message


def _read_fields(payload: bytes, cls: type[Message]) -> dict[str, object]:
    """``cls``'s fields from ``payload`` after its type byte, as ``Reader``
    would read them (the same errors), in one loop over the bytes."""
    offset, end, values = 1, len(payload), {}
    for spec in field_specs(cls):
        if spec.type is FieldType.U32:
            if offset + _INT_FIELD.size > end:
                raise RemoteProtocolError(f"{cls.__name__} is truncated")
            (values[spec.name],) = _INT_FIELD.unpack_from(payload, offset)
            offset += _INT_FIELD.size
            continue
        if offset + FIELD_LENGTH.size > end:
            raise RemoteProtocolError(f"{cls.__name__} is truncated")
        (length,) = FIELD_LENGTH.unpack_from(payload, offset)
        offset += FIELD_LENGTH.size
        if offset + length > end:
            raise RemoteProtocolError(f"{cls.__name__} is truncated")
        chunk = payload[offset : offset + length]
        offset += length
        values[spec.name] = chunk.decode("utf-8") if spec.type is FieldType.TEXT else chunk
    if offset != end:
        raise RemoteProtocolError(f"{cls.__name__} has trailing bytes")
    return values


def encode_batch(payloads: list[bytes]) -> bytes:
    """A Batch: the type byte, then each encoded message as u16 length + bytes."""
    parts = [bytes([BATCH_TYPE])]
    for payload in payloads:
        parts += [FIELD_LENGTH.pack(len(payload)), payload]
    return b"".join(parts)


def decode_record(plaintext: bytes) -> list[Message | MalformedMessage]:
    """The messages of one record's plaintext: one, or those of a Batch.

    A Batch that cannot be cut into messages is one ``MalformedMessage``; a
    message inside it that cannot be read (a nested Batch among them) is a
    ``MalformedMessage`` in its place, and the others are delivered.
    """
    if plaintext[:1] != bytes([BATCH_TYPE]):
        return [decode_message(plaintext)]
    reader = Reader(plaintext[1:], "Batch")
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


def batch_groups(payloads: list[bytes]) -> list[list[bytes]]:
    """Cut encoded messages, in order, into as few records as fit in a frame."""
    groups: list[list[bytes]] = []
    size = MAX_PLAINTEXT + 1  # forces a new group for the first message
    for payload in payloads:
        item = _BATCH_ITEM_OVERHEAD + len(payload)
        if size + item > MAX_PLAINTEXT:
            groups.append([])
            size = 1  # the Batch type byte
        groups[-1].append(payload)
        size += item
    return groups
