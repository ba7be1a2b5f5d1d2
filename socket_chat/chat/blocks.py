"""Multi-line messages (blocks): a chat line whose text holds LF between its
lines, sent and shown as one message (PROTOCOL.md, "Multi-line messages").

A block said in a room (a ``RoomLine`` of kind ``chat``) is one as in the
lobby, its ``RoomMessage`` and ``RoomHistoryLine`` cut the same way.

A client takes blocks by answering the server's ``MultilineOffer`` with
``Multiline``. Every other client gets a block as one message per line,
each with the block's sender (and ID, time and kind), so that it shows
``alice: line 1``, ``alice: line 2``... as if they had been sent one by
one: ``pieces`` makes that form. Flood control charges a block by its
lines (``cost``), so a block is no way around it.
"""

from __future__ import annotations

import dataclasses

from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    Encoded,
    HistoryLine,
    HistoryMessage,
    Message,
    RoomHistoryLine,
    RoomLine,
    RoomMessage,
    SearchResult,
    StampedLine,
    encode,
)

__all__ = [
    "DEFAULT_MAX_LINES",
    "line_count",
    "is_block",
    "is_block_sent",
    "pieces",
    "encoded_pieces",
    "cost",
    "too_many_lines",
]

#: Lines one message may hold (``--max-lines``): a screenful, as a paste of
#: code or a log excerpt takes; more is a file to share another way.
DEFAULT_MAX_LINES = 50

#: The server's messages that carry a chat line and may carry a block: the
#: live line, its stamped form, and the history's and search's forms of it,
#: and a room's line and its history's form (those with a ``kind``, only for
#: ``kind`` ``chat``).
_CARRIERS = (ChatMessage, StampedLine, HistoryMessage, HistoryLine, SearchResult, RoomMessage, RoomHistoryLine)


def line_count(text: str) -> int:
    """How many lines ``text`` holds: one, and one more for each LF."""
    return text.count("\n") + 1


def is_block(message: Message) -> bool:
    """Whether ``message`` carries a chat line of several lines."""
    if not isinstance(message, _CARRIERS) or "\n" not in message.text:
        return False
    return getattr(message, "kind", "chat") == "chat"


def pieces(message: Message) -> list[Message]:
    """A block as an older client gets it: one message of the same type
    per line, every other field the same (the ID too: the block has one
    place in the order); anything else as it is."""
    if not is_block(message):
        return [message]
    assert isinstance(message, _CARRIERS)
    return [dataclasses.replace(message, text=line) for line in message.text.split("\n")]


def encoded_pieces(item: Encoded) -> list[Encoded]:
    """``pieces`` of an encoded message, encoded (the item itself if it is
    no block)."""
    if not is_block(item.message):
        return [item]
    return [encode(piece) for piece in pieces(item.message)]


def is_block_sent(message: Message) -> bool:
    """Whether ``message`` from a client is a block: a chat line, in the
    lobby (``ChatLine``) or a room (``RoomLine`` of ``kind`` ``chat``),
    whose text holds LF. An action's LF is no line end (shown as U+FFFD)."""
    if isinstance(message, RoomLine) and message.kind != "chat":
        return False
    return isinstance(message, (ChatLine, RoomLine)) and "\n" in message.text


def cost(message: Message) -> int:
    """What flood control charges for ``message``: a chat line, the lobby's
    or a room's, one token a line (a block costs what its lines sent one by
    one would), any other request one."""
    if not is_block_sent(message):
        return 1
    assert isinstance(message, (ChatLine, RoomLine))
    return line_count(message.text)


def too_many_lines(text: str, max_lines: int) -> str | None:
    """The refusal of a block over ``max_lines`` lines, or None if it is
    within them."""
    lines = line_count(text)
    if lines <= max_lines:
        return None
    return f"The message was not sent: it has {lines} lines, and the limit is {max_lines}."
