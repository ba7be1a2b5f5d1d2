"""The connection objects once open: every message of each role arrives as
sent, in both directions, and what may not be sent (the other role's
messages, messages too large for a frame, text with no UTF-8 form) is
refused without a byte on the wire."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE
from socket_chat.protocol import (
    MAX_FRAME_SIZE,
    ChatMessage,
    ConnectionState,
    LocalProtocolError,
    MalformedMessage,
    Message,
)
from socket_chat.protocol.schema import FieldType, field_specs
from tests.wire import (
    CLIENT_MESSAGES,
    CLIENT_ONLY,
    FEEDS,
    HEADER_SIZE,
    OPEN,
    SERVER_MESSAGES,
    SERVER_ONLY,
    ConnectionPair,
    both_directions,
    line,
    pair,  # noqa: F401  (the fixture: a pair with the handshake done)
    split_frames,
)


@both_directions
@FEEDS
def test_every_message_of_a_role_arrives_equal(identity_key, client_sends, feed):
    pair = ConnectionPair(identity_key, feed)
    pair.handshake()
    sender, receiver = pair.sender_receiver(client_sends)
    messages = CLIENT_MESSAGES if client_sends else SERVER_MESSAGES
    for message in messages:
        sender.send(message)
    assert pair.deliver(sender) == messages
    assert receiver.state is OPEN


def test_message_lists_cover_every_message_type():
    assert {type(m) for m in CLIENT_MESSAGES + SERVER_MESSAGES} == set(Message.__subclasses__())


@both_directions
def test_messages_interleave_both_ways(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    for n in range(3):
        sender.send(line(client_sends, f"to you {n}"))
        receiver.send(line(not client_sends, f"back {n}"))
        assert pair.deliver(sender) == [line(client_sends, f"to you {n}")]
        assert pair.deliver(receiver) == [line(not client_sends, f"back {n}")]


@pytest.mark.parametrize(
    "client_sends, message_type",
    [(True, t) for t in SERVER_ONLY] + [(False, t) for t in CLIENT_ONLY],
    ids=[f"client-{t.__name__}" for t in SERVER_ONLY] + [f"server-{t.__name__}" for t in CLIENT_ONLY],
)
def test_role_may_not_send_the_other_roles_messages(pair, client_sends, message_type):
    sender, _receiver = pair.sender_receiver(client_sends)
    sample = {FieldType.U32: 1, FieldType.TEXT: "x", FieldType.BYTES: b"x"}
    message = message_type(*[sample[spec.type] for spec in field_specs(message_type)])
    with pytest.raises(LocalProtocolError):
        sender.send(message)
    assert sender.state is OPEN
    assert sender.data_to_send() == b""
    # Nothing was sealed, so the next message still has the expected sequence number.
    sender.send(line(client_sends, "still fine"))
    assert pair.deliver(sender) == [line(client_sends, "still fine")]


# Largest text in one frame: type (1) + field length (2) + text + tag (16).
LARGEST_TEXT = MAX_FRAME_SIZE - 1 - 2 - TAG_SIZE


@both_directions
def test_largest_message_fits_one_frame(pair, client_sends):
    sender, _ = pair.sender_receiver(client_sends)
    message = line(client_sends, "x" * LARGEST_TEXT)
    sender.send(message)
    data = sender.data_to_send()
    assert len(data) == HEADER_SIZE + MAX_FRAME_SIZE
    assert pair.deliver(sender, data) == [message]


@both_directions
def test_message_too_large_for_a_frame_is_refused(pair, client_sends):
    sender, _ = pair.sender_receiver(client_sends)
    with pytest.raises(LocalProtocolError):
        sender.send(line(client_sends, "x" * (LARGEST_TEXT + 1)))
    assert sender.state is OPEN
    assert sender.data_to_send() == b""
    sender.send(line(client_sends, "small"))
    assert pair.deliver(sender) == [line(client_sends, "small")]


def test_message_of_fields_too_large_together_is_refused(pair):
    with pytest.raises(LocalProtocolError):
        pair.server.send(ChatMessage("a" * 40000, "b" * 40000))
    assert pair.server.state is OPEN
    assert pair.server.data_to_send() == b""


@both_directions
def test_unencodable_text_is_a_local_protocol_error(pair, client_sends):
    # input() under surrogateescape (e.g. LANG=C) returns such strings for non-UTF-8 bytes.
    sender, _ = pair.sender_receiver(client_sends)
    with pytest.raises(LocalProtocolError):
        sender.send(line(client_sends, "h\udce9llo"))
    assert sender.state is OPEN
    sender.send(line(client_sends, "hello"))
    assert pair.deliver(sender) == [line(client_sends, "hello")]


# --- what a test may do besides: count records, seal raw ones ------------------


def test_records_are_counted_on_both_ends_from_the_handshake_on(pair):
    # The client sealed its HI, the server its HI and OK.
    assert (pair.client.records_sent, pair.server.records_received) == (1, 1)
    assert (pair.server.records_sent, pair.client.records_received) == (2, 2)
    pair.server.send_batch([protocol.encode(line(False, "one")), protocol.encode(line(False, "two"))])
    pair.deliver(pair.server)
    assert pair.server.records_sent == pair.client.records_received == 3  # one Batch


def test_nothing_is_counted_before_the_keys(identity_key):
    pair = ConnectionPair(identity_key)
    assert (pair.client.records_sent, pair.client.records_received) == (0, 0)
    assert (pair.server.records_sent, pair.server.records_received) == (0, 0)


@both_directions
def test_a_raw_record_is_authentic_whatever_it_holds(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send_raw_record(bytes([0x7F]) + b"no such type")
    (event,) = pair.deliver(sender)
    assert event == MalformedMessage("unknown message type 127")
    assert receiver.state is OPEN
    sender.send(line(client_sends, "after"))
    assert pair.deliver(sender) == [line(client_sends, "after")]


def test_a_raw_record_before_the_keys_is_refused(identity_key):
    pair = ConnectionPair(identity_key)
    with pytest.raises(LocalProtocolError):
        pair.server.send_raw_record(b"early")
    assert pair.server.state is ConnectionState.AWAIT_KEY_EXCHANGE
    assert len(split_frames(pair.server.data_to_send())) == 1  # its hello alone
