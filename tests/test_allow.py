"""Private servers (``--allow FILE``) without a network: the file's lines
(chat/allow.py), the file read, reloaded and added to
(server/allow_file.py), the rules of chat/member.py (an unknown key or a
guest refused before any name, with nothing of the chat told; a reserved
name kept for its key), and the console's /reload and /invite."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.chat.allow import (
    INVITED_ONLY,
    NAME_RESERVED,
    AllowList,
    AllowListError,
    invitation_line,
    parse_allow_list,
)
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import Stage
from socket_chat.chat.registrations import Registrations, Taken
from socket_chat.chat.room import Room
from socket_chat.crypto import PersonKey
from socket_chat.server.allow_file import AllowFile, AllowFileError
from tests.helpers import key_proof
from tests.test_member import Person

SESSION = hashlib.sha256(b"one connection").digest()
#: PROTOCOL.md's key proof test vector: RFC 8032 TEST 1's key and what ssh-keygen -lf prints for it.
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_FINGERPRINT = "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"
ANN = PersonKey.from_seed(bytes(range(32)))
BOB = PersonKey.from_seed(bytes(range(1, 33)))
MALLORY = PersonKey.from_seed(bytes(range(2, 34)))


def openssh_line(public_key: bytes, key_type: bytes = b"ssh-ed25519") -> str:
    """An OpenSSH public key's two first words, built here from RFC 8709's blob."""
    blob = struct.pack("!I", len(key_type)) + key_type + struct.pack("!I", len(public_key)) + public_key
    return f"{key_type.decode()} {base64.b64encode(blob).decode()}"


def fingerprint_of(public_key: bytes) -> str:
    """ssh-keygen's fingerprint, computed here, not by the code under test."""
    blob = struct.pack("!I", 11) + b"ssh-ed25519" + struct.pack("!I", 32) + public_key
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --- the lines ---------------------------------------------------------------


def test_fingerprints_keys_names_and_comments_are_read():
    allowed = parse_allow_list(
        "# the team\n"
        "\n"
        f"{ANN.fingerprint} Ann Smith   # laptop\n"
        f"  {openssh_line(BOB.public_bytes)}   # bob@desk, no name\n"
        f"{openssh_line(RFC8032_PUBLIC)} vector\n"
    )
    assert [(i.fingerprint, i.name, i.comment, i.line) for i in allowed.invitations] == [
        (ANN.fingerprint, "Ann Smith", "laptop", 3),
        (fingerprint_of(BOB.public_bytes), None, "bob@desk, no name", 4),
        (RFC8032_FINGERPRINT, "vector", "", 5),
    ]
    assert len(allowed) == 3
    assert allowed.admits(BOB.fingerprint) and allowed.admits(RFC8032_FINGERPRINT)
    assert not allowed.admits(MALLORY.fingerprint) and not allowed.admits(None)


def test_a_key_on_several_lines_reserves_each_name_and_a_name_stays_with_its_key():
    allowed = parse_allow_list(f"{ANN.fingerprint} Ann\n{ANN.fingerprint} Annie\n{ANN.fingerprint} ann\n")
    assert len(allowed) == 1
    for name in ("Ann", "ANN", "Annie", "ａｎｎｉｅ", "Bob"):  # its names in any case or look-alike, and others
        assert allowed.may_use(name, ANN.fingerprint)
    for name in ("Ann", "ANN", "ａｎｎ", "Annie"):  # to anyone else, reserved in every look-alike form
        assert not allowed.may_use(name, BOB.fingerprint) and not allowed.may_use(name, None)
    assert allowed.may_use("Bob", BOB.fingerprint)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"# ok\n{ANN.fingerprint}\nalice\n", "line 3: 'alice': expected a fingerprint (SHA256:...) or an ssh-ed25519"),
        ("SHA256:short name\n", "line 1: 'SHA256:short' is not a fingerprint: SHA256: and 43 base64 characters"),
        (openssh_line(bytes(256), b"ssh-rsa"), "line 1: the key cannot be used: its type is ssh-rsa, and only"),
        ("\n\nssh-ed25519 not*base64\n", "line 3: the key cannot be used: the ssh-ed25519 key is not base64"),
        ("ssh-ed25519\n", "line 1: ssh-ed25519 without the key after it"),
        (openssh_line(bytes(31)), "line 1: the key cannot be used: the base64 does not hold an ssh-ed25519 key"),
        (f"{ANN.fingerprint} a:b\n", "line 1: the name 'a:b' is not a valid username: it may not contain ':'"),
        (
            f"{ANN.fingerprint} Ann\n{BOB.fingerprint} ａｎｎ # look-alike\n",
            "line 2: the name ａｎｎ is reserved for another key, on line 1",
        ),
    ],
    ids=["not-a-key", "short-fingerprint", "rsa", "not-base64", "no-key", "short-key", "bad-name", "name-twice"],
)
def test_a_line_that_cannot_be_read_is_named_by_its_number(text, error):
    with pytest.raises(AllowListError) as refused:
        parse_allow_list(text)
    assert str(refused.value).startswith(error)


