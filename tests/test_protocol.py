"""protocol: a client and a server over a fake wire, bytes in and events out.

As in h11's tests, ``ConnectionPair`` links the two ends and moves bytes
between them; each input is fed whole frame by whole frame, one byte at a
time, or coalesced with the frames that follow it. No sockets here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct

import pytest
from Cryptodome.PublicKey import RSA

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE, EphemeralKey, RecordSealer
from socket_chat.protocol import (
    MAX_FRAME_SIZE,
    NEED_DATA,
    ActionLine,
    ActionMessage,
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    ClientConnection,
    ConnectionClosed,
    ConnectionState,
    EchoOwnLines,
    ErrorNotice,
    Goodbye,
    Greeting,
    HandshakeComplete,
    HistoryMessage,
    LocalProtocolError,
    MalformedMessage,
    Message,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    RateLimit,
    RemoteProtocolError,
    ServerConnection,
    ServerHello,
    ServerRefused,
    UserJoined,
    UserKicked,
    UserLeft,
    UserList,
    UserListRequest,
    Username,
    UsernameDeadline,
    UsernameRequest,
    UserParted,
    Welcome,
    refusal,
)

# RFC 7748 section 6.1's keys, pinned so that every run sends the same bytes.
CLIENT_X25519 = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
SERVER_X25519 = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
ATTACKER_X25519 = bytes(range(32))

# Where the fields sit in a whole hello or key exchange frame (PROTOCOL.md
# section 2): 4 header bytes, type, version, random[32], share[32], u16 length.
HEADER_SIZE = 4
VERSION_AT = 5
RANDOM_AT = slice(6, 38)
SHARE_AT = slice(38, 70)
LENGTH_AT = slice(70, 72)
# The first application record of each direction: c2s after HI, s2c after HI, OK.
FIRST_APPLICATION_SEQUENCE = {True: 1, False: 2}

OPEN = ConnectionState.OPEN
ERROR = ConnectionState.ERROR
CLOSED = ConnectionState.CLOSED

CLIENT_MESSAGES = [
    Username("Randall Flagg"),
    ChatLine("héllo, wörld ☃ 🎉"),
    ChatLine(""),
    PrivateLine("Zoë", "just between us"),
    ActionLine("waves"),
    NickRequest("Zoë"),
    UserListRequest(),
    Away("gone fishing"),
    Away(""),
    Back(),
    EchoOwnLines(),
    Goodbye("leaving"),  # last: nothing may follow it
]
SERVER_MESSAGES = [
    UsernameRequest("Please enter a username."),
    Welcome("Zoë"),
    ChatMessage("Zoë", "こんにちは"),
    UserJoined("Randall Flagg"),
    UserLeft("Randall Flagg"),
    Notice("Ünïcode notice"),
    ErrorNotice("That username is taken."),
    PrivateMessage("Zoë", "Randall Flagg", "just between us"),
    ActionMessage("Zoë", "waves"),
    NickChanged("Zoë", "Zoe"),
    UserList.of([("Zoë", 5), ("Randall Flagg", 3600)]),
    UserList(""),
    HistoryMessage("Zoë", "earlier", 1764100000, "chat"),
    Motd("Welcome!\nBe nice."),
    UserParted("Zoë", "bye all"),
    UserKicked("Zoë", "flooding"),
    Greeting("Zoë", 3000, "Ann\nRandall Flagg"),
    AwayReply("Zoë", "gone fishing"),
    UserList.of([("Zoë", 5), ("Randall Flagg", 3600)], {"Zoë": "gone fishing", "Randall Flagg": ""}),
    RateLimit(burst=20, interval_ms=200),
    RateLimit(burst=0, interval_ms=0xFFFFFFFF),
    UsernameDeadline(300),
    EchoOwnLines(),
    Goodbye("Server is shutting down."),  # last: nothing may follow it
]
SERVER_ONLY = [
    UsernameRequest,
    Welcome,
    ChatMessage,
    UserJoined,
    UserLeft,
    Notice,
    ErrorNotice,
    RateLimit,
    PrivateMessage,
    ActionMessage,
    NickChanged,
    UserList,
    HistoryMessage,
    Motd,
    UserParted,
    UserKicked,
    Greeting,
    AwayReply,
    UsernameDeadline,
]
CLIENT_ONLY = [Username, ChatLine, PrivateLine, ActionLine, NickRequest, UserListRequest, Away, Back]

both_directions = pytest.mark.parametrize("client_sends", [True, False], ids=["client_sends", "server_sends"])


# --- the fake wire -----------------------------------------------------------


def seeded_rng(seed: str):
    return random.Random(seed).randbytes


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def split_frames(data: bytes) -> list[bytes]:
    frames = []
    while data:
        (length,) = struct.unpack_from("!I", data)
        assert len(data) >= HEADER_SIZE + length, "split_frames needs whole frames"
        frames.append(data[: HEADER_SIZE + length])
        data = data[HEADER_SIZE + length :]
    return frames


def by_frame(data: bytes) -> list[bytes]:
    return split_frames(data)


def by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def coalesced(data: bytes) -> list[bytes]:
    return [data] if data else []


FEEDS = pytest.mark.parametrize("feed", [by_frame, by_byte, coalesced])


def drain(conn) -> list:
    """Every event ``conn`` has ready, up to NEED_DATA (or the close)."""
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def replace(data: bytes, where: slice | int, new: bytes) -> bytes:
    if isinstance(where, int):
        where = slice(where, where + len(new))
    assert where.stop - where.start == len(new)
    return data[: where.start] + new + data[where.stop :]


def flip_byte(data: bytes, index: int) -> bytes:
    return replace(data, index % len(data), bytes([data[index] ^ 0x01]))


class ConnectionPair:
    """A ClientConnection and a ServerConnection joined by a fake wire."""

    def __init__(self, identity_key, feed=by_frame):
        self.identity_key = identity_key
        self.feed = feed
        self.client = ClientConnection(rng=seeded_rng("client"), ephemeral_key=EphemeralKey(CLIENT_X25519))
        self.server = ServerConnection(
            protocol.ServerIdentity.of(identity_key),
            rng=seeded_rng("server"),
            ephemeral_key=EphemeralKey(SERVER_X25519),
        )
        self.received = {self.client: [], self.server: []}
        self.hello = self.key_exchange = b""

    def peer(self, conn):
        return self.server if conn is self.client else self.client

    def deliver(self, sender, data: bytes | None = None) -> list:
        """Move ``data`` (default: all ``sender`` wrote) to its peer; the peer's events."""
        if data is None:
            data = sender.data_to_send()
        receiver = self.peer(sender)
        events = []
        for chunk in self.feed(data):
            receiver.receive_data(chunk)
            events += drain(receiver)
        self.received[receiver] += events
        return events

    def steps(self, server_sends=()):
        """The handshake, one move of the wire at a time (yields before each)."""
        yield
        self.hello = self.server.data_to_send()
        self.deliver(self.server, self.hello)
        yield
        self.client.accept_server_key()
        yield
        self.key_exchange = self.client.data_to_send()
        self.deliver(self.client, self.key_exchange)
        yield
        self.deliver(self.server)  # HI
        yield
        self.deliver(self.client)  # HI
        yield
        for message in server_sends:  # coalesced with OK on the wire
            self.server.send(message)
        self.deliver(self.server)  # OK

    def handshake(self, server_sends=()):
        """All the moves; the events each side received."""
        for _ in self.steps(server_sends):
            pass
        return self.received[self.client], self.received[self.server]

    def sender_receiver(self, client_sends: bool):
        return (self.client, self.server) if client_sends else (self.server, self.client)


