"""Frames (PROTOCOL.md section 1): a u32 length, then that many bytes.

Every message on the wire, from the server's hello to the last record, is
one frame. ``MAX_FRAME_SIZE`` caps the body, and the receive buffer checks
it on the header, before the body is buffered, so a peer cannot make us
hold more than that. A record's frame header is also its associated data
(``connection``), so the length is authenticated with the record.
"""

from __future__ import annotations

import struct

from socket_chat.crypto import TAG_SIZE
from socket_chat.protocol.errors import RemoteProtocolError

__all__ = ["MAX_FRAME_SIZE", "MAX_PLAINTEXT", "HEADER", "frame", "ReceiveBuffer"]

#: Largest frame body accepted or sent. Checked on the header, before the
#: body is buffered, so a peer cannot make us hold more than this.
MAX_FRAME_SIZE = 64 * 1024
#: The largest plaintext a record may carry.
MAX_PLAINTEXT = MAX_FRAME_SIZE - TAG_SIZE
#: The frame header: the body's length, big-endian.
HEADER = struct.Struct("!I")


def frame(body: bytes) -> bytes:
    """``body`` with its header before it."""
    return HEADER.pack(len(body)) + body


class ReceiveBuffer:
    """Bytes from the peer, cut into frames once they are complete.

    ``at_eof`` is set by the connection when the peer has closed; the
    buffer itself only holds bytes.
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self.at_eof = False

    def append(self, data: bytes) -> None:
        """Add bytes read from the peer."""
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop what is buffered (an unfinished frame, at EOF)."""
        self._data.clear()

    def body_starts_with(self, first: int) -> bool:
        """Whether the next frame's body has begun, with the byte ``first``
        (nothing is consumed: a look at what kind of frame is coming)."""
        return len(self._data) > HEADER.size and self._data[HEADER.size] == first

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """(header, body) of the next whole frame, or None if not all here.

        Raises:
            RemoteProtocolError: the header announces more than MAX_FRAME_SIZE.
        """
        if len(self._data) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._data)
        if length > MAX_FRAME_SIZE:
            raise RemoteProtocolError(f"frame of {length} bytes is over the {MAX_FRAME_SIZE}-byte limit")
        end = HEADER.size + length
        if len(self._data) < end:
            return None
        header, body = bytes(self._data[: HEADER.size]), bytes(self._data[HEADER.size : end])
        del self._data[:end]
        return header, body
