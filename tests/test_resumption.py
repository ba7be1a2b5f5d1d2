"""Resumption (PROTOCOL.md section 2, "Resumption"): the tickets, sealed
and opened (crypto/tickets.py); the resumed handshake and its fallback,
sans I/O (protocol/connection.py); the server's ticket keys, their rotation
and their file (server/tickets.py); and live: a reconnection that resumes
without RSA, and every bad ticket falling back to a full handshake."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest
from Cryptodome.Cipher import AES
from Cryptodome.Hash import HMAC, SHA256
from Cryptodome.Protocol.KDF import HKDF

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.client.link import ServerLink
from socket_chat.client.tickets import TicketWallet
from socket_chat.crypto import EphemeralKey, PersonKey, keystore
from socket_chat.crypto import tickets as sealed
from socket_chat.crypto.handshake import derive_session_keys
from socket_chat.protocol import (
    NEED_DATA,
    ClientConnection,
    ClientTicket,
    ConnectionState,
    HandshakeComplete,
    LocalProtocolError,
    NewTicket,
    ProofRequest,
    ResumptionOffered,
    ServerConnection,
    ServerHello,
    ServerIdentity,
    TicketRequest,
    UsernameRequest,
    WhoisReply,
    WhoisRequest,
)
from socket_chat.protocol.framing import HEADER
from socket_chat.server import tickets
from tests.helpers import ChatTestClient, key_proof
from tests.wire import CLIENT_X25519, SERVER_X25519

# --- test vectors (PROTOCOL.md, "Resumption: test vectors") -----------------

VECTOR_KEY = bytes(range(32))
VECTOR_NONCE = bytes(range(12))
VECTOR_BINDING = bytes([0x33]) * 32
VECTOR_CONTENTS = sealed.TicketContents(
    bytes([0x11]) * 16, 1_765_000_000, 604_800, bytes([0x22]) * 32, "SHA256:" + "A" * 43
)
VECTOR_TICKET = (
    "00000000000051a9000102030405060708090a0b4613c70ad4f4d30a9c50869aa0f8697c92d68734f0126cbf7867ecbf9d4b2290"
    "23328cde8de330ba56865dcfaaa50a1acc7b42af78f481f81db5083b3ad1a6a6b10ef34ce99067205d15eb2faece4fa979cb8823"
    "37221229bcbcdf8d39b1f8cc8ab918a7e500895bdf5d7ff30934603e52a0f76e9109850a444aef1fb9be0415"
)
VECTOR_BINDER = "75d687758b053f60b0f652c2c9e76334f0517cd0984f1d0bed736a2ae88dfe7a"
VECTOR_NEXT_SECRET = "b12c110fa593bd5a02585ed1f1bca8a974e20ec08896ea3598e98a55db570cc1"
VECTOR_KEYS = (
    "9ce5618afffd324fe65f85012bdf379acf008157b3adbeb0ddcaa0bdbdc4940e",
    "c7bbd7b2fbde7b40f7768b8d3c2fb7aa99a0bedec317f79596e5dfea6a2d8a04",
    "5e9beff2489374037de95b84",
    "670908d7f783e9b2ba1572d1",
)
# RFC 7748 section 6.1's shared secret of CLIENT_X25519 and SERVER_X25519.
VECTOR_SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
VECTOR_TRANSCRIPT = bytes([0x44]) * 32


def test_the_sealed_ticket_is_the_specs():
    ticket = sealed.seal_ticket(20905, VECTOR_KEY, VECTOR_CONTENTS, VECTOR_BINDING, VECTOR_NONCE)
    assert ticket.hex() == VECTOR_TICKET
    # The layout, as PROTOCOL.md gives it, built here without the module:
    key_id = (20905).to_bytes(8, "big")
    plaintext = (
        b"\x01"
        + bytes([0x11]) * 16
        + (1_765_000_000).to_bytes(8, "big")
        + (604_800).to_bytes(4, "big")
        + bytes([0x22]) * 32
        + bytes([50])
        + b"SHA256:"
        + b"A" * 43
    )
    cipher = AES.new(VECTOR_KEY, AES.MODE_GCM, nonce=VECTOR_NONCE)
    cipher.update(b"socket-chat v1 ticket" + key_id + VECTOR_BINDING)
    assert ticket == key_id + VECTOR_NONCE + b"".join(cipher.encrypt_and_digest(plaintext))
    assert sealed.open_ticket(ticket, {20905: VECTOR_KEY}.get, VECTOR_BINDING, 1_765_000_001) == VECTOR_CONTENTS


def test_the_resumption_key_schedule_is_the_specs():
    psk = VECTOR_CONTENTS.secret
    binder_key = HKDF(psk, 32, b"", SHA256, context=b"socket-chat v1 binder")
    assert sealed.binder(psk, VECTOR_TRANSCRIPT) == HMAC.new(binder_key, VECTOR_TRANSCRIPT, SHA256).digest()
    assert sealed.binder(psk, VECTOR_TRANSCRIPT).hex() == VECTOR_BINDER
    assert sealed.resumption_secret(psk, VECTOR_SHARED, VECTOR_TRANSCRIPT).hex() == VECTOR_NEXT_SECRET
    keys = derive_session_keys(psk, VECTOR_SHARED, VECTOR_TRANSCRIPT, resumed=True)
    assert keys.client_to_server_key.hex() == VECTOR_KEYS[0]
    assert keys.server_to_client_key.hex() == VECTOR_KEYS[1]
    assert keys.client_to_server_iv.hex() == VECTOR_KEYS[2]
    assert keys.server_to_client_iv.hex() == VECTOR_KEYS[3]
    assert keys != derive_session_keys(psk, VECTOR_SHARED, VECTOR_TRANSCRIPT)  # not a full handshake's


def test_protocol_md_gives_these_vectors():
    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    for value in (VECTOR_TICKET, VECTOR_BINDER, VECTOR_NEXT_SECRET, *VECTOR_KEYS):
        assert value in text


# --- sealing and opening ----------------------------------------------------


def sealed_vector() -> bytes:
    return sealed.seal_ticket(7, VECTOR_KEY, VECTOR_CONTENTS, VECTOR_BINDING, VECTOR_NONCE)


@pytest.mark.parametrize("at", [0, 7, 8, 19, 20, 40, -17, -1])
def test_a_ticket_changed_anywhere_is_rejected(at):
    ticket = bytearray(sealed_vector())
    ticket[at] ^= 0x01
    with pytest.raises(sealed.TicketRejected):
        sealed.open_ticket(bytes(ticket), {7: VECTOR_KEY, 7 ^ (1 << 56): VECTOR_KEY}.get, VECTOR_BINDING, 1_765_000_001)


@pytest.mark.parametrize(
    "keys, binding, now",
    [
        ({}, VECTOR_BINDING, 1_765_000_001),  # its key is not kept
        ({7: bytes(32)}, VECTOR_BINDING, 1_765_000_001),  # another key of that id
        ({7: VECTOR_KEY}, bytes(32), 1_765_000_001),  # another server key
        ({7: VECTOR_KEY}, VECTOR_BINDING, 1_765_000_000 + 604_800),  # expired
        ({7: VECTOR_KEY}, VECTOR_BINDING, 1_765_000_000 - 3600),  # from the future
    ],
    ids=["unknown key", "other key", "other server", "expired", "not yet"],
)
def test_a_ticket_that_cannot_be_used_is_rejected_the_same_way(keys, binding, now):
    with pytest.raises(sealed.TicketRejected):
        sealed.open_ticket(sealed_vector(), keys.get, binding, now)
    with pytest.raises(sealed.TicketRejected):
        sealed.open_ticket(b"short", keys.get, binding, now)


def test_a_ticket_lives_seven_days_at_most():
    with pytest.raises(ValueError):
        sealed.TicketContents(bytes(16), 0, sealed.MAX_LIFETIME + 1, bytes(32))
    assert "secret" not in repr(VECTOR_CONTENTS) and "ticket_id" not in repr(VECTOR_CONTENTS)


# --- the handshake, sans I/O ------------------------------------------------


def pump(client: ClientConnection, server: ServerConnection, rounds: int = 6) -> list:
    """Move bytes both ways until both are quiet; the events, tagged by side."""
    events = []
    for _ in range(rounds):
        if data := server.data_to_send():
            client.receive_data(data)
        while (event := client.next_event()) is not NEED_DATA:
            events.append(("client", event))
        if data := client.data_to_send():
            server.receive_data(data)
        while (event := server.next_event()) is not NEED_DATA:
            events.append(("server", event))
    return events


def full_handshake(identity: ServerIdentity) -> tuple[ClientConnection, ServerConnection]:
    client, server = ClientConnection(), ServerConnection(identity)
    client.receive_data(server.data_to_send())
    assert isinstance(client.next_event(), ServerHello)
    client.accept_server_key()
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(), HandshakeComplete()]
    return client, server


def offered(identity: ServerIdentity, ticket: ClientTicket, **pinned) -> tuple[ClientConnection, ServerConnection]:
    """A client that offers ``ticket`` and the server it offers it to, stopped at ResumptionOffered."""
    client = ClientConnection(ticket=ticket, ephemeral_key=pinned.get("client_key"))
    server = ServerConnection(identity, ephemeral_key=pinned.get("server_key"))
    client.receive_data(server.data_to_send())
    client.next_event()
    client.accept_server_key()
    assert client.state is ConnectionState.AWAIT_RESUMPTION
    server.receive_data(client.data_to_send())
    assert server.next_event() == ResumptionOffered(ticket.ticket)
    return client, server


@pytest.fixture
def identity(identity_key):
    return ServerIdentity.of(identity_key)


@pytest.fixture
def held(identity) -> ClientTicket:
    """What a client holds after a full handshake (the ticket's bytes do not
    matter to the connection: the server's caller opens it)."""
    client, server = full_handshake(identity)
    assert client.resumption_secret == server.resumption_secret
    return ClientTicket(b"opaque ticket", client.resumption_secret, identity.fingerprint)


def test_a_resumption_agrees_keys_without_rsa(identity, held, monkeypatch):
    def no_rsa(*args, **kwargs):
        raise AssertionError("RSA used in a resumption")

    monkeypatch.setattr(crypto_utils, "unwrap_key", no_rsa)
    monkeypatch.setattr(crypto_utils, "wrap_key", no_rsa)
    client, server = offered(identity, held)
    assert server.binder_matches(held.secret)
    server.resume(held.secret)
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(resumed=True)] * 2
    assert client.resumed and server.resumed
    assert client.session_id == server.session_id
    assert client.resumption_secret == server.resumption_secret != held.secret  # a new one for the next ticket
    client.send(protocol.ChatLine("hi"))
    server.receive_data(client.data_to_send())
    assert server.next_event() == protocol.ChatLine("hi")