def advance(pair, moves: int):
    """Make the first ``moves`` moves of the handshake; the rest of its steps.

    1: hello delivered, 2: key accepted, 3: key exchange delivered,
    4: server HI delivered, 5: client HI delivered (then OK ends it).
    """
    steps = pair.steps()
    for _ in range(moves + 1):
        next(steps)
    return steps


@pytest.fixture
def pair(identity_key):
    """A pair with the handshake done."""
    pair = ConnectionPair(identity_key)
    pair.handshake()
    assert pair.client.state is OPEN and pair.server.state is OPEN
    return pair


def sent(conn, *messages) -> list[bytes]:
    """The record frames ``conn`` writes for ``messages``."""
    for message in messages:
        conn.send(message)
    return split_frames(conn.data_to_send())


def line(client_sends: bool, text: str) -> Message:
    """A message the sending role may send."""
    return ChatLine(text) if client_sends else Notice(text)


def assert_failed(conn) -> None:
    """The next event is a RemoteProtocolError, the state ERROR, and it stays so."""
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ERROR


def expected_hello(identity_key) -> ServerHello:
    der = crypto_utils.export_public_key(identity_key)
    return ServerHello(version=1, public_key=der, fingerprint=crypto_utils.fingerprint(der))


def eavesdropped_keys(pair) -> crypto_utils.SessionKeys:
    """The session keys, from the wire and the server's two private keys (PROTOCOL.md section 2)."""
    hello, key_exchange = pair.hello[HEADER_SIZE:], pair.key_exchange[HEADER_SIZE:]
    (wrapped_length,) = struct.unpack("!H", pair.key_exchange[LENGTH_AT])
    wrapped = pair.key_exchange[LENGTH_AT.stop :]
    assert len(wrapped) == wrapped_length
    rsa_secret = crypto_utils.unwrap_key(pair.identity_key, wrapped)
    shared = EphemeralKey(SERVER_X25519).agree(pair.key_exchange[SHARE_AT])
    transcript = hashlib.sha256(hello + key_exchange).digest()
    return crypto_utils.derive_session_keys(rsa_secret, shared, transcript)


