"""Property tests (hypothesis) of everything that reads bytes from a peer:
the frame parser, the record layer, the message codec, and an OPEN pair of
connections fed arbitrary and mutated records.

The one rule they all check: whatever a peer sends, the parser answers with
an event, NEED_DATA, ``RemoteProtocolError`` (or, for the record layer,
``DecryptionError``), never with any other exception, and never with a
message the peer did not seal.

Runs are reproducible (``derandomize=True``) and leave no example database:
hypothesis's caches go to a directory under the system's temp dir, not to a
``.hypothesis`` directory in the repository.
"""

from __future__ import annotations

import itertools
import struct
import tempfile
from pathlib import Path

import hypothesis.configuration
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE, DecryptionError, RecordOpener, RecordSealer
from socket_chat.protocol import (
    MAX_FRAME_SIZE,
    NEED_DATA,
    ChatLine,
    ClientConnection,
    ConnectionClosed,
    ConnectionState,
    Goodbye,
    LocalProtocolError,
    MalformedMessage,
    Message,
    Notice,
    RemoteProtocolError,
    ServerConnection,
    ServerHello,
)
from socket_chat.protocol.framing import ReceiveBuffer
from socket_chat.protocol.messages import CLIENT_SENDS, SERVER_SENDS
from socket_chat.protocol.schema import FieldType, field_specs
from tests.conftest import KEYS
from tests.wire import (
    FIRST_APPLICATION_SEQUENCE,
    HEADER_SIZE,
    ConnectionPair,
    eavesdropped_keys,
    forge,
    split_frames,
)

# Hypothesis caches (unicode tables, constants) go here, not into the repo.
hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "socket-chat-hypothesis")

#: The committed test-only server key (a module constant rather than the
#: fixture, so a failing example does not print the whole private key).
IDENTITY_KEY = crypto_utils.import_private_key((KEYS / "test-only-server-key.pem").read_bytes())

#: Every test here: reproducible, no example database, no per-example deadline
#: (a handshake costs an RSA decryption). Sizes keep the file near 10 s.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For properties that need a whole handshake per example (~10 ms of RSA).
HANDSHAKES = settings(FUZZ, max_examples=50)

MESSAGE_TYPES = list(Message.__subclasses__())
CLIENT_TYPES = sorted(CLIENT_SENDS, key=lambda cls: cls.TYPE)
SERVER_TYPES = sorted(SERVER_SENDS, key=lambda cls: cls.TYPE)


# --- strategies ----------------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any ints; taken modulo the length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


#: Cut points for ``chunked``: none (whole), a few, or many.
cuts = st.lists(st.integers(min_value=0, max_value=2**20), max_size=40)

#: Any text that has a UTF-8 form (no lone surrogates).
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)


#: Any value of a number field (u32 on the wire).
u32 = st.integers(min_value=0, max_value=2**32 - 1)


def field_values(cls) -> st.SearchStrategy[tuple]:
    """Arbitrary values for the fields of message type ``cls``: encodable
    text for a text field, any bytes for a bytes field, any u32 for a number
    field."""
    strategies = {FieldType.U32: u32, FieldType.TEXT: text, FieldType.BYTES: st.binary(max_size=100)}
    return st.tuples(*[strategies[spec.type] for spec in field_specs(cls)])


def messages_of(types) -> st.SearchStrategy[Message]:
    """A message of one of ``types``, every field arbitrary."""
    return st.sampled_from(types).flatmap(lambda cls: field_values(cls).map(lambda values: cls(*values)))


@st.composite
def near_valid_payloads(draw) -> bytes:
    """Payloads shaped like messages: a type byte (known or not), then fields
    whose u16 length may tell the truth or lie, holding bytes that may or may
    not be UTF-8, sometimes with trailing bytes. Reaches deeper than random bytes."""
    parts = [bytes([draw(st.integers(0, 12) | st.integers(0, 255))])]
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(max_size=20) | text.map(lambda t: t.encode("utf-8")))
        length = draw(st.just(len(data)) | st.integers(0, 0xFFFF))
        parts.append(struct.pack("!H", length) + data)
    if draw(st.booleans()):
        parts.append(draw(st.binary(min_size=1, max_size=4)))
    return b"".join(parts)


