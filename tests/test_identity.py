"""Keys for people, without a network: the Ed25519 key and its fingerprint
(ssh-keygen's), the key proof and its refusals, the test vector of
PROTOCOL.md ("Key proof"), the key file and --print-identity, and the rules
of chat/member.py (the proof in NAMING, guests, --guests no)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import struct
from pathlib import Path

import pytest

from socket_chat import crypto, protocol
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import GUESTS_REFUSED, KEY_UNSUPPORTED, PROOF_FAILED, PROOF_TWICE, Stage
from socket_chat.chat.room import Room
from socket_chat.client import __main__ as client_main
from socket_chat.crypto import KEY_TYPE, PersonKey, ProofFailedError, UnsupportedKeyError, keystore
from socket_chat.crypto.person import proof_message, ssh_key_blob
from tests.helpers import key_proof
from tests.test_member import Person, joined

SPEC = Path(__file__).parent.parent / "PROTOCOL.md"
#: RFC 8032 section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SESSION = hashlib.sha256(b"one connection").digest()
OTHER_SESSION = hashlib.sha256(b"another connection").digest()


@pytest.fixture(scope="module")
def person() -> PersonKey:
    return PersonKey.from_seed(RFC8032_SEED)


@pytest.fixture
def room() -> Room:
    return Room(history_size=0)


# --- the key and its fingerprint ---------------------------------------------


def test_the_fingerprint_is_what_ssh_keygen_prints_for_the_key(person):
    # The RFC 8709 blob, built here by hand: string "ssh-ed25519", string key.
    blob = struct.pack("!I", 11) + b"ssh-ed25519" + struct.pack("!I", 32) + person.public_bytes
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert ssh_key_blob(person.public_bytes) == blob
    assert person.fingerprint == expected
    # `ssh-keygen -lf` of "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea":
    assert person.fingerprint == "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"
    assert base64.b64encode(blob).decode() == "AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"


def test_a_key_never_shows_its_private_bytes(person):
    assert repr(person) == f"<PersonKey {person.fingerprint}>"
    assert RFC8032_SEED.hex() not in repr(person)
    proof = key_proof(person, SESSION)
    assert person.public_bytes.hex() not in repr(proof) and "signature" not in repr(proof)


def test_a_key_written_out_reads_back_as_itself(person):
    assert PersonKey.import_pem(person.export_pem()).public_bytes == person.public_bytes
    with pytest.raises(crypto.KeyFormatError):
        PersonKey.import_pem(b"not a key")
    with pytest.raises(crypto.KeyFormatError):  # an RSA key is not a person's key
        PersonKey.import_pem((Path(__file__).parent / "keys" / "test-only-server-key.pem").read_bytes())


# --- the proof ---------------------------------------------------------------


def test_a_proof_checks_out_on_its_own_connection_only(person):
    signature = person.sign_proof(SESSION)
    assert crypto.verify_proof(KEY_TYPE, person.public_bytes, signature, SESSION) == person.fingerprint
    with pytest.raises(ProofFailedError):
        crypto.verify_proof(KEY_TYPE, person.public_bytes, signature, OTHER_SESSION)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda key, sig: (key, bytes([sig[0] ^ 1]) + sig[1:]),  # a bit of R
        lambda key, sig: (key, sig[:-1] + bytes([sig[-1] ^ 0x40])),  # a bit of S
        lambda key, sig: (key, sig[:63]),  # cut short
        lambda key, sig: (key, b""),
        lambda key, sig: (PersonKey.from_seed(bytes(32)).public_bytes, sig),  # another person's key
    ],
    ids=["R", "S", "short", "empty", "other-key"],
)
def test_a_bad_signature_is_refused(person, spoil):
    key, signature = spoil(person.public_bytes, person.sign_proof(SESSION))
    with pytest.raises(ProofFailedError):
        crypto.verify_proof(KEY_TYPE, key, signature, SESSION)


@pytest.mark.parametrize(
    ("key_type", "public_key", "reason"),
    [
        ("ssh-rsa", bytes(32), "its type is not ssh-ed25519"),
        ("", bytes(32), "its type is not ssh-ed25519"),
        (KEY_TYPE, bytes(33), "an ssh-ed25519 key is 32 bytes, and this one is 33"),
        (KEY_TYPE, bytes(65_535), "an ssh-ed25519 key is 32 bytes, and this one is 65535"),
        (KEY_TYPE, b"", "an ssh-ed25519 key is 32 bytes, and this one is 0"),
        (KEY_TYPE, b"\xff" * 32, "it is not a point of the curve"),
    ],
)
def test_unknown_key_types_and_oversized_keys_are_refused(person, key_type, public_key, reason):
    with pytest.raises(UnsupportedKeyError, match=re.escape(reason)):
        crypto.verify_proof(key_type, public_key, person.sign_proof(SESSION), SESSION)


def read_vector() -> dict[str, str]:
    section = SPEC.read_text(encoding="utf-8").split("### Key proof", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return dict(line.split(" = ") for line in block.strip().splitlines())


def test_the_key_proof_test_vector_in_protocol_md():
    vector = read_vector()
    key = PersonKey.from_seed(bytes.fromhex(vector["identity_seed"]))
    session_id = bytes.fromhex(vector["session_id"])
    assert key.public_bytes.hex() == vector["identity_public"]
    assert ssh_key_blob(key.public_bytes).hex() == vector["ssh_key_blob"]
    assert key.fingerprint == vector["fingerprint"]
    assert proof_message(session_id).hex() == vector["proof_message"]
    assert key.sign_proof(session_id).hex() == vector["signature"]  # Ed25519 is deterministic
    message = protocol.decode_message(bytes.fromhex(vector["key_proof"]))
    assert message == protocol.KeyProof(KEY_TYPE, key.public_bytes, bytes.fromhex(vector["signature"]))
    assert crypto.verify_proof(message.key_type, message.public_key, message.signature, session_id) == key.fingerprint


def test_bytes_fields_round_trip_and_leave_the_old_messages_as_they_were():
    proof = protocol.KeyProof(KEY_TYPE, bytes(range(32)), b"\x00\xff" * 32)
    assert protocol.decode_message(protocol.encode_message(proof)) == proof
    assert protocol.encode_message(protocol.ProofRequest()) == b"\x22"
    assert protocol.encode_message(protocol.ChatLine("Hi")) == bytes.fromhex("0400024869")
    with pytest.raises(TypeError, match="must be bytes"):
        protocol.KeyProof(KEY_TYPE, "text", b"")


# --- the key file and --print-identity ------------------------------------------


def test_print_identity_makes_the_key_0600_and_prints_its_fingerprint(xdg_data_home, capsys):
    assert client_main.main(["--print-identity"]) == 0
    path = xdg_data_home / "socket-chat" / "identity_key.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key, made = keystore.load_or_create_person_key(path)
    out = capsys.readouterr().out
    assert not made and out.splitlines()[0] == key.fingerprint
    assert f"A new identity key was made at {path}" in out and "PRIVATE" not in out
    assert client_main.main(["--print-identity"]) == 0  # the same key, not a new one
    again = capsys.readouterr().out
    assert again.splitlines()[0] == key.fingerprint and f"Your identity key is {path}" in again


@pytest.mark.parametrize(
    ("content", "mode", "said"),
    [
        (b"garbage", 0o600, "Cannot read the identity key"),
        (PersonKey.from_seed(bytes(32)).export_pem(), 0o644, "are too open"),
    ],
    ids=["corrupt", "readable-by-others"],
)
def test_a_corrupt_or_unsafe_identity_file_is_one_clear_line(xdg_data_home, tmp_path, capsys, content, mode, said):
    path = tmp_path / "mine.pem"
    path.write_bytes(content)
    path.chmod(mode)
    assert client_main.main(["--print-identity", "--identity", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_settings_file_may_name_the_identity(tmp_path, monkeypatch):
    conf = tmp_path / "conf" / "socket-chat" / "client.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[client]\nidentity = /keys/mine.pem\n", encoding="utf-8")
    args = client_main.parse_args([], environ={"XDG_CONFIG_HOME": str(tmp_path / "conf")})
    assert args.identity == Path("/keys/mine.pem")


# --- the rules (chat/member.py), without a socket -----------------------------


def started(room, limits: Limits = Limits()) -> Person:
    person = Person(room, limits)
    person.session.start(session_id=SESSION)
    person.heard()
    return person


def goodbye_of(person: Person) -> str | None:
    assert person.session.stage is Stage.ENDED
    return person.session.goodbye


def test_a_proof_accepted_makes_the_member_that_key(room, person, caplog):
    caplog.set_level("INFO", logger="chat.server")
    ann = started(room)
    assert ann.send(key_proof(person, SESSION)) == []  # success is not answered
    ann.send(protocol.Username("Ann"))
    assert ann.session.membership.fingerprint == person.fingerprint
    [listed] = ann.send(protocol.UserListRequest())
    assert listed.members()[0][0] == "Ann"  # no mark
    assert f"192.0.2.7:4000: proved the key {person.fingerprint}" in caplog.text


def test_a_proof_from_another_connection_is_refused(room, person, caplog):
    mallory = started(room)
    mallory.send(key_proof(person, OTHER_SESSION))  # taken from where Ann proved it
    assert goodbye_of(mallory) == PROOF_FAILED
    assert mallory.session.membership is None


def test_a_bad_signature_ends_the_session(room, person):
    proof = key_proof(person, SESSION)
    mallory = started(room)
    mallory.send(protocol.KeyProof(proof.key_type, proof.public_key, bytes(64)))
    assert goodbye_of(mallory) == PROOF_FAILED


@pytest.mark.parametrize(
    ("key_type", "size", "reason"),
    [
        ("ssh-rsa", 32, "its type is not ssh-ed25519"),
        (KEY_TYPE, 4096, "an ssh-ed25519 key is 32 bytes, and this one is 4096"),
    ],
    ids=["unknown-type", "oversized"],
)
def test_unknown_key_types_and_oversized_keys_end_the_session(room, key_type, size, reason):
    mallory = started(room)
    mallory.send(protocol.KeyProof(key_type, bytes(size), bytes(64)))
    assert goodbye_of(mallory) == KEY_UNSUPPORTED.format(reason=reason)
    assert goodbye_of(mallory).endswith("; the connection is closed.")


def test_a_second_proof_ends_the_session(room, person):
    ann = started(room)
    ann.send(key_proof(person, SESSION), key_proof(person, SESSION))
    assert goodbye_of(ann) == PROOF_TWICE


def test_guests_are_let_in_by_default_and_marked_in_the_user_list(room, person):
    ann = started(room)
    ann.send(key_proof(person, SESSION), protocol.Username("Ann"))
    bob = started(room)
    bob.send(protocol.Username("bob"))
    assert bob.session.stage is Stage.CHATTING and bob.session.membership.fingerprint is None
    [listed] = ann.send(protocol.UserListRequest())
    assert [name for name, _ in listed.members()] == ["Ann", "bob (guest)"]
    assert listed.names() == ["Ann", "bob"]  # for completion and /msg


def test_guests_no_refuses_a_username_without_a_proof_saying_how_to_get_in(room, person):
    closed = Limits(guests=False)
    bob = started(room, closed)
    bob.send(protocol.Username("bob"))
    assert goodbye_of(bob) == GUESTS_REFUSED
    assert "newer client" in GUESTS_REFUSED and "operator" in GUESTS_REFUSED
    assert room.find("bob") is None
    ann = started(room, closed)
    ann.send(key_proof(person, SESSION), protocol.Username("Ann"))
    assert ann.session.stage is Stage.CHATTING


def test_a_proof_nobody_asked_for_or_after_joining_is_out_of_place(room, person):
    unasked = Person(room)
    unasked.session.start()  # no session identifier: no ProofRequest went out
    unasked.heard()
    assert unasked.send(key_proof(person, SESSION)) == [protocol.ErrorNotice("Choose a username first.")]
    member = joined(room, "Ann")
    assert member.send(key_proof(person, SESSION)) == [protocol.ErrorNotice("KeyProof is not expected now.")]
    assert member.session.membership.fingerprint is None