def forge(keys, client_sends: bool, sequence: int, plaintext: bytes, aad: bytes | None = None) -> bytes:
    """A record frame as ``client_sends``'s side would seal it (aad: the header unless given)."""
    if client_sends:
        key, iv = keys.client_to_server_key, keys.client_to_server_iv
    else:
        key, iv = keys.server_to_client_key, keys.server_to_client_iv
    header = struct.pack("!I", len(plaintext) + TAG_SIZE)
    return header + RecordSealer(key, iv, first_sequence=sequence).seal(plaintext, aad=header if aad is None else aad)


# --- the handshake -----------------------------------------------------------


@FEEDS
def test_handshake(identity_key, feed):
    pair = ConnectionPair(identity_key, feed)
    greeting = [UsernameRequest("Please enter a username."), Notice("Two people are here.")]
    client_events, server_events = pair.handshake(server_sends=greeting)
    assert client_events == [expected_hello(identity_key), HandshakeComplete(), *greeting]
    assert server_events == [HandshakeComplete()]
    assert pair.client.state is OPEN and pair.server.state is OPEN


def test_server_hello_fingerprint_matches_crypto_utils(identity_key):
    pair = ConnectionPair(identity_key)
    hello = pair.deliver(pair.server)[0]
    assert hello.fingerprint == crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
    assert pair.client.state is ConnectionState.AWAIT_TRUST


def test_handshake_states_in_order(identity_key):
    pair = ConnectionPair(identity_key)
    seen = [(pair.client.state.name, pair.server.state.name) for _ in pair.steps()]
    assert seen == [
        ("AWAIT_SERVER_HELLO", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_TRUST", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_SERVER_HI", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_SERVER_HI", "AWAIT_CLIENT_HI"),
        ("AWAIT_SERVER_OK", "AWAIT_CLIENT_HI"),
        ("AWAIT_SERVER_OK", "OPEN"),
    ]
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)


def test_server_hello_is_ready_at_once(identity_key):
    pair = ConnectionPair(identity_key)
    assert len(split_frames(pair.server.data_to_send())) == 1


def test_client_sends_nothing_before_accepting_the_key(identity_key):
    pair = ConnectionPair(identity_key)
    pair.deliver(pair.server)
    assert pair.client.data_to_send() == b""


def test_pinned_randomness_gives_the_same_bytes(identity_key):
    first, second = ConnectionPair(identity_key), ConnectionPair(identity_key)
    first.handshake()
    second.handshake()
    assert (first.hello, first.key_exchange) == (second.hello, second.key_exchange)