#: Message payloads: random bytes, near-valid ones, and valid messages of
#: every type (so both roles' messages reach each side).
payloads = st.binary(max_size=200) | near_valid_payloads() | messages_of(MESSAGE_TYPES).map(protocol.encode_message)


# --- helpers -------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def drain_or_error(conn) -> tuple[list, RemoteProtocolError | None]:
    """Events ``conn`` has ready (up to NEED_DATA or a close), and the
    RemoteProtocolError that stopped it, if one did. Any other exception
    propagates and fails the test."""
    events = []
    try:
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
    except RemoteProtocolError as exc:
        assert conn.state is ConnectionState.ERROR
        return events, exc
    return events, None


def feed(conn, chunks: list[bytes], eof: bool) -> tuple[list, RemoteProtocolError | None]:
    """Give ``conn`` each chunk (then EOF if asked), draining after each; stop
    at the first RemoteProtocolError. Returns (events, error or None)."""
    events = []
    for chunk in chunks + ([b""] if eof else []):
        conn.receive_data(chunk)
        new, error = drain_or_error(conn)
        events += new
        if error is not None or (new and isinstance(new[-1], ConnectionClosed)):
            return events, error
    return events, None


def without_reason(event):
    """An event with a MalformedMessage's reason left out (its wording is not the point)."""
    return MalformedMessage("") if isinstance(event, MalformedMessage) else event


def open_pair() -> ConnectionPair:
    pair = ConnectionPair(IDENTITY_KEY)
    pair.handshake()
    assert pair.client.state is ConnectionState.OPEN and pair.server.state is ConnectionState.OPEN
    return pair


def fresh(role: str):
    """A connection at the very start: the client awaiting the hello, the
    server awaiting the key exchange (its hello already written)."""
    if role == "client":
        return ClientConnection()
    conn = ServerConnection(protocol.ServerIdentity.of(IDENTITY_KEY))
    conn.data_to_send()
    return conn


roles = st.sampled_from(["client", "server"])


# --- the frame parser ----------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600) | st.lists(st.binary(max_size=40).map(frame)).map(b"".join), cut_at=cuts)
def test_receive_buffer_cuts_any_bytes_into_frames_or_refuses_the_header(data, cut_at):
    """ReceiveBuffer on arbitrary bytes: the frames it returns are exactly
    the length-prefixed pieces of the input, in order, whatever the chunks;
    the only exception is RemoteProtocolError, and only for a header over
    MAX_FRAME_SIZE."""
    buffer = ReceiveBuffer()
    got, refused = [], False
    try:
        for chunk in chunked(data, cut_at):
            buffer.append(chunk)
            while (item := buffer.next_frame()) is not None:
                got.append(item)
    except RemoteProtocolError:
        refused = True
    # The reference reading of the same bytes, all at once.
    expected, rest, oversized = [], data, False
    while len(rest) >= HEADER_SIZE:
        (length,) = struct.unpack_from("!I", rest)
        if length > MAX_FRAME_SIZE:
            oversized = True
            break
        if len(rest) < HEADER_SIZE + length:
            break
        expected.append((rest[:HEADER_SIZE], rest[HEADER_SIZE : HEADER_SIZE + length]))
        rest = rest[HEADER_SIZE + length :]
    assert refused == oversized
    assert got == expected


@FUZZ
@given(bodies=st.lists(st.binary(max_size=300), max_size=8), cut_at=cuts)
def test_frames_split_anywhere_parse_as_whole(bodies, cut_at):
    """Frames cut at arbitrary points come out of ReceiveBuffer exactly as
    they went in, and nothing is left over."""
    buffer = ReceiveBuffer()
    got = []
    for chunk in chunked(b"".join(frame(b) for b in bodies), cut_at):
        buffer.append(chunk)
        while (item := buffer.next_frame()) is not None:
            got.append(item[1])
    assert got == bodies
    assert len(buffer) == 0


