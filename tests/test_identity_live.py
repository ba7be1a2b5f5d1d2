"""Keys for people over loopback: a live server takes key proofs and guests
(PROTOCOL.md, "Key proof"), refuses what does not check out with its line,
and the real client proves its key, or chats as a guest with a server that
asks for none."""

from __future__ import annotations

import base64
import logging

import pytest

from socket_chat.chat import member as chat_member
from socket_chat.chat import names
from socket_chat.chat.member import GUESTS_REFUSED, KEY_UNSUPPORTED, PROOF_FAILED
from socket_chat.crypto import KEY_TYPE, PersonKey, keystore
from socket_chat.protocol import (
    ChatMessage,
    Goodbye,
    KeyProof,
    NickChanged,
    NickRequest,
    UserJoined,
    UserList,
    UserListRequest,
    Username,
)
from socket_chat.server import cluster
from tests.helpers import key_proof
from tests.test_cluster import cluster_of as cluster_of  # servers sharing a redis-server on loopback
from tests.test_e2e_features import open_client as open_client  # client.py processes, killed at the end


def listed(client) -> list[str]:
    client.send(UserListRequest())
    return [name for name, _ in client.expect(UserList).members()]


def test_a_proved_key_is_the_members_and_a_guest_is_marked_in_users(own_server):
    own_server.start()
    ann = own_server.client("Ann")  # proves a key, as a newer client
    bob = own_server.client(handshake=False)
    bob.handshake(guest=True)  # as an older client: no proof
    bob.join("bob")
    assert ann.expect(UserJoined) == UserJoined("bob")
    assert own_server.server.room.find("Ann").fingerprint == ann.identity.fingerprint
    assert own_server.server.room.find("bob").fingerprint is None
    assert listed(ann) == ["Ann", "bob (guest)"]
    bob.say("still chatting")  # the older client chats as before
    assert ann.expect(ChatMessage) == ChatMessage("bob", "still chatting")


def test_a_proof_replayed_from_another_connection_is_refused_and_logged_by_address(own_server, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    own_server.start()
    ann = own_server.client(handshake=False)
    ann.handshake(guest=True)
    stolen = key_proof(PersonKey.generate(), ann.conn.session_id)  # valid for Ann's connection only
    mallory = own_server.client(handshake=False)
    mallory.handshake(guest=True)
    mallory.send(stolen)
    assert mallory.expect(Goodbye) == Goodbye(PROOF_FAILED)
    mallory.wait_closed()
    port = mallory.sock.getsockname()[1]
    assert f"127.0.0.1:{port}: {PROOF_FAILED}" in caplog.text
    for material in (stolen.public_key, stolen.signature):  # no key material, in any form
        assert material.hex() not in caplog.text and base64.b64encode(material).decode() not in caplog.text


@pytest.mark.parametrize(
    ("proof", "goodbye"),
    [
        (KeyProof(KEY_TYPE, PersonKey.from_seed(bytes(32)).public_bytes, bytes(64)), PROOF_FAILED),
        (KeyProof("ssh-dss", bytes(32), bytes(64)), KEY_UNSUPPORTED.format(reason="its type is not ssh-ed25519")),
        (
            KeyProof(KEY_TYPE, bytes(60_000), bytes(64)),
            KEY_UNSUPPORTED.format(reason="an ssh-ed25519 key is 32 bytes, and this one is 60000"),
        ),
    ],
    ids=["bad-signature", "unknown-type", "oversized-key"],
)
def test_a_proof_that_does_not_check_out_closes_the_connection_with_its_line(own_server, proof, goodbye):
    own_server.start()
    watcher = own_server.client("Watcher")
    mallory = own_server.client(handshake=False)
    mallory.handshake(guest=True)
    mallory.send(proof)
    assert mallory.expect(Goodbye) == Goodbye(goodbye)
    mallory.wait_closed()
    assert listed(watcher) == ["Watcher"]  # nobody joined, the others go on


def test_guests_no_refuses_a_client_without_a_key_and_says_how_to_get_in(own_server):
    own_server.start(guests=False)
    bob = own_server.client(handshake=False)
    bob.handshake(guest=True)
    bob.send(Username("bob"))
    assert bob.expect(Goodbye) == Goodbye(GUESTS_REFUSED)
    bob.wait_closed()
    ann = own_server.client("Ann")  # with a key: welcome
    assert listed(ann) == ["Ann"]


# --- the real client -----------------------------------------------------------


def test_the_client_proves_its_identity_key(own_server, open_client, tmp_path):
    own_server.start()
    watcher = own_server.client("Watcher")
    key, _ = keystore.load_or_create_person_key(tmp_path / "ann.pem")
    open_client(own_server, "ann", "--name", "Ann", "--identity", str(tmp_path / "ann.pem"))
    assert watcher.expect(UserJoined) == UserJoined("Ann")
    assert own_server.server.room.find("Ann").fingerprint == key.fingerprint
    assert listed(watcher) == ["Ann", "Watcher"]


def test_a_new_client_with_a_server_that_takes_no_proofs_chats_as_a_guest(own_server, open_client, monkeypatch):
    # A server of before keys for people: it never sends ProofRequest.
    start = chat_member.MemberSession.start
    monkeypatch.setattr(chat_member.MemberSession, "start", lambda session, *given, **named: start(session))
    own_server.start()
    watcher = own_server.client("Watcher")
    ann = open_client(own_server, "ann", "--name", "Ann")
    assert watcher.expect(UserJoined) == UserJoined("Ann")
    ann.send("hello from a guest")
    assert watcher.expect(ChatMessage) == ChatMessage("Ann", "hello from a guest")
    assert listed(watcher) == ["Ann (guest)", "Watcher (guest)"]  # no one proves a key here
    ann.send("/quit")
    assert ann.wait() == 0
    assert "Error" not in ann.stdout.text() + ann.stderr.text()  # not a word about proofs


def test_an_identity_key_is_made_0600_on_first_use(own_server, open_client, tmp_path):
    own_server.start()
    watcher = own_server.client("Watcher")
    open_client(own_server, "zoe", "--name", "Zoe")
    assert watcher.expect(UserJoined) == UserJoined("Zoe")
    path = tmp_path / "data-zoe" / "socket-chat" / "identity_key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    key, made = keystore.load_or_create_person_key(path)
    assert not made and own_server.server.room.find("Zoe").fingerprint == key.fingerprint


# --- a cluster ---------------------------------------------------------------


def test_every_server_of_a_cluster_marks_the_guests_of_the_others(cluster_of, redis_server):
    import redis

    a, b = cluster_of(2)
    alice = a.client("alice")
    bob = b.client(handshake=False)
    bob.handshake(guest=True)
    bob.join("bob")
    assert alice.expect(UserJoined) == UserJoined("bob")
    assert listed(alice) == ["alice", "bob (guest)"]
    alice.send(NickRequest("Alice2"))  # a rename keeps the key with the name
    assert alice.expect(NickChanged) == NickChanged("alice", "Alice2")
    with redis.Redis.from_url(redis_server.url) as raw:
        assert raw.hget(cluster.NAME_PREFIX + names.key("Alice2"), "key") == alice.identity.fingerprint.encode()
        assert raw.hget(cluster.NAME_PREFIX + names.key("bob"), "key") == b""  # a guest
    assert bob.expect(NickChanged) == NickChanged("alice", "Alice2")
    bob.send(UserListRequest())
    assert [name for name, _ in bob.expect(UserList).members()] == ["Alice2", "bob (guest)"]