# --- application messages ----------------------------------------------------


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
    message = message_type(*[1 if f.type == "int" else "x" for f in dataclasses.fields(message_type)])
    with pytest.raises(LocalProtocolError):
        sender.send(message)
    assert sender.state is OPEN
    assert sender.data_to_send() == b""
    # Nothing was sealed, so the next message still has the expected sequence number.
    sender.send(line(client_sends, "still fine"))
    assert pair.deliver(sender) == [line(client_sends, "still fine")]


SEND_TOO_EARLY = [
    ("client", ConnectionState.AWAIT_SERVER_HELLO),
    ("client", ConnectionState.AWAIT_TRUST),
    ("client", ConnectionState.AWAIT_SERVER_HI),
    ("client", ConnectionState.AWAIT_SERVER_OK),
    ("server", ConnectionState.AWAIT_KEY_EXCHANGE),
    ("server", ConnectionState.AWAIT_CLIENT_HI),
]


@pytest.mark.parametrize("role, state", SEND_TOO_EARLY, ids=[f"{r}-{s.name}" for r, s in SEND_TOO_EARLY])
def test_send_before_open_is_refused(identity_key, role, state):
    pair = ConnectionPair(identity_key)
    steps = pair.steps()
    next(steps)
    conn = getattr(pair, role)
    while conn.state is not state:
        next(steps)
    with pytest.raises(LocalProtocolError):
        conn.send(ChatLine("early") if role == "client" else Notice("early"))
    assert conn.state is state
    # The misuse left nothing on the wire: the handshake still completes.
    for _ in steps:
        pass
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)
    assert pair.received[pair.client][-1] == HandshakeComplete()


ACCEPT_TOO_EARLY_OR_LATE = [
    ConnectionState.AWAIT_SERVER_HELLO,
    ConnectionState.AWAIT_SERVER_HI,
    ConnectionState.AWAIT_SERVER_OK,
]


@pytest.mark.parametrize("state", ACCEPT_TOO_EARLY_OR_LATE, ids=[s.name for s in ACCEPT_TOO_EARLY_OR_LATE])
def test_accept_server_key_in_wrong_state_is_refused(identity_key, state):
    pair = ConnectionPair(identity_key)
    steps = pair.steps()
    next(steps)
    while pair.client.state is not state:
        next(steps)
    with pytest.raises(LocalProtocolError):
        pair.client.accept_server_key()
    assert pair.client.state is state
    for _ in steps:
        pass
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)


def test_accept_server_key_when_open_is_refused(pair):
    with pytest.raises(LocalProtocolError):
        pair.client.accept_server_key()
    assert pair.client.state is OPEN
    assert pair.client.data_to_send() == b""


@both_directions
def test_send_after_goodbye_is_refused(pair, client_sends):
    sender, _ = pair.sender_receiver(client_sends)
    sender.send(Goodbye("bye"))
    with pytest.raises(LocalProtocolError):
        sender.send(line(client_sends, "one more thing"))
    assert sender.state is OPEN
    assert pair.deliver(sender) == [Goodbye("bye")]


def test_send_after_peer_closed_is_refused(pair):
    pair.client.receive_data(b"")
    assert drain(pair.client) == [ConnectionClosed(clean=False)]
    with pytest.raises(LocalProtocolError):
        pair.client.send(ChatLine("anyone?"))
    assert pair.client.state is CLOSED


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


# --- tampering on the wire ---------------------------------------------------


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


# --- records forged with keys recomputed from the wire -----------------------


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


# --- frames and EOF ----------------------------------------------------------


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


def test_data_after_eof_is_a_local_error(pair):
    pair.server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        pair.server.receive_data(b"more")
    assert pair.server.next_event() == ConnectionClosed(clean=False)


def test_receive_data_does_not_parse(identity_key):
    # Like h11: receive_data only buffers; errors surface from next_event.
    conn = ClientConnection()
    conn.receive_data(oversized_header())
    assert conn.state is ConnectionState.AWAIT_SERVER_HELLO
    assert_failed(conn)


# --- handshake attacks -------------------------------------------------------