@FUZZ
@given(role=roles, data=st.binary(max_size=800), cut_at=cuts, eof=st.booleans())
def test_connection_at_the_start_on_arbitrary_bytes(role, data, cut_at, eof):
    """A fresh client or server fed arbitrary bytes in arbitrary pieces: only
    events, NEED_DATA or RemoteProtocolError, never another exception; and
    after EOF it is CLOSED or ERROR, never left waiting."""
    conn = fresh(role)
    events, error = feed(conn, chunked(data, cut_at), eof)
    allowed = (ServerHello, ConnectionClosed) if role == "client" else (protocol.HandshakeComplete, ConnectionClosed)
    assert all(isinstance(e, allowed) for e in events), events
    if eof and error is None:
        assert conn.state is ConnectionState.CLOSED and events and isinstance(events[-1], ConnectionClosed)


@HANDSHAKES
@given(
    role=roles,
    opened=st.booleans(),
    length=st.integers(MAX_FRAME_SIZE + 1, 2**32 - 1),
    body=st.binary(max_size=100),
    cut_at=cuts,
)
def test_oversized_header_is_refused_before_the_body(role, opened, length, body, cut_at):
    """A header announcing more than MAX_FRAME_SIZE is refused as soon as its
    4 bytes are in, in the handshake or when OPEN: the parser does not wait
    for (or buffer) the body."""
    conn = getattr(open_pair(), role) if opened else fresh(role)
    header = struct.pack("!I", length)
    pieces = chunked(header, cut_at)
    for piece in pieces[:-1]:
        conn.receive_data(piece)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(pieces[-1] + body)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ConnectionState.ERROR


@FUZZ
@given(role=roles, length=st.integers(1, MAX_FRAME_SIZE), cut_at=cuts)
def test_header_within_the_limit_waits_for_its_body(role, length, cut_at):
    """The other side of the limit: a header of at most MAX_FRAME_SIZE with
    its body still to come is NEED_DATA, not an error (so the test above
    does not pass by refusing every header)."""
    conn = fresh(role)
    for piece in chunked(struct.pack("!I", length), cut_at):
        conn.receive_data(piece)
        assert conn.next_event() is NEED_DATA


@HANDSHAKES
@given(client_sends=st.booleans(), data=st.data(), cut_at=cuts)
def test_records_split_anywhere_give_the_messages_sent(client_sends, data, cut_at):
    """Through real connections: the records of several messages, cut at
    arbitrary points, are received as exactly the messages sent, in order."""
    pair = open_pair()
    sender, receiver = (pair.client, pair.server) if client_sends else (pair.server, pair.client)
    messages = data.draw(
        st.lists(messages_of(CLIENT_TYPES if client_sends else SERVER_TYPES), max_size=6).map(
            lambda ms: [m for m in ms if not isinstance(m, Goodbye)]
        )
    )
    for message in messages:
        sender.send(message)
    events, error = feed(receiver, chunked(sender.data_to_send(), cut_at), eof=False)
    assert error is None
    assert events == messages
    assert receiver.state is ConnectionState.OPEN


# --- the record layer ----------------------------------------------------------

keys = st.binary(min_size=32, max_size=32)
ivs = st.binary(min_size=12, max_size=12)
records = st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=20)), min_size=1, max_size=5)


def sealed_records(key, iv, items) -> list[bytes]:
    sealer = RecordSealer(key, iv)
    return [sealer.seal(plaintext, aad=aad) for plaintext, aad in items]


@FUZZ
@given(key=keys, iv=ivs, items=records)
def test_records_round_trip(key, iv, items):
    """Sealed in order, opened in order: each plaintext comes back, and the
    record is the plaintext's length plus the tag."""
    opener = RecordOpener(key, iv)
    for (plaintext, aad), sealed in zip(items, sealed_records(key, iv, items)):
        assert len(sealed) == len(plaintext) + TAG_SIZE
        assert opener.open(sealed, aad=aad) == plaintext