def test_a_resumption_is_forward_secret_the_shares_go_into_the_keys(identity, held, monkeypatch):
    """Both sides key the session from the ticket's secret and the X25519
    shared secret of the pinned shares: drop the latter anywhere, and a
    recording plus the ticket's secret would open the session."""
    calls = []
    real = crypto_utils.derive_session_keys

    def spy(*args, **kwargs):
        calls.append((args, kwargs, keys := real(*args, **kwargs)))
        return keys

    monkeypatch.setattr(crypto_utils, "derive_session_keys", spy)
    client_key, server_key = EphemeralKey(CLIENT_X25519), EphemeralKey(SERVER_X25519)
    shared = EphemeralKey(CLIENT_X25519).agree(EphemeralKey(SERVER_X25519).public_bytes)
    client, server = offered(identity, held, client_key=client_key, server_key=server_key)
    server.resume(held.secret)
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(resumed=True)] * 2
    resumed = [(args, keys) for args, kwargs, keys in calls if kwargs.get("resumed")]
    assert [args[:2] for args, _ in resumed] == [(held.secret, shared)] * 2  # the client's and the server's
    for args, keys in resumed:
        assert keys != real(held.secret, b"", args[2], resumed=True)  # the share changes the keys
    assert client.resumption_secret == sealed.resumption_secret(held.secret, shared, client.session_id)