def test_swapped_x25519_share_fails_key_confirmation(identity_key):
    pair = ConnectionPair(identity_key)
    hello = pair.server.data_to_send()
    attacker = EphemeralKey(ATTACKER_X25519)
    forged_hello = replace(hello, SHARE_AT, attacker.public_bytes)  # the RSA key is kept
    assert pair.deliver(pair.server, forged_hello) == [expected_hello(identity_key)]
    pair.client.accept_server_key()
    assert pair.deliver(pair.client) == []  # the server cannot tell, and answers HI
    pair.client.receive_data(pair.server.data_to_send())
    assert_failed(pair.client)


def test_swapped_shares_both_ways_fail_key_confirmation(identity_key):
    # The attacker now holds an X25519 secret with each side; only the
    # RSA-wrapped secret (and the transcript) stand in the way.
    pair = ConnectionPair(identity_key)
    attacker = EphemeralKey(ATTACKER_X25519)
    pair.deliver(pair.server, replace(pair.server.data_to_send(), SHARE_AT, attacker.public_bytes))
    pair.client.accept_server_key()
    pair.deliver(pair.client, replace(pair.client.data_to_send(), SHARE_AT, attacker.public_bytes))
    pair.client.receive_data(pair.server.data_to_send())
    assert_failed(pair.client)


def test_client_completes_handshake_with_an_impostor(identity_key, impostor_key):
    # Trust is the caller's decision: the protocol reports the key and goes on.
    pair = ConnectionPair(impostor_key)
    client_events, server_events = pair.handshake()
    hello = client_events[0]
    assert hello == expected_hello(impostor_key)
    assert hello.fingerprint != expected_hello(identity_key).fingerprint
    assert client_events[1:] == [HandshakeComplete()] and server_events == [HandshakeComplete()]


def test_key_exchange_for_the_real_server_fails_at_an_impostor(identity_key, impostor_key):
    # Two identical clients (pinned randomness) answer the real server's hello.
    real, fooled = ConnectionPair(identity_key), ConnectionPair(identity_key)
    advance(real, 2)
    advance(fooled, 2)
    key_exchange = real.client.data_to_send()
    assert fooled.client.data_to_send() == key_exchange
    impostor = ServerConnection(
        protocol.ServerIdentity.of(impostor_key), rng=seeded_rng("server"), ephemeral_key=EphemeralKey(SERVER_X25519)
    )
    impostor.receive_data(key_exchange)
    assert impostor.next_event() is NEED_DATA  # no unwrap oracle: it answers HI as usual
    assert impostor.state is ConnectionState.AWAIT_CLIENT_HI
    # Control: the real server's HI for the same bytes checks out.
    real.deliver(real.client, key_exchange)
    assert real.deliver(real.server) == []
    assert real.client.state is ConnectionState.AWAIT_SERVER_OK
    fooled.client.receive_data(impostor.data_to_send())
    assert_failed(fooled.client)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version_in_hello_is_refused(identity_key, version):
    pair = ConnectionPair(identity_key)
    pair.client.receive_data(replace(pair.server.data_to_send(), VERSION_AT, bytes([version])))
    assert_failed(pair.client)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version_in_key_exchange_is_refused(identity_key, version):
    pair = ConnectionPair(identity_key)
    advance(pair, 2)
    pair.server.receive_data(replace(pair.client.data_to_send(), VERSION_AT, bytes([version])))
    assert_failed(pair.server)


def test_altered_server_random_fails_key_confirmation(identity_key):
    pair = ConnectionPair(identity_key)
    hello = pair.server.data_to_send()
    pair.deliver(pair.server, replace(hello, RANDOM_AT, bytes(32)))
    pair.client.accept_server_key()
    pair.deliver(pair.client)
    pair.client.receive_data(pair.server.data_to_send())
    assert_failed(pair.client)


def test_altered_client_random_fails_key_confirmation(identity_key):
    pair = ConnectionPair(identity_key)
    pair.deliver(pair.server)
    pair.client.accept_server_key()
    assert pair.deliver(pair.client, replace(pair.client.data_to_send(), RANDOM_AT, bytes(32))) == []
    pair.client.receive_data(pair.server.data_to_send())
    assert_failed(pair.client)