@st.composite
def tampered(draw, sealed: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(record, aad) with one change: a bit flipped in the record or the aad,
    the record cut short, or bytes added to its end."""
    kind = draw(
        st.sampled_from(
            ["flip-record", "flip-aad", "truncate", "extend"] if aad else ["flip-record", "truncate", "extend"]
        )
    )
    if kind == "truncate":
        return sealed[: draw(st.integers(0, len(sealed) - 1))], aad
    if kind == "extend":
        return sealed + draw(st.binary(min_size=1, max_size=20)), aad
    target = sealed if kind == "flip-record" else aad
    i, bit = draw(st.integers(0, len(target) - 1)), draw(st.integers(0, 7))
    flipped = target[:i] + bytes([target[i] ^ (1 << bit)]) + target[i + 1 :]
    return (flipped, aad) if kind == "flip-record" else (sealed, flipped)


@FUZZ
@given(key=keys, iv=ivs, items=records, data=st.data())
def test_any_change_to_a_record_is_a_decryption_error(key, iv, items, data):
    """The records before it open; the changed one raises DecryptionError
    (and nothing else: pytest.raises lets any other exception through)."""
    sealed = sealed_records(key, iv, items)
    at = data.draw(st.integers(0, len(items) - 1))
    record, aad = data.draw(tampered(sealed[at], items[at][1]))
    opener = RecordOpener(key, iv)
    for i in range(at):
        assert opener.open(sealed[i], aad=items[i][1]) == items[i][0]
    with pytest.raises(DecryptionError):
        opener.open(record, aad=aad)


@FUZZ
@given(
    key=keys,
    iv=ivs,
    items=st.lists(st.tuples(st.binary(max_size=50), st.just(b"")), min_size=2, max_size=5),
    data=st.data(),
)
def test_records_open_only_in_their_order(key, iv, items, data):
    """After the first ``at`` records, any record but the next one (replayed,
    from later, or the same bytes sealed again) fails: the sequence number
    is part of every record."""
    sealed = sealed_records(key, iv, items)
    at = data.draw(st.integers(0, len(items) - 1))
    other = data.draw(st.integers(0, len(items) - 1).filter(lambda j: j != at))
    opener = RecordOpener(key, iv)
    for i in range(at):
        opener.open(sealed[i])
    with pytest.raises(DecryptionError):
        opener.open(sealed[other])


@FUZZ
@given(key=keys, iv=ivs, plaintext=st.binary(max_size=50), count=st.integers(2, 6))
def test_the_same_plaintext_never_seals_to_the_same_record(key, iv, plaintext, count):
    """Each record of a direction has its own nonce, so equal plaintexts
    give distinct records."""
    sealer = RecordSealer(key, iv)
    assert len({sealer.seal(plaintext) for _ in range(count)}) == count


# --- the message codec ---------------------------------------------------------


@FUZZ
@given(payload=payloads)
def test_decode_any_bytes_is_a_message_or_malformed(payload):
    """decode_message never raises: it returns a Message or a MalformedMessage
    with a reason. A payload it accepts is the canonical encoding of the
    message (re-encoding gives the same bytes)."""
    result = protocol.decode_message(payload)
    assert isinstance(result, (Message, MalformedMessage))
    if isinstance(result, MalformedMessage):
        assert result.reason
    else:
        assert protocol.encode_message(result) == payload


@FUZZ
@given(message=messages_of(MESSAGE_TYPES))
def test_every_message_type_round_trips(message):
    """encode then decode gives the same message, for every type and any text."""
    assert protocol.decode_message(protocol.encode_message(message)) == message


def text_fields(cls) -> list[int]:
    """The positions of the text fields of message type ``cls``."""
    return [i for i, spec in enumerate(field_specs(cls)) if spec.type is FieldType.TEXT]


@FUZZ
@given(cls=st.sampled_from([c for c in MESSAGE_TYPES if text_fields(c)]), data=st.data())
def test_lone_surrogate_in_any_field_is_a_local_protocol_error(cls, data):
    """Text with a lone surrogate (no UTF-8 form) in any text field is refused
    on encode with LocalProtocolError, not a UnicodeEncodeError."""
    values = list(data.draw(field_values(cls)))
    at = data.draw(st.sampled_from(text_fields(cls)))
    surrogate = data.draw(st.characters(categories=("Cs",)))
    cut = data.draw(st.integers(0, len(values[at])))
    values[at] = values[at][:cut] + surrogate + values[at][cut:]
    with pytest.raises(LocalProtocolError):
        protocol.encode_message(cls(*values))


# --- an OPEN pair fed arbitrary and mutated records ----------------------------


@st.composite
def mutation(draw, stream: bytes) -> tuple[str, bytes, int]:
    """(kind, mutated stream, offset of the first changed byte) for a stream
    of whole record frames: a bit flip, a truncation, bytes inserted or
    appended, or a frame header rewritten to another length."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "append", "relength"]))
    if kind == "flip":
        i, bit = draw(st.integers(0, len(stream) - 1)), draw(st.integers(0, 7))
        return kind, stream[:i] + bytes([stream[i] ^ (1 << bit)]) + stream[i + 1 :], i
    if kind == "truncate":
        i = draw(st.integers(0, len(stream) - 1))
        return kind, stream[:i], i
    if kind == "insert":
        i = draw(st.integers(0, len(stream) - 1))
        return kind, stream[:i] + draw(st.binary(min_size=1, max_size=40)) + stream[i:], i
    if kind == "append":
        return kind, stream + draw(st.binary(min_size=1, max_size=100)), len(stream)
    starts = frame_starts(stream)
    start = draw(st.sampled_from(starts))
    (old,) = struct.unpack_from("!I", stream, start)
    new = draw(st.integers(0, 2**32 - 1).filter(lambda n: n != old))
    return kind, stream[:start] + struct.pack("!I", new) + stream[start + HEADER_SIZE :], start


def frame_starts(stream: bytes) -> list[int]:
    starts, offset = [], 0
    for f in split_frames(stream):
        starts.append(offset)
        offset += len(f)
    return starts


@HANDSHAKES
@given(client_sends=st.booleans(), data=st.data(), cut_at=cuts)
def test_open_connection_on_mutated_records(client_sends, data, cut_at):
    """An OPEN connection receiving a mutated stream of real records: it
    delivers exactly the messages whose records lie wholly before the first
    changed byte, then fails with RemoteProtocolError, or, if the stream now
    ends inside a frame or at a boundary (a truncation, a length made
    longer), sees an unclean close (PROTOCOL.md section 1). Never a message
    that was not sent, never another exception."""
    pair = open_pair()
    sender, receiver = (pair.client, pair.server) if client_sends else (pair.server, pair.client)
    messages = data.draw(st.lists(messages_of([ChatLine] if client_sends else [Notice]), min_size=1, max_size=4))
    for message in messages:
        sender.send(message)
    stream = sender.data_to_send()
    kind, mutated, at = data.draw(mutation(stream))
    intact = sum(1 for start, f in zip(frame_starts(stream), split_frames(stream)) if start + len(f) <= at)

    events, error = feed(receiver, chunked(mutated, cut_at), eof=True)

    note = f"{kind} at {at}"
    if kind == "truncate" or error is None:
        assert error is None, note
        assert events == [*messages[:intact], ConnectionClosed(clean=False)], note
        assert receiver.state is ConnectionState.CLOSED
    else:
        assert isinstance(error, RemoteProtocolError), note
        assert events == messages[:intact], note
        assert receiver.state is ConnectionState.ERROR


@HANDSHAKES
@given(client_sends=st.booleans(), data=st.binary(max_size=600), cut_at=cuts)
def test_open_connection_on_arbitrary_bytes(client_sends, data, cut_at):
    """An OPEN connection fed arbitrary bytes (no session key): no message
    at all. A whole frame, or a header over the limit, is a
    RemoteProtocolError (random bytes never authenticate); bytes that end
    before the first frame does are an unclean close (PROTOCOL.md section 1)."""
    pair = open_pair()
    receiver = pair.server if client_sends else pair.client
    events, error = feed(receiver, chunked(data, cut_at), eof=True)
    length = struct.unpack_from("!I", data)[0] if len(data) >= HEADER_SIZE else None
    if length is not None and (length > protocol.MAX_FRAME_SIZE or HEADER_SIZE + length <= len(data)):
        assert error is not None and events == [], events
    else:
        assert error is None and events == [ConnectionClosed(clean=False)], events


@HANDSHAKES
@given(client_sends=st.booleans(), bodies=st.lists(payloads, min_size=1, max_size=4), cut_at=cuts)
def test_open_connection_on_authentic_records_of_random_payloads(client_sends, bodies, cut_at):
    """Records sealed with the real session keys (so they authenticate) but
    holding arbitrary payloads: each is a message the peer's role may send,
    or a MalformedMessage; the connection stays OPEN, and only a record
    after a Goodbye is a RemoteProtocolError."""
    pair = open_pair()
    receiver = pair.server if client_sends else pair.client
    session = eavesdropped_keys(pair)
    first = FIRST_APPLICATION_SEQUENCE[client_sends]
    stream = b"".join(forge(session, client_sends, first + i, body) for i, body in enumerate(bodies))
    may_send = CLIENT_SENDS if client_sends else SERVER_SENDS

    events, error = feed(receiver, chunked(stream, cut_at), eof=False)

    expected = []
    for body in bodies:
        decoded = protocol.decode_message(body)
        if isinstance(decoded, Message) and type(decoded) not in may_send:
            decoded = MalformedMessage("a message of the other role")
        expected.append(decoded)
        if isinstance(decoded, Goodbye):
            break
    assert all(e.reason for e in events if isinstance(e, MalformedMessage))
    assert [without_reason(e) for e in events] == [without_reason(e) for e in expected]
    after_goodbye = len(expected) < len(bodies)
    assert (error is not None) == after_goodbye
    assert receiver.state is (ConnectionState.ERROR if after_goodbye else ConnectionState.OPEN)


# --- mutated handshake frames --------------------------------------------------


def genuine_handshake() -> dict[str, bytes]:
    """The frames of one handshake between a ConnectionPair's two ends
    (pinned randomness, so every call gives the same bytes)."""
    pair = ConnectionPair(IDENTITY_KEY)
    wire = {"hello": pair.server.data_to_send()}
    pair.deliver(pair.server, wire["hello"])
    pair.client.accept_server_key()
    wire["key_exchange"] = pair.client.data_to_send()
    pair.deliver(pair.client, wire["key_exchange"])
    wire["server_hi"] = pair.server.data_to_send()
    pair.deliver(pair.server, wire["server_hi"])
    wire["client_hi"] = pair.client.data_to_send()
    pair.deliver(pair.client, wire["client_hi"])
    wire["server_ok"] = pair.server.data_to_send()
    assert pair.server.state is ConnectionState.OPEN
    return wire


@HANDSHAKES
@given(data=st.data(), cut_at=cuts)
def test_mutated_hello_never_completes_a_handshake(data, cut_at):
    """A client given a changed server hello (bit flip, truncation, bytes
    added, wrong length) and then the genuine server's HI and OK: at most a
    ServerHello (which it accepts), then RemoteProtocolError, or an unclean
    close if the change left a frame unfinished at EOF; never
    HandshakeComplete, since the transcript no longer matches."""
    wire = genuine_handshake()
    kind_, mutated, at = data.draw(mutation(wire["hello"]))
    client = ConnectionPair(IDENTITY_KEY).client  # same pinned randomness as the genuine one
    events, error = feed(client, chunked(mutated, cut_at), eof=False)
    if error is None and client.state is ConnectionState.AWAIT_TRUST:
        assert [type(e) for e in events] == [ServerHello]
        client.accept_server_key()
    if error is None:
        more, error = feed(client, [wire["server_hi"] + wire["server_ok"]], eof=True)
        events += more
    if error is None:
        assert events[-1:] == [ConnectionClosed(clean=False)], (kind_, at, events)
        events = events[:-1]
    assert all(isinstance(e, ServerHello) for e in events), (kind_, at, events)


@HANDSHAKES
@given(data=st.data(), cut_at=cuts)
def test_mutated_key_exchange_never_completes_a_handshake(data, cut_at):
    """A server given a changed key exchange and then the genuine client's
    HI: RemoteProtocolError (or an unclean close, if the change left a frame
    unfinished at EOF), never HandshakeComplete and no other exception.
    (A badly wrapped secret is not reported early: the server answers HI
    under keys the client cannot have, as PROTOCOL.md says.)"""
    wire = genuine_handshake()
    kind_, mutated, at = data.draw(mutation(wire["key_exchange"]))
    server = ConnectionPair(IDENTITY_KEY).server
    server.data_to_send()
    events, error = feed(server, chunked(mutated + wire["client_hi"], cut_at), eof=True)
    if error is None:
        assert events == [ConnectionClosed(clean=False)], (kind_, at, events)
    else:
        assert events == [], (kind_, at, events)