def test_a_declined_resumption_goes_on_as_a_full_handshake(identity, held):
    client, server = offered(identity, held)
    server.decline_resumption()
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(), HandshakeComplete()]
    assert not client.resumed and not server.resumed
    assert client.session_id == server.session_id
    assert client.resumption_secret == server.resumption_secret


def test_a_binder_made_without_the_secret_does_not_match(identity, held):
    impostor = ClientTicket(held.ticket, bytes(32), held.server_fingerprint)
    client, server = offered(identity, impostor)
    assert not server.binder_matches(held.secret)
    with pytest.raises(LocalProtocolError):
        server.resume(held.secret)
    assert server.state is ConnectionState.AWAIT_TICKET_CHECK  # unchanged: it can still decline
    server.decline_resumption()
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(), HandshakeComplete()]


def test_a_ticket_is_offered_only_to_the_key_it_was_given_under(identity, held, impostor_key):
    client, server = ClientConnection(ticket=held), ServerConnection(ServerIdentity.of(impostor_key))
    client.receive_data(server.data_to_send())
    client.next_event()
    client.accept_server_key()
    assert client.state is ConnectionState.AWAIT_SERVER_HI  # a key exchange went out, not the ticket
    assert [event for _, event in pump(client, server)] == [HandshakeComplete(), HandshakeComplete()]