@pytest.mark.parametrize("wrapped", ["altered", "wrong-length-secret"])
def test_bad_wrapped_secret_fails_only_at_key_confirmation(identity_key, wrapped):
    """No padding oracle: the server answers HI as usual and the client finds out."""
    pair = ConnectionPair(identity_key)
    pair.deliver(pair.server)
    pair.client.accept_server_key()
    key_exchange = pair.client.data_to_send()
    if wrapped == "altered":
        bad = flip_byte(key_exchange, -1)
    else:
        short = crypto_utils.wrap_key(identity_key.public_key(), bytes(16))
        bad = key_exchange[: LENGTH_AT.stop] + short  # same length as before
        assert len(bad) == len(key_exchange)
    assert pair.deliver(pair.client, bad) == []
    assert pair.server.state is ConnectionState.AWAIT_CLIENT_HI
    hi = pair.server.data_to_send()
    assert len(hi) == HEADER_SIZE + 2 + TAG_SIZE
    pair.client.receive_data(hi)
    assert_failed(pair.client)


CONFIRMATIONS = {
    # who receives, after how many moves, which direction and sequence, what plaintext
    "client-gets-OK-for-HI": ("client", 3, False, 0, b"OK"),
    "client-gets-HI-for-OK": ("client", 4, False, 1, b"HI"),
    "server-gets-OK-for-HI": ("server", 4, True, 0, b"OK"),
    "client-gets-empty-HI": ("client", 3, False, 0, b""),
}


@pytest.mark.parametrize("case", CONFIRMATIONS.values(), ids=CONFIRMATIONS.keys())
def test_authentic_record_with_wrong_confirmation_is_refused(identity_key, case):
    role, moves, client_sends, sequence, plaintext = case
    pair = ConnectionPair(identity_key)
    advance(pair, moves)
    conn = getattr(pair, role)
    conn.receive_data(forge(eavesdropped_keys(pair), client_sends, sequence, plaintext))
    assert_failed(conn)


def test_frame_before_the_key_exchange_is_refused(identity_key):
    pair = ConnectionPair(identity_key)
    pair.client.receive_data(pair.server.data_to_send() + frame(b"early"))
    assert pair.client.next_event() == expected_hello(identity_key)
    assert_failed(pair.client)


def small_rsa_der() -> bytes:
    # A public key needs no factoring: any odd 1024-bit modulus will do.
    return RSA.construct(((1 << 1023) | 12345, 65537)).export_key(format="DER")


def frame_u16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def malformed_hellos(identity_key) -> dict[str, bytes]:
    hello = ServerConnection(protocol.ServerIdentity.of(identity_key)).data_to_send()[HEADER_SIZE:]
    der = crypto_utils.export_public_key(identity_key)
    head = hello[:68]
    garbage = random.Random("hello garbage")
    cases = {
        "empty": b"",
        "type-only": b"\x01",
        "type-version": b"\x01\x01",
        "wrong-type": b"\x02" + hello[1:],
        "truncated-key": hello[:-1],
        "trailing-byte": hello + b"\x00",
        "key-length-too-long": head + b"\xff\xff" + der,
        "key-garbage": head + struct.pack("!H", 40) + bytes(range(40)),
        "key-private": head + frame_u16(identity_key.export_key(format="DER")),
        "key-1024-bit": head + frame_u16(small_rsa_der()),
        "zero-share": hello[:34] + bytes(32) + hello[66:],
    }
    for n in range(50):
        cases[f"random-{n}"] = garbage.randbytes(garbage.randrange(0, 600))
    return cases


def assert_refused(conn, body: bytes, name: str) -> None:
    """A frame with ``body`` is a RemoteProtocolError and leaves ``conn`` in ERROR."""
    conn.receive_data(frame(body))
    try:
        conn.next_event()
    except RemoteProtocolError:
        pass
    else:
        pytest.fail(f"{name}: no RemoteProtocolError")
    assert conn.state is ERROR, name


def test_malformed_hellos_give_remote_protocol_error(identity_key):
    for name, body in malformed_hellos(identity_key).items():
        conn = ClientConnection()
        assert_refused(conn, body, name)


