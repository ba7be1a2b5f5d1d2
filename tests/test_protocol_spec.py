"""PROTOCOL.md and the code agree: the test vector is read from the document
itself, so neither can change without the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import EphemeralKey, RecordOpener, RecordSealer

SPEC = Path(__file__).parent.parent / "PROTOCOL.md"


def read_vector() -> dict[str, bytes]:
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 7. Test vector", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    pairs = (line.split(" = ") for line in block.strip().splitlines())
    return {name: bytes.fromhex(value) for name, value in pairs}


@pytest.fixture(scope="module")
def vector():
    return read_vector()


@pytest.fixture(scope="module")
def keys(vector):
    return crypto_utils.derive_session_keys(vector["rsa_secret"], vector["x25519_shared"], vector["transcript_hash"])


def seal_frame(sealer: RecordSealer, plaintext: bytes) -> bytes:
    header = (len(plaintext) + crypto_utils.TAG_SIZE).to_bytes(4, "big")
    return header + sealer.seal(plaintext, aad=header)


def test_vector_has_every_value(vector):
    assert len(vector) == 16
    assert all(vector.values())


def test_x25519_public_keys_and_shared_secret(vector):
    client = EphemeralKey(vector["client_x25519_private"])
    server = EphemeralKey(vector["server_x25519_private"])
    assert client.public_bytes == vector["client_x25519_public"]
    assert server.public_bytes == vector["server_x25519_public"]
    assert client.agree(server.public_bytes) == vector["x25519_shared"]
    assert server.agree(client.public_bytes) == vector["x25519_shared"]


def test_key_schedule(vector, keys):
    assert keys.client_to_server_key == vector["client_to_server_key"]
    assert keys.client_to_server_iv == vector["client_to_server_iv"]
    assert keys.server_to_client_key == vector["server_to_client_key"]
    assert keys.server_to_client_iv == vector["server_to_client_iv"]


def test_key_confirmation_records(vector, keys):
    server = RecordSealer(keys.server_to_client_key, keys.server_to_client_iv)
    client = RecordSealer(keys.client_to_server_key, keys.client_to_server_iv)
    assert seal_frame(server, b"HI") == vector["server_record_0_HI"]
    assert seal_frame(client, b"HI") == vector["client_record_0_HI"]
    assert seal_frame(server, b"OK") == vector["server_record_1_OK"]


def test_first_application_record(vector, keys):
    assert protocol.encode_message(protocol.ChatLine("Hi")) == vector["chat_line_Hi"]
    opener = RecordOpener(keys.client_to_server_key, keys.client_to_server_iv)
    for name in ("client_record_0_HI", "client_record_1_chat_line_Hi"):
        frame = vector[name]
        plaintext = opener.open(frame[4:], aad=frame[:4])
    assert protocol.decode_message(plaintext) == protocol.ChatLine("Hi")


def test_connections_derive_the_vector_keys(vector, identity_key):
    """The connection objects use exactly this schedule: pin both ephemeral
    keys and the RSA secret, and the client's first record is the vector's
    chat line once the transcript is the real one."""
    calls = []

    def client_rng(size: int) -> bytes:
        # The client's first draw is the secret it wraps for the server.
        calls.append(size)
        return vector["rsa_secret"] if len(calls) == 1 else bytes(size)

    server = protocol.ServerConnection(
        protocol.ServerIdentity.of(identity_key), ephemeral_key=EphemeralKey(vector["server_x25519_private"])
    )
    client = protocol.ClientConnection(rng=client_rng, ephemeral_key=EphemeralKey(vector["client_x25519_private"]))
    hello = server.data_to_send()
    client.receive_data(hello)
    client.next_event()
    client.accept_server_key()
    key_exchange = client.data_to_send()
    transcript = crypto_utils.transcript_hash(hello[4:], key_exchange[4:])
    expected = crypto_utils.derive_session_keys(vector["rsa_secret"], vector["x25519_shared"], transcript)
    server.receive_data(key_exchange)
    server.next_event()
    first_server_record = server.data_to_send()
    opener = RecordOpener(expected.server_to_client_key, expected.server_to_client_iv)
    assert opener.open(first_server_record[4:], aad=first_server_record[:4]) == b"HI"
