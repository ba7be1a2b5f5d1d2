"""Records on the wire (PROTOCOL.md section 3): replayed, reordered,
dropped, truncated, altered and reflected records are refused, and records
forged with the session keys recomputed from the wire show what the
receiver checks (the header is associated data; the role; the Goodbye)."""

from __future__ import annotations

import struct

import pytest

from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    ConnectionState,
    Goodbye,
    MalformedMessage,
)
from tests.wire import (
    FIRST_APPLICATION_SEQUENCE,
    HEADER_SIZE,
    OPEN,
    ConnectionPair,
    advance,
    assert_failed,
    both_directions,
    drain,
    eavesdropped_keys,
    flip_byte,
    forge,
    frame,
    line,
    pair,  # noqa: F401  (the fixture: a pair with the handshake done)
    sent,
)


@both_directions
def test_replayed_record_is_refused(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    (record,) = sent(sender, line(client_sends, "pay 10 euros"))
    assert pair.deliver(sender, record) == [line(client_sends, "pay 10 euros")]
    receiver.receive_data(record)
    assert_failed(receiver)


@both_directions
def test_reordered_records_are_refused(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    first, second = sent(sender, line(client_sends, "one"), line(client_sends, "two"))
    receiver.receive_data(second + first)
    assert_failed(receiver)


@both_directions
def test_dropped_record_is_refused(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    first, _, third = sent(sender, *(line(client_sends, text) for text in ("one", "two", "three")))
    receiver.receive_data(first + third)
    assert receiver.next_event() == line(client_sends, "one")
    assert_failed(receiver)


TRUNCATIONS = {
    "last-byte": lambda body: body[:-1],
    "first-byte": lambda body: body[1:],
    "tag-only": lambda body: body[-TAG_SIZE:],
    "no-tag": lambda body: body[:-TAG_SIZE],
    "one-byte": lambda body: body[:1],
}


@both_directions
@pytest.mark.parametrize("cut", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_truncated_record_is_refused(pair, client_sends, cut):
    sender, receiver = pair.sender_receiver(client_sends)
    (record,) = sent(sender, line(client_sends, "a line long enough to cut"))
    receiver.receive_data(frame(cut(record[HEADER_SIZE:])))  # a whole frame, just shorter
    assert_failed(receiver)


@both_directions
@pytest.mark.parametrize(
    "index",
    [HEADER_SIZE, HEADER_SIZE + 3, -TAG_SIZE, -1],
    ids=["first-ciphertext", "in-ciphertext", "first-tag", "last-tag"],
)
def test_altered_body_byte_is_refused(pair, client_sends, index):
    sender, receiver = pair.sender_receiver(client_sends)
    (record,) = sent(sender, line(client_sends, "hello"))
    receiver.receive_data(flip_byte(record, index))
    assert_failed(receiver)


@both_directions
def test_altered_length_header_is_refused(pair, client_sends):
    sender, receiver = pair.sender_receiver(client_sends)
    (record,) = sent(sender, line(client_sends, "hello"))
    receiver.receive_data(frame(record[HEADER_SIZE:] + b"\x00"))
    assert_failed(receiver)


def test_reflected_record_is_refused(pair):
    # Two records so the reflected one has sequence 2, the number the client's
    # opener expects next: only the direction's key differs.
    _, second = sent(pair.client, ChatLine("one"), ChatLine("two"))
    pair.client.receive_data(second)
    assert_failed(pair.client)


def test_reflected_server_hi_is_refused(identity_key):
    # HI is both directions' record 0 with the same plaintext: only the
    # direction's key tells them apart.
    pair = ConnectionPair(identity_key)
    advance(pair, 3)
    assert pair.server.state is ConnectionState.AWAIT_CLIENT_HI
    pair.server.receive_data(pair.server.data_to_send())
    assert_failed(pair.server)


@both_directions
def test_forged_record_with_the_session_keys_is_accepted(pair, client_sends):
    # The control for the tests below: the forger computes what the spec says.
    keys = eavesdropped_keys(pair)
    sender, receiver = pair.sender_receiver(client_sends)
    message = line(client_sends, "forged")
    sequence = FIRST_APPLICATION_SEQUENCE[client_sends]
    assert forge(keys, client_sends, sequence, protocol.encode_message(message)) == sent(sender, message)[0]
    receiver.receive_data(forge(keys, client_sends, sequence, protocol.encode_message(message)))
    assert drain(receiver) == [message]


@both_directions
@pytest.mark.parametrize("aad", ["longer", "shorter", "empty"])
def test_length_header_is_associated_data(pair, client_sends, aad):
    keys = eavesdropped_keys(pair)
    _, receiver = pair.sender_receiver(client_sends)
    plaintext = protocol.encode_message(line(client_sends, "hello"))
    real_length = len(plaintext) + TAG_SIZE
    wrong = {"longer": struct.pack("!I", real_length + 1), "shorter": struct.pack("!I", real_length - 1), "empty": b""}
    receiver.receive_data(forge(keys, client_sends, FIRST_APPLICATION_SEQUENCE[client_sends], plaintext, wrong[aad]))
    assert_failed(receiver)


@both_directions
def test_message_only_the_other_role_sends_is_malformed(pair, client_sends):
    keys = eavesdropped_keys(pair)
    _, receiver = pair.sender_receiver(client_sends)
    wrong_role = ChatMessage("server", "spoof") if client_sends else ChatLine("spoof")
    sequence = FIRST_APPLICATION_SEQUENCE[client_sends]
    receiver.receive_data(forge(keys, client_sends, sequence, protocol.encode_message(wrong_role)))
    (event,) = drain(receiver)
    assert isinstance(event, MalformedMessage)
    assert receiver.state is OPEN
    # The record was authentic, so the next one is still read.
    right_role = line(client_sends, "after")
    receiver.receive_data(forge(keys, client_sends, sequence + 1, protocol.encode_message(right_role)))
    assert drain(receiver) == [right_role]


@both_directions
def test_malformed_message_is_not_fatal(pair, client_sends):
    keys = eavesdropped_keys(pair)
    sequence = FIRST_APPLICATION_SEQUENCE[client_sends]
    _, receiver = pair.sender_receiver(client_sends)
    receiver.receive_data(forge(keys, client_sends, sequence, b"\xee unknown type"))
    (event,) = drain(receiver)
    assert isinstance(event, MalformedMessage)
    assert receiver.state is OPEN


@both_directions
def test_data_after_goodbye_is_refused(pair, client_sends):
    keys = eavesdropped_keys(pair)
    sender, receiver = pair.sender_receiver(client_sends)
    sender.send(Goodbye("bye"))
    assert pair.deliver(sender) == [Goodbye("bye")]
    # A record that would be valid, right after the Goodbye.
    sequence = FIRST_APPLICATION_SEQUENCE[client_sends] + 1
    receiver.receive_data(forge(keys, client_sends, sequence, protocol.encode_message(line(client_sends, "more"))))
    assert_failed(receiver)