def malformed_key_exchanges(identity_key) -> dict[str, bytes]:
    pair = ConnectionPair(identity_key)
    advance(pair, 2)
    kx = pair.client.data_to_send()[HEADER_SIZE:]
    garbage = random.Random("key exchange garbage")
    cases = {
        "empty": b"",
        "type-only": b"\x02",
        "type-version": b"\x02\x01",
        "wrong-type": b"\x01" + kx[1:],
        "truncated": kx[:-1],
        "trailing-byte": kx + b"\x00",
        "wrapped-length-too-long": kx[:66] + b"\xff\xff" + kx[68:],
        "no-wrapped": kx[:66],
        "zero-share": kx[:34] + bytes(32) + kx[66:],
        "low-order-share": kx[:34] + (1).to_bytes(32, "little") + kx[66:],
    }
    for n in range(50):
        cases[f"random-{n}"] = garbage.randbytes(garbage.randrange(0, 600))
    return cases


def test_malformed_key_exchanges_give_remote_protocol_error(identity_key):
    for name, body in malformed_key_exchanges(identity_key).items():
        conn = ServerConnection(protocol.ServerIdentity.of(identity_key))
        assert_refused(conn, body, name)
        assert conn.data_to_send()[HEADER_SIZE : HEADER_SIZE + 1] == b"\x01"  # only its hello went out


# --- the message codec -------------------------------------------------------


@pytest.mark.parametrize("message", CLIENT_MESSAGES + SERVER_MESSAGES, ids=repr)
def test_codec_round_trip(message):
    assert protocol.decode_message(protocol.encode_message(message)) == message


def test_codec_type_numbers_are_the_specs():
    assert {cls.__name__: cls.TYPE for cls in Message.__subclasses__()} == {
        "UsernameRequest": 0x01,
        "Username": 0x02,
        "Welcome": 0x03,
        "ChatLine": 0x04,
        "ChatMessage": 0x05,
        "UserJoined": 0x06,
        "UserLeft": 0x07,
        "Notice": 0x08,
        "ErrorNotice": 0x09,
        "Goodbye": 0x0A,
        "RateLimit": 0x0B,
        "PrivateLine": 0x10,
        "PrivateMessage": 0x11,
        "ActionLine": 0x12,
        "ActionMessage": 0x13,
        "NickRequest": 0x14,
        "NickChanged": 0x15,
        "UserListRequest": 0x16,
        "UserList": 0x17,
        "HistoryMessage": 0x18,
        "Motd": 0x19,
        "UserParted": 0x1A,
        "UserKicked": 0x1B,
        "Greeting": 0x1C,
        "Away": 0x1D,
        "Back": 0x1E,
        "AwayReply": 0x1F,
        "UsernameDeadline": 0x20,
        "EchoOwnLines": 0x21,
    }


def test_user_list_round_trips_names_with_spaces_and_skips_lines_that_do_not_parse():
    listed = UserList.of([("Randall Flagg", 0), ("Zoë", 125)])
    assert protocol.decode_message(protocol.encode_message(listed)).members() == [("Randall Flagg", 0), ("Zoë", 125)]
    assert UserList("Ann\t3\nno tab\nBob\tx\n\t4").members() == [("Ann", 3)]


def test_user_list_carries_away_messages_in_a_third_field():
    listed = UserList.of([("Ann", 3), ("Bob", 5), ("Cy", 9)], {"Bob": "lunch", "Cy": "", "nobody": "x"})
    assert listed.entries == "Ann\t3\nBob\t5\tlunch\nCy\t9\t"
    assert listed.members() == [("Ann", 3), ("Bob", 5), ("Cy", 9)]
    assert listed.away() == {"Bob": "lunch", "Cy": ""}


def test_message_without_fields_is_its_type_byte_alone():
    assert protocol.encode_message(UserListRequest()) == b"\x16"
    assert isinstance(protocol.decode_message(b"\x16\x00"), MalformedMessage)  # trailing bytes


