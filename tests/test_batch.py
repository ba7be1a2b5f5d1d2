"""Batches (PROTOCOL.md section 4, type 0x0F): several messages sealed in one
record by the server, read by the client as the same messages one by one.
Over the fake wire of tests/wire.py, then through the server (the
sender's own batching is in test_sender.py)."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE
from socket_chat.protocol import (
    BATCH_TYPE,
    MAX_FRAME_SIZE,
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    Goodbye,
    LocalProtocolError,
    MalformedMessage,
    Notice,
    UserJoined,
    encode_batch,
    encode_message,
)
from tests.wire import (
    FEEDS,
    FIRST_APPLICATION_SEQUENCE,
    OPEN,
    SERVER_MESSAGES,
    ConnectionPair,
    assert_failed,
    drain,
    eavesdropped_keys,
    forge,
    pair,  # noqa: F401  (the fixture: a pair with the handshake done)
    split_frames,
)

BURST = [ChatMessage(f"user{i}", f"line {i}") for i in range(50)]


def encoded(messages: list) -> list[protocol.Encoded]:
    """What the writer hands the connection: each message with its bytes."""
    return [protocol.encode(message) for message in messages]


def forged_from_server(pair, plaintext: bytes, offset: int = 0) -> bytes:
    """A record the server could have sealed, as its next application record."""
    sequence = FIRST_APPLICATION_SEQUENCE[False] + offset
    return forge(eavesdropped_keys(pair), False, sequence, plaintext)


@FEEDS
def test_batch_arrives_as_the_same_messages_in_order(identity_key, feed):
    pair = ConnectionPair(identity_key, feed)
    pair.handshake()
    pair.server.send_batch(encoded(BURST))
    assert pair.deliver(pair.server) == BURST


def test_batch_is_one_record(pair):
    pair.server.send_batch(encoded(BURST))
    (record,) = split_frames(pair.server.data_to_send())
    assert len(record) < sum(len(encode_message(m)) + 4 + TAG_SIZE for m in BURST)


def test_every_server_message_may_be_batched(pair):
    pair.server.send_batch(encoded(SERVER_MESSAGES))  # Goodbye is last in the list
    assert pair.deliver(pair.server) == SERVER_MESSAGES


def test_one_message_is_sent_as_by_send(identity_key):
    batched, single = ConnectionPair(identity_key), ConnectionPair(identity_key)
    batched.handshake()
    single.handshake()
    batched.server.send_batch(encoded([Notice("alone")]))
    single.server.send(Notice("alone"))
    assert batched.server.data_to_send() == single.server.data_to_send()


def test_empty_batch_sends_nothing(pair):
    pair.server.send_batch(encoded([]))
    assert pair.server.data_to_send() == b""


def test_batch_too_large_for_a_frame_is_cut_into_records(pair):
    text = "x" * 30_000
    messages = [ChatMessage("big", text + str(i)) for i in range(5)]
    pair.server.send_batch(encoded(messages))
    records = split_frames(pair.server.data_to_send())
    assert len(records) == 3  # two per record fit under 64 KiB, three do not
    assert all(len(r) - 4 <= MAX_FRAME_SIZE for r in records)
    for record in records:
        pair.deliver(pair.server, record)
    assert pair.received[pair.client][-5:] == messages


def test_largest_message_goes_alone_in_a_batch(pair):
    largest = Notice("x" * (MAX_FRAME_SIZE - TAG_SIZE - 3))  # type + u16 length + text
    pair.server.send_batch(encoded([Notice("before"), largest, Notice("after")]))
    records = split_frames(pair.server.data_to_send())
    assert len(records) == 3
    assert max(len(r) - 4 for r in records) == MAX_FRAME_SIZE
    for record in records:
        pair.deliver(pair.server, record)
    assert pair.received[pair.client][-3:] == [Notice("before"), largest, Notice("after")]


def test_client_may_not_send_a_batch(pair):
    with pytest.raises(LocalProtocolError):
        pair.client.send_batch(encoded([ChatLine("a"), ChatLine("b")]))
    assert pair.client.data_to_send() == b""
    assert pair.client.state is OPEN


@pytest.mark.parametrize(
    "messages",
    [
        [Goodbye("bye"), Notice("after")],
        [Notice("fine"), ChatLine("a client's message")],
        [Notice("fine"), Notice("x" * MAX_FRAME_SIZE)],
    ],
    ids=["goodbye-not-last", "wrong-role", "too-large"],
)
def test_refused_batch_sends_nothing(pair, messages):
    with pytest.raises(LocalProtocolError):
        pair.server.send_batch(encoded(messages))
    assert pair.server.data_to_send() == b""
    pair.server.send(Notice("still open"))
    assert pair.deliver(pair.server) == [Notice("still open")]


def test_send_after_a_batch_ending_in_goodbye_is_refused(pair):
    pair.server.send_batch(encoded([Notice("last words"), Goodbye("bye")]))
    with pytest.raises(LocalProtocolError):
        pair.server.send(Notice("more"))


def test_goodbye_at_the_end_of_a_batch_closes_cleanly(pair):
    pair.server.send_batch(encoded([Notice("last words"), Goodbye("bye")]))
    data = pair.server.data_to_send()
    pair.client.receive_data(data)
    pair.client.receive_data(b"")
    assert drain(pair.client) == [Notice("last words"), Goodbye("bye"), ConnectionClosed(clean=True)]


def test_message_after_goodbye_in_a_batch_is_refused(pair):
    batch = encode_batch([encode_message(Goodbye("bye")), encode_message(Notice("after"))])
    pair.client.receive_data(forged_from_server(pair, batch))
    assert_failed(pair.client)


@pytest.mark.parametrize(
    ("plaintext", "events"),
    [
        (bytes([BATCH_TYPE]), ["empty"]),
        (bytes([BATCH_TYPE, 0, 5, 8]), ["truncated"]),
        (encode_batch([encode_batch([encode_message(Notice("inner"))])]), ["inside"]),
        (encode_batch([b"\xee", encode_message(Notice("ok"))]), ["unknown", Notice("ok")]),
        (
            encode_batch([encode_message(ChatLine("a client's")), encode_message(Notice("ok"))]),
            ["does not receive", Notice("ok")],
        ),
    ],
    ids=["empty", "truncated", "nested", "unknown-inner", "wrong-role-inner"],
)
def test_unreadable_batch_content_is_malformed_not_fatal(pair, plaintext, events):
    pair.client.receive_data(forged_from_server(pair, plaintext))
    received = drain(pair.client)
    assert len(received) == len(events)
    for event, expected in zip(received, events):
        if isinstance(expected, str):
            assert isinstance(event, MalformedMessage) and expected in event.reason, event
        else:
            assert event == expected
    assert pair.client.state is OPEN
    # The record was authentic: the next one is still read.
    pair.client.receive_data(forged_from_server(pair, encode_message(UserJoined("next")), offset=1))
    assert drain(pair.client) == [UserJoined("next")]


def test_server_does_not_receive_a_batch(pair):
    keys = eavesdropped_keys(pair)
    batch = encode_batch([encode_message(ChatLine("a")), encode_message(ChatLine("b"))])
    pair.server.receive_data(forge(keys, True, FIRST_APPLICATION_SEQUENCE[True], batch))
    (event,) = drain(pair.server)
    assert isinstance(event, MalformedMessage)
    assert pair.server.state is OPEN


def test_decode_record_of_one_message_is_decode_message():
    payload = encode_message(Notice("one"))
    assert protocol.decode_record(payload) == [protocol.decode_message(payload)]


# --- through the server -------------------------------------------------------


def test_burst_reaches_a_reader_complete_and_in_order(own_server):
    own_server.start(rate=0)  # no flood control: the burst is the point
    alice, bob = own_server.client("alice"), own_server.client("bob")
    alice.expect(UserJoined)
    for n in range(200):
        alice.say(f"burst {n}")
    assert [bob.expect(ChatMessage).text for _ in range(200)] == [f"burst {n}" for n in range(200)]
