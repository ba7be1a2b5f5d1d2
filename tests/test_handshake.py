"""The handshake (PROTOCOL.md section 2) between a client and a server over
the fake wire: in order, with pinned bytes, turned away by a refusal, and
under attack (swapped shares, an impostor, altered randoms, bad wrapped
secrets, malformed hellos and key exchanges)."""

from __future__ import annotations

import random
import struct

import pytest
from Cryptodome.PublicKey import RSA

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import TAG_SIZE, EphemeralKey
from socket_chat.protocol import (
    NEED_DATA,
    ClientConnection,
    ConnectionState,
    HandshakeComplete,
    LocalProtocolError,
    Notice,
    RemoteProtocolError,
    ServerConnection,
    ServerHello,
    ServerRefused,
    UsernameRequest,
    refusal,
)
from tests.wire import (
    ATTACKER_X25519,
    ERROR,
    FEEDS,
    HEADER_SIZE,
    LENGTH_AT,
    OPEN,
    RANDOM_AT,
    SERVER_X25519,
    SHARE_AT,
    VERSION_AT,
    ConnectionPair,
    advance,
    assert_failed,
    eavesdropped_keys,
    expected_hello,
    flip_byte,
    forge,
    frame,
    replace,
    seeded_rng,
    split_frames,
)


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
