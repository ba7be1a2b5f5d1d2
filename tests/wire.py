"""The fake wire for the protocol's tests: a client and a server joined
without sockets, as h11's tests do it.

``ConnectionPair`` links the two ends and moves bytes between them; each
input is fed whole frame by whole frame, one byte at a time, or coalesced
with the frames that follow it (``FEEDS``). The randomness and the X25519
keys are pinned, so every run sends the same bytes, and ``eavesdropped_keys``
works the session keys out from the wire, as PROTOCOL.md says, so that a
test can forge records (``forge``). The ``pair`` fixture is a pair with the
handshake done.
"""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE, EphemeralKey, RecordSealer
from socket_chat.protocol import (
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
    HistoryMessage,
    KeyProof,
    Message,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    ProofRequest,
    RateLimit,
    RemoteProtocolError,
    ServerConnection,
    ServerHello,
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
    KeyProof("ssh-ed25519", bytes(range(32)), bytes(range(64))),
    KeyProof("", b"", b""),
    protocol.WhoisRequest("Zoë"),
    protocol.DeviceAdd("SHA256:" + "A" * 43),
    protocol.DeviceRemove("ssh-ed25519 AAAA laptop"),
    protocol.DeviceListRequest(),
    protocol.SearchRequest("deploy fri*", "Zoë", 1764547200, 0),
    protocol.SearchRequest("", "", 0, 0),
    protocol.OperatorCommand("ban", "Zoë 2h spam"),
    protocol.Stamps(),
    protocol.HistoryRequest("41", 50),
    protocol.HistoryRequest("", 0),
    protocol.MentionsRequest(),
    protocol.TicketRequest(),
    protocol.Multiline(),
    ChatLine("first line\n\n  third, indented"),
    protocol.Rooms(),
    protocol.RoomRequest("join", "#dev", ""),
    protocol.RoomRequest("rooms", "", ""),
    protocol.RoomLine("#dev", "chat", "hi"),
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
    ProofRequest(),
    protocol.WhoisReply("Zoë", "away", 3600, "SHA256:" + "A" * 43, 1764100000, "gone fishing"),
    protocol.WhoisReply("Zoë", "online", 5, "", 0, ""),
    protocol.DeviceList("SHA256:" + "A" * 43, "SHA256:" + "B" * 43 + "\t1764100000"),
    protocol.DeviceList("SHA256:" + "A" * 43, ""),
    protocol.SearchResult("Zoë", "the deploy is on Friday", 1764600000, "action"),
    protocol.OfflineMessage("Zoë", "Ann", "see you", 1764600000),
    protocol.OperatorStatus(1),
    protocol.UserBanned("Zoë", 0, ""),
    protocol.Stamps(),
    protocol.StampedLine("42", 1764100000, "chat", "Zoë", "hi"),
    protocol.StampedLine("43", 1764100001, "notice", "", "Notice from the operator: noon"),
    protocol.HistoryLine("41", 1764100000, "action", "Zoë", "waves"),
    protocol.PageEnd("history", 50, 1),
    protocol.Unread(137, 1764100000, 20),
    protocol.NewTicket(604800, bytes(range(150))),
    protocol.NewTicket(0, b""),
    protocol.MultilineOffer(50),
    ChatMessage("Zoë", "first line\nsecond line"),
    protocol.Rooms(),
    protocol.RoomMessage("#dev", "7", 1764100000, "chat", "Zoë", "hi"),
    protocol.RoomNotice("#dev", "bob joined #dev."),
    protocol.Joined("#dev", "builds", 2, "Zoë\nbob"),
    protocol.Parted("#dev", ""),
    protocol.RoomList.of([("#dev", 2, "builds"), ("#ops", 1, "")]),
    protocol.RoomMembers("#dev", "Zoë\nbob"),
    protocol.RoomHistoryLine("#dev", "6", 1764099990, "action", "bob", "waves"),
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
    ProofRequest,
    protocol.StampedLine,
    protocol.HistoryLine,
    protocol.PageEnd,
    protocol.Unread,
]
CLIENT_ONLY = [
    Username,
    ChatLine,
    PrivateLine,
    ActionLine,
    NickRequest,
    UserListRequest,
    Away,
    Back,
    KeyProof,
    protocol.HistoryRequest,
    protocol.MentionsRequest,
]

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