@pytest.mark.parametrize("call", ["resume", "decline_resumption", "binder_matches"])
def test_resumption_calls_out_of_turn_are_refused_and_change_nothing(identity, call):
    server = ServerConnection(identity)
    with pytest.raises(LocalProtocolError):
        getattr(server, call)(*([bytes(32)] if call != "decline_resumption" else []))
    assert server.state is ConnectionState.AWAIT_KEY_EXCHANGE


def test_a_second_resumption_after_a_decline_is_a_protocol_error(identity, held):
    _, server = offered(identity, held)
    server.decline_resumption()
    again = protocol.handshake.resumption(bytes(32), bytes(32), b"t", bytes(32))
    server.receive_data(len(again).to_bytes(4, "big") + again)
    with pytest.raises(protocol.RemoteProtocolError):
        server.next_event()
    assert server.state is ConnectionState.ERROR


def test_the_resumption_frames_read_back():
    body = protocol.handshake.resumption(bytes([1]) * 32, bytes([2]) * 32, b"ticket", bytes([3]) * 32)
    read = protocol.handshake.read_resumption(body)
    assert (read.share, read.ticket, read.binder) == (bytes([2]) * 32, b"ticket", bytes([3]) * 32)
    assert read.before_binder == body[:-32]
    for cut in (body[:-1], body[:40], body + b"x"):
        with pytest.raises(protocol.RemoteProtocolError):
            protocol.handshake.read_resumption(cut)
    assert protocol.handshake.is_resumption_declined(bytes([0x51, 0x01]))
    with pytest.raises(protocol.RemoteProtocolError):
        protocol.handshake.is_resumption_declined(bytes([0x51, 0x02]))


# --- the server's ticket keys -----------------------------------------------