def test_encoding_is_type_then_length_prefixed_utf8_fields():
    assert protocol.encode_message(ChatMessage("Zoë", "hi")) == b"\x05\x00\x04Zo\xc3\xab\x00\x02hi"
    assert protocol.encode_message(Goodbye("")) == b"\x0a\x00\x00"


def test_longest_field_round_trips_and_one_byte_more_is_refused():
    longest = ChatLine("x" * 0xFFFF)
    assert protocol.decode_message(protocol.encode_message(longest)) == longest
    with pytest.raises(LocalProtocolError):
        protocol.encode_message(ChatLine("x" * 0x10000))
    with pytest.raises(LocalProtocolError):  # bytes of UTF-8 count, not characters
        protocol.encode_message(ChatLine("é" * 0x8000))


def test_encode_of_unencodable_text_is_a_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        protocol.encode_message(ChatLine("\udce9"))


MALFORMED = {
    "empty": b"",
    "unknown-type-0": b"\x00\x00\x00",
    "unknown-type-11": b"\x0b\x00\x00",
    "unknown-type-255": b"\xff",
    "no-field": b"\x04",
    "half-a-length": b"\x04\x00",
    "field-cut-short": b"\x04\x00\x05abc",
    "second-field-missing": b"\x05\x00\x01a",
    "invalid-utf8": b"\x04\x00\x01\xff",
    "utf8-surrogate": b"\x04\x00\x03\xed\xa0\x80",
    "utf8-overlong": b"\x04\x00\x02\xc0\xaf",
    "trailing-bytes": protocol.encode_message(ChatLine("hi")) + b"\x00",
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_decode_of_malformed_payload_is_malformed_message(payload):
    result = protocol.decode_message(payload)
    assert isinstance(result, MalformedMessage)
    assert result.reason


def test_message_fields_must_be_str():
    with pytest.raises(TypeError):
        ChatLine(b"bytes")


# --- turned away before the handshake, and numeric fields ------------------


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte_by_byte"])
def test_a_refusal_instead_of_a_hello_ends_the_connection_with_its_reason(split):
    client = ClientConnection()
    frame = refusal("The server is full (1000 people). Try again later.")
    for chunk in [frame[i : i + 1] for i in range(len(frame))] if split else [frame]:
        client.receive_data(chunk)
    assert client.next_event() == ServerRefused("The server is full (1000 people). Try again later.")
    assert client.state is ConnectionState.CLOSED
    assert client.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        client.accept_server_key()


@pytest.mark.parametrize(
    "body",
    [
        bytes([0x03, 0x01, 0x00]),  # reason length cut short
        bytes([0x03, 0x01, 0x00, 0x02, 0xFF, 0xFE]),  # not UTF-8
        bytes([0x03, 0x01, 0x00, 0x00, 0x00]),  # trailing byte
        bytes([0x03, 0x02, 0x00, 0x00]),  # unknown version
    ],
    ids=["truncated", "not_utf8", "trailing", "version"],
)
def test_a_malformed_refusal_is_a_protocol_error(body):
    client = ClientConnection()
    client.receive_data(struct.pack("!I", len(body)) + body)
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.state is ConnectionState.ERROR


def test_a_server_may_not_refuse_after_its_hello(identity_key):
    client, server = ClientConnection(), ServerConnection(protocol.ServerIdentity.of(identity_key))
    client.receive_data(server.data_to_send() + refusal("full"))
    assert isinstance(client.next_event(), ServerHello)
    client.accept_server_key()
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_numeric_fields_are_u32_on_the_wire():
    assert protocol.encode_message(RateLimit(burst=20, interval_ms=200)) == bytes.fromhex("0b 00000014 000000c8")


@pytest.mark.parametrize("value", [-1, 2**32, 1.5, "20", True])
def test_a_numeric_field_refuses_what_u32_cannot_carry(value):
    with pytest.raises(TypeError):
        RateLimit(burst=value, interval_ms=200)


def test_a_truncated_numeric_field_is_malformed():
    assert isinstance(protocol.decode_message(bytes.fromhex("0b 00000014 0000")), MalformedMessage)


def test_a_message_that_cannot_be_encoded_fails_every_time():
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            protocol.encode_message(ChatLine("lone \ud800 surrogate"))
