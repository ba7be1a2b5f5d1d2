"""Frames and EOF (PROTOCOL.md section 1): the size limit is checked on the
header, a frame of the largest size is awaited, and EOF anywhere is a
close, clean only after a Goodbye."""

from __future__ import annotations

import struct

import pytest

from socket_chat.protocol import (
    MAX_FRAME_SIZE,
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    ConnectionState,
    Goodbye,
)
from tests.wire import (
    CLOSED,
    FEEDS,
    ConnectionPair,
    assert_failed,
    both_directions,
    drain,
    line,
    pair,  # noqa: F401  (the fixture: a pair with the handshake done)
)


def oversized_header() -> bytes:
    return struct.pack("!I", MAX_FRAME_SIZE + 1)


def fresh_or_open(identity_key, role: str, opened: bool):
    pair = ConnectionPair(identity_key)
    if opened:
        pair.handshake()
    return getattr(pair, role)


WHERE = pytest.mark.parametrize(
    "role, opened",
    [("client", False), ("server", False), ("client", True), ("server", True)],
    ids=["client-handshake", "server-handshake", "client-open", "server-open"],
)


@WHERE
def test_oversized_frame_refused_on_its_header(identity_key, role, opened):
    conn = fresh_or_open(identity_key, role, opened)
    header = oversized_header()
    conn.receive_data(header[:3])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(header[3:])  # no body at all
    assert_failed(conn)


@WHERE
def test_frame_of_max_size_is_awaited(identity_key, role, opened):
    conn = fresh_or_open(identity_key, role, opened)
    state = conn.state
    conn.receive_data(struct.pack("!I", MAX_FRAME_SIZE) + b"\x00" * 100)
    assert conn.next_event() is NEED_DATA
    assert conn.state is state


@WHERE
@pytest.mark.parametrize(
    "partial",
    [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x10", b"\x00\x00\x00\x10" + b"\x00" * 15],
    ids=["1-header-byte", "3-header-bytes", "header-only", "body-short-by-1"],
)
def test_eof_in_the_middle_of_a_frame_is_a_lost_connection(identity_key, role, opened, partial):
    # PROTOCOL.md section 1: like any close without a Goodbye, and nothing
    # of the unfinished frame is kept or delivered.
    conn = fresh_or_open(identity_key, role, opened)
    conn.receive_data(partial)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(clean=False)
    assert conn.state is CLOSED
    assert conn.buffered_bytes == 0
    assert conn.next_event() == ConnectionClosed(clean=False)


@WHERE
def test_eof_at_a_frame_boundary_is_an_unclean_close(identity_key, role, opened):
    conn = fresh_or_open(identity_key, role, opened)
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(clean=False)
    assert conn.state is CLOSED
    assert conn.next_event() == ConnectionClosed(clean=False)


@both_directions
@FEEDS
def test_eof_after_goodbye_is_a_clean_close(identity_key, client_sends, feed):
    pair = ConnectionPair(identity_key, feed)
    pair.handshake()
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(line(client_sends, "last words"))
    sender.send(Goodbye("bye"))
    assert pair.deliver(sender) == [line(client_sends, "last words"), Goodbye("bye")]
    receiver.receive_data(b"")
    assert drain(receiver) == [ConnectionClosed(clean=True)]
    assert receiver.state is CLOSED
    assert receiver.next_event() == ConnectionClosed(clean=True)


@both_directions
def test_eof_with_goodbye_in_the_same_read(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(Goodbye("bye"))
    receiver.receive_data(sender.data_to_send())
    receiver.receive_data(b"")
    assert drain(receiver) == [Goodbye("bye"), ConnectionClosed(clean=True)]


def test_receive_data_does_not_parse(identity_key):
    # Like h11: receive_data only buffers; errors surface from next_event.
    conn = ClientConnection()
    conn.receive_data(oversized_header())
    assert conn.state is ConnectionState.AWAIT_SERVER_HELLO
    assert_failed(conn)