class Clock:
    def __init__(self, now: float = 1_765_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redeem(service: tickets.TicketService, identity: ServerIdentity, issued: NewTicket, secret: bytes):
    _, server = offered(identity, ClientTicket(issued.ticket, secret, identity.fingerprint))
    return service.redeem(server, issued.ticket)


def test_a_ticket_is_taken_once(identity, held):
    service = tickets.TicketService(identity, clock=Clock())
    issued = service.issue(held.secret, "SHA256:" + "B" * 43)
    assert issued.lifetime == tickets.LIFETIME
    contents = redeem(service, identity, issued, held.secret)
    assert contents is not None and contents.fingerprint == "SHA256:" + "B" * 43
    assert redeem(service, identity, issued, held.secret) is None  # replayed


def test_a_ticket_whose_binder_fails_is_not_spent(identity, held):
    service = tickets.TicketService(identity, clock=Clock())
    issued = service.issue(held.secret, None)
    assert redeem(service, identity, issued, bytes(32)) is None  # someone who saw it go by
    assert redeem(service, identity, issued, held.secret) is not None  # its holder still can


def test_ticket_keys_rotate_and_the_previous_ones_still_open(identity, held):
    clock = Clock()
    service = tickets.TicketService(identity, rotation=3600, lifetime=3 * 3600, clock=clock)
    first = service.issue(held.secret, None)
    clock.now += 3600  # a new key...
    second = service.issue(held.secret, None)
    assert first.ticket[:8] != second.ticket[:8]
    assert redeem(service, identity, first, held.secret) is not None  # ...and the one before still opens
    late = service.issue(held.secret, None)
    clock.now += 4 * 3600  # past the lifetime: the key is gone, and the ticket had expired anyway
    service.issue(held.secret, None)
    assert redeem(service, identity, late, held.secret) is None


def test_ticket_keys_survive_a_restart_in_a_private_file(identity, held, tmp_path):
    path = tmp_path / "data" / "server_key.tickets"
    clock = Clock()
    issued = tickets.TicketService(identity, tickets.FileTicketKeys(path, clock), clock=clock).issue(held.secret, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(VECTOR_KEY).hex() not in path.read_text()  # (a real random key, not a test one)
    restarted = tickets.TicketService(identity, tickets.FileTicketKeys(path, clock), clock=clock)
    assert redeem(restarted, identity, issued, held.secret) is not None


def test_deleting_the_ticket_key_file_revokes_at_once_and_for_good(identity, held, tmp_path):
    """A running server reads the file again when it changes: deleted, no
    ticket of before opens, and the next key made does not bring them back."""
    path, clock = tmp_path / "server_key.tickets", Clock()
    service = tickets.TicketService(identity, tickets.FileTicketKeys(path, clock), clock=clock)
    before, other = service.issue(held.secret, None), service.issue(held.secret, None)
    path.unlink()
    assert redeem(service, identity, before, held.secret) is None  # revoked in the running server
    after = service.issue(held.secret, None)  # a new key, written alone
    restarted = tickets.TicketService(identity, tickets.FileTicketKeys(path, clock), clock=clock)
    assert redeem(restarted, identity, other, held.secret) is None  # not resurrected
    path.write_text("not a key line\n")
    assert redeem(service, identity, after, held.secret) is None  # a file it cannot read revokes too


class FakeShared:
    """The cluster's side of SharedTicketKeys: a dict for Redis."""

    def __init__(self) -> None:
        self.keys: dict[int, bytes] = {}

    def ticket_key(self, period: int, candidate: bytes | None, ttl: int) -> bytes | None:
        if candidate is not None:
            self.keys.setdefault(period, candidate)
        return self.keys.get(period)

    def spend_ticket(self, ticket_id: bytes, ttl: int) -> bool:
        return True


def test_deleted_redis_ticket_keys_revoke_once_the_servers_restart(identity, held):
    """Each server keeps the keys it read (SECURITY.md: delete, then restart
    every server); none writes them back."""
    shared, clock = FakeShared(), Clock()
    running = tickets.TicketService(identity, tickets.SharedTicketKeys(shared, clock=clock), clock=clock)
    issued = running.issue(held.secret, None)
    shared.keys.clear()
    running.issue(held.secret, None)  # the key it holds, not written back
    assert shared.keys == {}
    restarted = tickets.TicketService(identity, tickets.SharedTicketKeys(shared, clock=clock), clock=clock)
    assert redeem(restarted, identity, issued, held.secret) is None


def test_a_ticket_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "server_key.tickets"
    path.write_text("")
    os.chmod(path, 0o644)
    with pytest.raises(keystore.KeyFileError):
        tickets.FileTicketKeys(path)
    path.chmod(0o600)
    path.write_text("not a key line\n")
    with pytest.raises(keystore.KeyFileError, match="line 1"):
        tickets.FileTicketKeys(path)


def test_the_client_keeps_tickets_in_a_private_file_only_when_asked(tmp_path):
    ticket = ClientTicket(b"t" * 100, bytes([5]) * 32, "SHA256:" + "C" * 43)
    clock, here, ann = Clock(), "127.0.0.1:1", "SHA256:" + "A" * 43
    in_memory = TicketWallet(clock=clock)
    in_memory.put(here, ann, ticket, 60)
    assert in_memory.peek(here, ann) == in_memory.peek(here, ann) == ticket  # looked at, still held
    in_memory.spend(here, ann, ticket)
    assert in_memory.peek(here, ann) is None  # single use
    path = tmp_path / "tickets"
    TicketWallet(path, clock).put(here, ann, ticket, 60)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wallet = TicketWallet(path, clock)
    assert wallet.peek(here, ann) == ticket  # the next run has it
    wallet.spend(here, ann, ticket)
    assert TicketWallet(path, clock).peek(here, ann) is None  # and spent it
    TicketWallet(path, clock).put(here, ann, ticket, 60)
    clock.now += 61
    assert TicketWallet(path, clock).peek(here, ann) is None  # expired


def test_a_kept_ticket_is_offered_only_by_the_person_who_got_it(tmp_path, identity):
    """A ticket carries the key proved when it was got: offered with another
    --identity, it would make that person the first one."""
    ann, bob = PersonKey.generate(), PersonKey.generate()
    path = tmp_path / "tickets"
    TicketWallet(path).put("here", ann.fingerprint, ClientTicket(b"t", bytes(32), identity.fingerprint), 60)
    assert offers(TicketWallet(path), bob, identity) is False
    assert offers(TicketWallet(path), None, identity) is False  # nor as a guest
    assert offers(TicketWallet(path), ann, identity) is True
    assert TicketWallet(path).peek("here", ann.fingerprint) is None  # offered: spent


def offers(wallet: TicketWallet, person: PersonKey | None, identity: ServerIdentity) -> bool:
    """Whether a ServerLink of ``person`` offers a ticket from ``wallet`` to
    the server of ``identity`` (sans I/O: the hello fed to its connection)."""
    near, far = socket.socketpair()
    with near, far:
        link = ServerLink(near)
        link.identity = person
        link.use_tickets(wallet, "here")
        link.conn.receive_data(ServerConnection(identity).data_to_send())
        assert isinstance(link.conn.next_event(), ServerHello)
        link.accept_server_key()
        return link.conn.state is ConnectionState.AWAIT_RESUMPTION


def test_a_ticket_never_offered_is_not_spent(identity):
    """A refusal (a full server) or a key not trusted comes before the
    ticket goes out: it stays for the next try."""
    ann, wallet = PersonKey.generate(), TicketWallet()
    ticket = ClientTicket(b"t", bytes(32), identity.fingerprint)
    wallet.put("here", ann.fingerprint, ticket, 60)
    near, far = socket.socketpair()
    with near, far:
        link = ServerLink(near)
        link.identity = ann
        link.use_tickets(wallet, "here")
        refusal = protocol.handshake.refusal("full")
        link.conn.receive_data(refusal)
        assert isinstance(link.conn.next_event(), protocol.ServerRefused)
    assert wallet.peek("here", ann.fingerprint) == ticket
    assert offers(wallet, ann, identity) is True  # a key check that raised would not get here
    assert wallet.peek("here", ann.fingerprint) is None


def test_the_ticket_answer_is_not_awaited_after_the_welcome():
    """An older server's "Message not understood" for the ticket request may
    be dropped (flood control): after the Welcome, such an error is another's,
    and shown."""
    near, far = socket.socketpair()
    with near, far:
        link = ServerLink(near)
        link.wallet, link._ticket_asked = TicketWallet(), True
        not_understood = protocol.ErrorNotice("Message not understood (type 0x99).")
        assert link._keep_ticket(protocol.Welcome("Ann")) is False
        assert link._keep_ticket(not_understood) is False
        link._ticket_answered = False
        assert link._keep_ticket(not_understood) is True  # before the Welcome: the ticket's answer


# --- live: a real server ----------------------------------------------------


def connect_with(own, ticket: ClientTicket | None, identity_person: PersonKey):
    """A test client of ``own`` (an OwnServer, or a port) that offers
    ``ticket``, through the handshake and the server's first words (a proof
    if asked), then asks for a new ticket."""
    address = ("127.0.0.1", own) if isinstance(own, int) else own.server.server_address
    client = ChatTestClient(address, ClientConnection(ticket=ticket))
    if not isinstance(own, int):
        own.clients.append(client)
    assert isinstance(client.next_event(), ServerHello)
    client.conn.accept_server_key()
    client.flush()
    done = client.expect(HandshakeComplete)
    client.expect(protocol.RateLimit)
    client.expect(protocol.UsernameDeadline)
    event = client.next_event()
    proved = isinstance(event, ProofRequest)
    if proved:
        client.send(key_proof(identity_person, client.conn.session_id))
        event = client.next_event()
    assert isinstance(event, protocol.Stamps)  # the history's offer, not taken here
    assert isinstance(client.next_event(), protocol.MultilineOffer)  # nor the blocks'
    event = client.next_event()
    if isinstance(event, protocol.Rooms):  # nor the rooms' (a cluster offers none)
        event = client.next_event()
    assert isinstance(event, UsernameRequest)
    client.send(TicketRequest())
    new = client.expect(NewTicket)
    assert new.lifetime == tickets.LIFETIME
    kept = ClientTicket(new.ticket, client.conn.resumption_secret, client.conn.server_fingerprint)
    return client, done.resumed, proved, kept


def test_live_a_reconnection_resumes_without_rsa_and_keeps_the_key_proved(own_server, monkeypatch):
    own_server.start()
    ann = PersonKey.generate()
    first, resumed, proved, ticket = connect_with(own_server, None, ann)
    assert (resumed, proved) == (False, True)
    first.close()
    unwraps = []
    real_unwrap = crypto_utils.unwrap_key
    monkeypatch.setattr(crypto_utils, "unwrap_key", lambda *a: unwraps.append(1) or real_unwrap(*a))
    gated: list[str] = []  # calls handed to the handshake thread: for RSA only
    monkeypatch.setattr(own_server.server.handshakes, "run", lambda call: gated.append("handed over") or call())
    second, resumed, proved, ticket = connect_with(own_server, ticket, ann)
    assert (resumed, proved, unwraps) == (True, False, [])  # no RSA, no new proof: the ticket carried the key
    assert gated == []  # issue 22: its reader read the offer itself, with no hand-off (thread switches) at all
    second.join("Ann")
    second.send(WhoisRequest("Ann"))
    assert second.expect(WhoisReply).fingerprint == ann.fingerprint
    assert connect_with(own_server, ticket, ann)[1] is True  # the new ticket works in turn


def test_live_a_replayed_forged_or_foreign_ticket_falls_back_to_a_full_handshake(own_server, impostor_key):
    own_server.start()
    ann = PersonKey.generate()
    _, _, _, ticket = connect_with(own_server, None, ann)
    assert connect_with(own_server, ticket, ann)[1] is True
    replayed, resumed, proved, _ = connect_with(own_server, ticket, ann)
    assert (resumed, proved) == (False, True)  # replay: a full handshake, asked for a proof as ever
    replayed.join("Ann")
    forged = ClientTicket(ticket.ticket[:-1] + bytes([ticket.ticket[-1] ^ 1]), ticket.secret, ticket.server_fingerprint)
    assert connect_with(own_server, forged, ann)[1] is False
    # Sealed by another server (its own ticket keys, its own server key):
    other = tickets.TicketService(ServerIdentity.of(impostor_key))
    foreign = ClientTicket(other.issue(ticket.secret, None).ticket, ticket.secret, ticket.server_fingerprint)
    assert connect_with(own_server, foreign, ann)[1] is False


def test_live_an_expired_ticket_falls_back_and_a_guest_stays_a_guest(own_server):
    clock = Clock()
    own_server.start()
    own_server.server.tickets = tickets.TicketService(own_server.server.identity, clock=clock)
    client = own_server.client()  # a proof of a key made for the connection
    client.send(TicketRequest())
    new = client.expect(NewTicket)
    ticket = ClientTicket(new.ticket, client.conn.resumption_secret, client.conn.server_fingerprint)
    clock.now += tickets.LIFETIME
    assert connect_with(own_server, ticket, PersonKey.generate())[1] is False
    guest = own_server.client(handshake=False)
    guest.handshake(guest=True)
    guest.send(TicketRequest())
    new = guest.expect(NewTicket)
    ticket = ClientTicket(new.ticket, guest.conn.resumption_secret, guest.conn.server_fingerprint)
    _, resumed, proved, _ = connect_with(own_server, ticket, PersonKey.generate())
    assert (resumed, proved) == (True, True)  # a guest's ticket carries no key: the proof is asked for anew


def test_live_a_server_without_tickets_says_so_and_declines(own_server):
    own_server.start()
    own_server.server.tickets = None
    client = own_server.client()
    client.send(TicketRequest())
    assert client.expect(NewTicket) == NewTicket(0, b"")
    client.send(TicketRequest())
    assert "once per connection" in client.expect(protocol.ErrorNotice).text


def test_live_the_client_link_keeps_its_ticket_and_resumes(own_server):
    """The program's ServerLink: a ticket asked for before the username, kept
    in the wallet (not shown), and offered on the next connection."""
    own_server.start()
    wallet, ann = TicketWallet(), PersonKey.generate()
    for expected in (False, True):
        link = ServerLink(socket.create_connection(own_server.server.server_address, timeout=5))
        link.identity = ann
        link.use_tickets(wallet, "here")
        hello = link.conn.next_event()
        while hello is NEED_DATA:
            link.conn.receive_data(link.sock.recv(65536))
            hello = link.conn.next_event()
        link.accept_server_key()
        assert link.handshake_event() == HandshakeComplete(resumed=expected)
        while not isinstance(event := link.next_event(), UsernameRequest):
            if isinstance(event, ProofRequest):
                link.prove_identity()
        link.request_ticket()
        link.send(protocol.Username(f"Bob{int(expected)}"))
        assert isinstance(link.next_event(), protocol.Welcome)  # the NewTicket before it was kept, not returned
        assert wallet.peek("here", ann.fingerprint) is not None
        link.sock.close()


def test_live_a_cluster_shares_tickets_and_their_single_use(identity_key, redis_server):
    from socket_chat.server import cluster
    from tests.helpers import OwnServer

    servers = []
    try:
        for _ in range(2):
            own = OwnServer(identity_key)
            own.start(cluster=cluster.RedisCluster.connect(redis_server.url))
            own.server.tickets = tickets.TicketService(
                own.server.identity, tickets.SharedTicketKeys(own.server.room.cluster)
            )
            servers.append(own)
        ann = PersonKey.generate()
        _, _, _, ticket = connect_with(servers[0], None, ann)
        assert connect_with(servers[1], ticket, ann)[1] is True  # given by one, taken by the other
        assert connect_with(servers[0], ticket, ann)[1] is False  # and spent for both
    finally:
        for own in servers:
            own.cleanup()


@pytest.mark.slow
def test_bench_resume_small_run_resumes_everyone_and_costs_the_server_less():
    """``python -m bench.resume`` at a small scale (20 connections of each
    kind, a storm of 40; about 4 s): every resumed connection and every
    client of the storm with tickets resumed, none without, and resumption
    cost the server less CPU (a comparison within one run, not a timing)."""
    from bench import resume

    (full, resumed), (without, with_tickets) = resume.measure(count=20, storm=40, timeout=60.0)
    assert (full.resumed, resumed.resumed) == (False, True)
    assert len(full.times_ms) == len(resumed.times_ms) == 20
    assert (without.resumed, with_tickets.resumed) == (0, 40)
    assert resumed.server_cpu < full.server_cpu
    assert "Resumed / full" in resume.table([full, resumed], [without, with_tickets])


@pytest.mark.slow
def test_server_py_keeps_its_ticket_keys_beside_its_key_across_a_restart(tmp_path):
    """server.py twice on one key (about 2 s): a ticket from the first
    process resumes on the second; the key file is 0600 beside the key."""
    from tests import procs

    ann = PersonKey.generate()
    ticket = None
    for expected in (False, True):
        server = procs.start_server(tmp_path)
        try:
            client, resumed, _, ticket = connect_with(server.port, ticket, ann)
            assert resumed is expected
            client.close()
        finally:
            server.signal(signal.SIGINT)
            server.wait()
            server.kill()
    kept = tmp_path / "server-key" / "test-only-server-key.tickets"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_the_server_sees_a_resumption_coming_from_its_first_byte(identity, held):
    """``resumption_coming``: what lets a server read a resumption's offer
    where it likes (no RSA), told from the frame's first byte, before the
    frame is whole; a key exchange is not one, nor anything once read."""
    for ticket, coming in ((held, True), (None, False)):
        client, server = ClientConnection(ticket=ticket), ServerConnection(identity)
        client.receive_data(server.data_to_send())
        client.next_event()
        client.accept_server_key()
        first = client.data_to_send()
        server.receive_data(first[: HEADER.size])
        assert server.resumption_coming is False  # the body has not begun
        server.receive_data(first[HEADER.size : HEADER.size + 1])
        assert server.resumption_coming is coming
        server.receive_data(first[HEADER.size + 1 :])
        assert server.resumption_coming is coming
        server.next_event()
        assert server.resumption_coming is False