def test_the_line_an_invitation_adds_reads_back_as_it():
    line = invitation_line(ANN.fingerprint, "  Ann  ", comment="added")
    assert line == f"{ANN.fingerprint} Ann  # added\n"
    [invitation] = parse_allow_list(line).invitations
    assert (invitation.fingerprint, invitation.name, invitation.comment) == (ANN.fingerprint, "Ann", "added")
    for fingerprint, name in (("SHA256:nope", None), ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5 Ann")):
        with pytest.raises(AllowListError, match="is not a fingerprint"):
            invitation_line(fingerprint, name)
    with pytest.raises(AllowListError, match="cannot hold '#'"):
        invitation_line(ANN.fingerprint, "Ann #1")


# --- the session's rules -----------------------------------------------------


def started(room: Room, allowed: AllowList | None) -> Person:
    person = Person(room, Limits(guests=allowed is None), allowed=lambda: allowed)
    person.session.start(session_id=SESSION)
    person.heard()
    return person


@pytest.fixture
def room() -> Room:
    room = Room(history_size=5, motd="members only")
    return room


@pytest.fixture
def allowed() -> AllowList:
    return parse_allow_list(f"{ANN.fingerprint} Ann\n{BOB.fingerprint}\n")


def chat_in(room: Room, allowed: AllowList) -> Person:
    """Ann in the room, a line said: what an outsider must not learn."""
    ann = started(room, allowed)
    ann.send(key_proof(ANN, SESSION), protocol.Username("Ann"))
    assert ann.session.stage is Stage.CHATTING
    ann.send(protocol.ChatLine("the secret plan"))
    return ann


def test_an_unknown_key_is_refused_at_its_proof_before_any_name_and_told_nothing(room, allowed, caplog):
    chat_in(room, allowed)
    mallory = started(room, allowed)
    assert mallory.send(key_proof(MALLORY, SESSION)) == []  # nothing: the Goodbye is the handler's to send
    assert mallory.session.stage is Stage.ENDED and mallory.session.goodbye == INVITED_ONLY
    assert mallory.session.membership is None and mallory.session.fingerprint is None
    assert room.names() == ["Ann"]
    assert f"192.0.2.7:4000: refused the key {MALLORY.fingerprint}: it is not in the allow file" in caplog.text


def test_a_guest_is_refused_at_its_username_and_the_name_is_not_looked_at(room, allowed, caplog):
    chat_in(room, allowed)
    guest = started(room, allowed)
    assert guest.send(protocol.Username("Ann")) == []  # not "taken": that would say who is online
    assert guest.session.stage is Stage.ENDED and guest.session.goodbye == INVITED_ONLY
    assert room.names() == ["Ann"]
    assert "192.0.2.7:4000: refused a guest (no key): this server admits only invited people" in caplog.text


def test_before_its_proof_a_connection_hears_nothing_of_the_chat(room, allowed):
    chat_in(room, allowed)
    waiting = Person(room, Limits(guests=False), allowed=lambda: allowed)
    waiting.session.start(session_id=SESSION)
    heard = waiting.heard()
    heard += waiting.send(protocol.UserListRequest(), protocol.ChatLine("hello?"), protocol.EchoOwnLines())
    assert [type(m) for m in heard] == [
        protocol.RateLimit,  # the server's limits and the question: nothing of the chat
        protocol.UsernameDeadline,
        protocol.ProofRequest,
        protocol.Stamps,
        protocol.MultilineOffer,
        protocol.UsernameRequest,
        protocol.ErrorNotice,
        protocol.ErrorNotice,
        protocol.EchoOwnLines,
    ]
    assert all("Ann" not in str(m) and "secret" not in str(m) and "members" not in str(m) for m in heard)


def test_an_invited_key_gets_in_and_a_reserved_name_is_its_alone(room, allowed):
    ann = chat_in(room, allowed)
    bob = started(room, allowed)
    bob.send(key_proof(BOB, SESSION))
    assert bob.send(protocol.Username("ａｎｎ")) == [
        protocol.UsernameRequest("That username belongs to someone else. Please enter another username.")
    ]
    ann.send(protocol.Goodbye(""))
    ann.session.leave()  # Ann gone: her name is still not Bob's
    assert bob.send(protocol.Username("Ann")) == [
        protocol.UsernameRequest("That username belongs to someone else. Please enter another username.")
    ]
    heard = bob.send(protocol.Username("Bob"))
    assert bob.session.stage is Stage.CHATTING
    assert [type(m) for m in heard][:2] == [protocol.Welcome, protocol.Greeting]  # the chat, only now
    assert protocol.HistoryMessage in {type(m) for m in heard} and protocol.Motd("members only") in heard
    assert bob.send(protocol.NickRequest("ANN")) == [protocol.ErrorNotice("The username ANN belongs to someone else.")]


def test_a_reload_takes_effect_for_the_next_connection_and_keeps_those_in(room):
    current = [parse_allow_list(f"{ANN.fingerprint}\n")]
    ann = Person(room, Limits(guests=False), allowed=lambda: current[0])
    ann.session.start(session_id=SESSION)
    ann.send(key_proof(ANN, SESSION), protocol.Username("Ann"))
    current[0] = parse_allow_list(f"{BOB.fingerprint}\n")  # Ann no longer listed
    assert ann.session.stage is Stage.CHATTING  # she stays, as ssh keeps its sessions
    later = Person(room, Limits(guests=False), allowed=lambda: current[0])
    later.session.start(session_id=SESSION)
    later.send(key_proof(ANN, SESSION))
    assert later.session.goodbye == INVITED_ONLY


# --- the file ----------------------------------------------------------------


def test_a_reload_that_fails_keeps_the_old_list(tmp_path):
    path = tmp_path / "allowed"
    path.write_text(f"{ANN.fingerprint}\n", encoding="utf-8")
    path.chmod(0o600)
    allow = AllowFile(path)
    path.write_text(f"{ANN.fingerprint}\n{BOB.fingerprint}\nnonsense\n", encoding="utf-8")
    with pytest.raises(AllowFileError, match=rf"^The allow file {path}, line 3: 'nonsense'"):
        allow.reload()
    assert len(allow.current) == 1 and allow.current.admits(ANN.fingerprint)
    path.write_text(f"{BOB.fingerprint}\n", encoding="utf-8")
    assert allow.reload().admits(BOB.fingerprint) and not allow.current.admits(ANN.fingerprint)


def test_a_file_others_can_write_is_refused(tmp_path):
    path = tmp_path / "allowed"
    path.write_text(f"{ANN.fingerprint}\n", encoding="utf-8")
    path.chmod(0o666)
    with pytest.raises(AllowFileError, match="too open: others could change it"):
        AllowFile(path)


def test_an_invitation_is_added_atomically_keeping_the_files_mode(tmp_path):
    path = tmp_path / "allowed"
    path.write_text(f"# ours\n{ANN.fingerprint} Ann", encoding="utf-8")  # no newline at the end
    path.chmod(0o640)
    allow = AllowFile(path)
    assert allow.invite(BOB.fingerprint, "Bob") is True
    assert path.read_text(encoding="utf-8") == (
        f"# ours\n{ANN.fingerprint} Ann\n{BOB.fingerprint} Bob  # added by /invite\n"
    )
    assert path.stat().st_mode & 0o777 == 0o640
    assert allow.current.admits(BOB.fingerprint) and not allow.current.may_use("bob", ANN.fingerprint)
    assert allow.invite(BOB.fingerprint) is False and allow.invite(BOB.fingerprint, "BOB") is False  # no change
    with pytest.raises(AllowFileError, match="the name ann is reserved for another key, on line 2"):
        allow.invite(MALLORY.fingerprint, "ann")
    assert not allow.current.admits(MALLORY.fingerprint) and "MALLORY" not in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allowed"]  # no temporary file left


def test_the_example_in_the_readme_reads_as_it_says():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("## A private server", 1)[1].split("```\n# KEY", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    allowed = parse_allow_list(example)
    assert [(i.fingerprint, i.name) for i in allowed.invitations] == [
        (RFC8032_FINGERPRINT, "Randall Flagg"),
        (RFC8032_FINGERPRINT, "Flagg"),
        (fingerprint_of(PersonKey.from_seed(bytes(range(7, 39))).public_bytes), None),
    ]


def test_a_name_the_allow_file_keeps_is_its_keys_though_another_registered_it_first(room, allowed):
    """Bob registered Ann's name before the operator kept it for Ann: the
    allow file decides, so the name is locked away from neither of them,
    and it does not count against Ann's registrations."""
    table = Registrations()
    assert table.take("Ann", BOB.fingerprint) is Taken.REGISTERED
    bob = Person(room, Limits(guests=False), allowed=lambda: allowed, registrations=table)
    bob.session.start(session_id=SESSION)
    bob.heard()
    assert bob.send(key_proof(BOB, SESSION), protocol.Username("Ann")) == [
        protocol.UsernameRequest(f"{NAME_RESERVED} Please enter another username.")
    ]
    ann = Person(room, Limits(guests=False), allowed=lambda: allowed, registrations=table)
    ann.session.start(session_id=SESSION)
    ann.send(key_proof(ANN, SESSION), protocol.Username("Ann"))
    assert ann.session.stage is Stage.CHATTING and room.names() == ["Ann"]
    assert table.held_by(ANN.fingerprint) == []


def test_a_key_that_a_reload_took_out_after_its_proof_is_refused_at_its_username(room, allowed):
    current = [allowed]
    bob = Person(room, Limits(guests=False), allowed=lambda: current[0])
    bob.session.start(session_id=SESSION)
    bob.send(key_proof(BOB, SESSION))
    assert bob.session.stage is Stage.NAMING  # invited when it proved its key
    current[0] = parse_allow_list(f"{ANN.fingerprint} Ann\n")  # /reload: Bob is no longer listed
    assert bob.send(protocol.Username("Bob")) == []
    assert bob.session.goodbye == INVITED_ONLY and room.names() == []
