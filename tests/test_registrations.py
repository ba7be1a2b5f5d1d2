"""Names that belong to someone: the table (chat/registrations.py) on a
fake clock, the session's rules (chat/member.py) without a socket, the
store's ``names`` table and its migration (server/store.py), and over
loopback a registration that survives a restart, /release and /whois."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from socket_chat import protocol
from socket_chat.chat.allow import NAME_RESERVED
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import NAME_AT_CAP, WHOIS_NO_ONE, Stage
from socket_chat.chat.registrations import DAY, Registration, Registrations, Taken
from socket_chat.chat.room import Room
from socket_chat.client.ui import whois_text
from socket_chat.crypto import PersonKey
from socket_chat.server import command_line
from socket_chat.server import store as store_module
from socket_chat.server.app import NO_REGISTRATIONS
from socket_chat.server.console import OperatorConsole
from socket_chat.server.store import SqliteStore
from tests.conftest import start_server, stop_server
from tests.helpers import ChatTestClient, key_proof
from tests.test_limits import FakeClock
from tests.test_member import Person

ANN = PersonKey.from_seed(bytes(range(32)))
BOB = PersonKey.from_seed(bytes(range(1, 33)))
SESSION = b"s" * 32
REFUSED = protocol.UsernameRequest(f"{NAME_RESERVED} Please enter another username.")


class FakeStore:
    """A RegistrationStore that records what it is given."""

    def __init__(self, stored: list[Registration] | None = None) -> None:
        self.stored = stored or []
        self.saved: list[Registration] = []
        self.dropped: list[str] = []

    def registrations(self) -> list[Registration]:
        return self.stored

    def save_registration(self, registration: Registration) -> None:
        self.saved.append(registration)

    def drop_registration(self, name: str) -> None:
        self.dropped.append(name)


# --- the table ------------------------------------------------------------------


def test_a_name_another_key_registered_between_the_check_and_the_taking_stays_theirs():
    table = Registrations()
    assert table.take("Ann", ANN.fingerprint) is Taken.REGISTERED
    assert table.take("ann", BOB.fingerprint) is Taken.OTHERS  # a race, not a crash in a reader thread
    assert table.lookup("Ann").fingerprint == ANN.fingerprint


def test_the_first_key_registers_a_name_and_its_look_alikes_and_no_one_else_may_use_them():
    clock, kept = FakeClock(), FakeStore()
    table = Registrations(kept, clock=clock)
    assert table.take("Ann", ANN.fingerprint) is Taken.REGISTERED
    for name in ("Ann", "ANN", "ａｎｎ"):
        assert table.may_use(name, ANN.fingerprint)
        assert not table.may_use(name, BOB.fingerprint) and not table.may_use(name, None)
    assert table.take("ann", ANN.fingerprint) is Taken.RENEWED
    assert [r.name for r in kept.saved] == ["Ann", "Ann"]  # registered under its first spelling
    assert table.take("Zed", None) is Taken.GUEST and table.may_use("Zed", BOB.fingerprint)  # a guest registers none


def test_a_key_holds_at_most_the_cap_and_a_name_beyond_it_is_not_registered():
    table = Registrations(cap=2, clock=FakeClock())
    assert [table.take(n, ANN.fingerprint) for n in ("a1", "a2", "a3")] == [
        Taken.REGISTERED,
        Taken.REGISTERED,
        Taken.AT_CAP,
    ]
    assert table.may_use("a3", BOB.fingerprint)
    assert [r.name for r in table.held_by(ANN.fingerprint)] == ["a1", "a2"]


def test_a_registration_unused_for_the_expiry_lapses_and_a_use_renews_it():
    clock, kept = FakeClock(), FakeStore()
    table = Registrations(kept, expiry_days=10, clock=clock)
    table.take("Ann", ANN.fingerprint)
    clock.advance(9 * DAY)
    table.take("Ann", ANN.fingerprint)  # used again: ten more days
    clock.advance(9 * DAY)
    assert not table.may_use("Ann", BOB.fingerprint)
    clock.advance(1 * DAY)
    assert table.may_use("Ann", BOB.fingerprint) and table.lookup("Ann") is None
    assert kept.dropped == ["Ann"]
    never = Registrations(expiry_days=0, clock=clock)
    never.take("Bob", BOB.fingerprint)
    clock.advance(10_000 * DAY)
    assert not never.may_use("Bob", ANN.fingerprint)


def test_release_frees_a_name_for_anyone():
    kept = FakeStore([Registration("Ann", ANN.fingerprint, 1000, 1000)])
    table = Registrations(kept, clock=FakeClock())
    assert not table.may_use("ann", BOB.fingerprint)  # read from the store at start
    assert table.release("ＡＮＮ") == Registration("Ann", ANN.fingerprint, 1000, 1000)
    assert table.may_use("ann", BOB.fingerprint) and kept.dropped == ["Ann"]
    assert table.release("Ann") is None


# --- the session's rules --------------------------------------------------------


def person(room: Room, table: Registrations, key: PersonKey | None) -> Person:
    someone = Person(room, Limits(), registrations=table)
    someone.session.start(session_id=SESSION)
    if key is not None:
        someone.send(key_proof(key, SESSION))
    someone.heard()
    return someone


def test_a_registered_name_is_refused_to_another_key_and_a_guest_online_and_offline_and_given_back():
    room, table = Room(history_size=0), Registrations(clock=FakeClock())
    ann = person(room, table, ANN)
    ann.send(protocol.Username("Ann"))
    bob, guest = person(room, table, BOB), person(room, table, None)
    for name in ("Ann", "ａｎｎ"):
        assert bob.send(protocol.Username(name)) == [REFUSED]  # online
    ann.session.leave()
    assert bob.send(protocol.Username("ANN")) == [REFUSED] and guest.send(protocol.Username("Ann")) == [REFUSED]
    bob.send(protocol.Username("Bob"))
    assert bob.send(protocol.NickRequest("ann")) == [protocol.ErrorNotice("The username ann belongs to someone else.")]
    back = person(room, table, ANN)
    assert isinstance(back.send(protocol.Username("ann"))[0], protocol.Welcome)  # the owner, from another client


def test_a_nick_registers_the_new_name_and_at_the_cap_the_person_is_told():
    room, table = Room(history_size=0), Registrations(cap=2, clock=FakeClock())
    ann = person(room, table, ANN)
    ann.send(protocol.Username("Ann"))
    ann.send(protocol.NickRequest("Annie"))
    assert table.lookup("annie").fingerprint == ANN.fingerprint
    heard = ann.send(protocol.NickRequest("Anna"))
    assert protocol.Notice(NAME_AT_CAP.format(name="Anna", cap=2)) in heard
    guest = person(room, table, None)
    guest.send(protocol.Username("Zed"))
    guest.session.leave()
    assert table.lookup("Zed") is None  # a guest never registers


def test_whois_answers_for_a_member_online_a_registered_name_offline_and_no_one():
    room, table = Room(history_size=0), Registrations(clock=FakeClock())
    ann = person(room, table, ANN)
    ann.send(protocol.Username("Ann"))
    registered_at = table.lookup("Ann").registered_at
    guest = person(room, table, None)
    guest.send(protocol.Username("Zed"))
    guest.send(protocol.Away("lunch"))
    assert ann.send(protocol.WhoisRequest("zed")) == [protocol.WhoisReply("Zed", "away", 0, "", 0, "lunch")]
    assert guest.send(protocol.WhoisRequest("ANN")) == [
        protocol.WhoisReply("Ann", "online", 0, ANN.fingerprint, registered_at, "")
    ]
    ann.session.leave()
    [offline] = guest.send(protocol.WhoisRequest("ann"))
    assert offline == protocol.WhoisReply("Ann", "offline", 0, ANN.fingerprint, registered_at, "")
    assert whois_text(offline).startswith(f"Ann: offline, key {ANN.fingerprint}, registered since ")
    assert guest.send(protocol.WhoisRequest("Cat")) == [protocol.ErrorNotice(WHOIS_NO_ONE.format(name="Cat"))]
    assert guest.session.stage is Stage.CHATTING


# --- the store ------------------------------------------------------------------


def test_registrations_are_stored_and_read_back_and_a_release_is_too(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = SqliteStore.open(path)
    first.save_registration(Registration("Ann", ANN.fingerprint, 1000, 2000))
    first.save_registration(Registration("Bob", BOB.fingerprint, 1000, 1000))
    first.drop_registration("Bob")
    first.close()
    second = SqliteStore.open(path)
    try:
        assert second.registrations() == [Registration("Ann", ANN.fingerprint, 1000, 2000)]
    finally:
        second.close()


def test_a_history_only_file_of_schema_1_is_migrated_to_2_with_its_lines(tmp_path):
    path = tmp_path / "history.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        for statement in store_module.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO messages (sent_at, sender, kind, text) VALUES (1, 'Ann', 'chat', 'kept')")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    path.chmod(0o600)
    migrated = SqliteStore.open(path, store_module.Retention(days=None), history=5)
    try:
        assert [m.text for m in migrated.recent(5)] == ["kept"] and migrated.registrations() == []
    finally:
        migrated.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM names").fetchone()[0] == 0


# --- over loopback ------------------------------------------------------------


def serve(identity_key, path):
    opened = SqliteStore.open(path)
    return start_server(identity_key, store=opened, registrations=Registrations(opened))


def client(chat, key: PersonKey) -> ChatTestClient:
    someone = ChatTestClient(chat.server_address)
    someone.handshake(identity=key)
    return someone


@pytest.mark.timeout(30)
def test_a_registration_survives_a_restart_on_the_same_store_and_the_operator_can_release_it(identity_key, tmp_path):
    path = tmp_path / "history.sqlite3"
    chat, thread = serve(identity_key, path)
    try:
        ann = client(chat, ANN)
        ann.join("Ann")
        ann.close()
    finally:
        stop_server(chat, thread)  # closing the store writes what it has queued

    chat, thread = serve(identity_key, path)
    try:
        bob = client(chat, BOB)
        bob.send(protocol.Username("ａｎｎ"))
        assert bob.expect(protocol.UsernameRequest) == REFUSED
        bob.join("Bob")
        bob.send(protocol.WhoisRequest("ann"))
        reply = bob.expect(protocol.WhoisReply)
        assert (reply.name, reply.state, reply.fingerprint) == ("Ann", "offline", ANN.fingerprint)
        ann = client(chat, ANN)
        assert ann.join("ANN").name == "ANN"  # the owner, back
        ann.close()
        bob.events_until(protocol.UserLeft("ANN"))
        console = OperatorConsole(chat)
        assert console.execute("/release ann") == [f"Released Ann: it was registered to {ANN.fingerprint}."]
        assert console.execute("/release ann") == ["No key has the name ann registered."]
        bob.send(protocol.NickRequest("Ann"))
        assert bob.expect(protocol.NickChanged) == protocol.NickChanged("Bob", "Ann")
        bob.close()
    finally:
        stop_server(chat, thread)


def test_the_options_registrations_in_the_store_in_memory_without_one_none_in_a_cluster():
    args = command_line.parse_args(["--name-expiry", "7", "--store", "none"])
    table = command_line.registrations_from(args, None)
    assert table is not None and table._expiry == 7 * DAY
    assert command_line.parse_args([]).name_expiry == 180
    clustered = command_line.parse_args(["--cluster", "redis://127.0.0.1:1"])
    assert command_line.registrations_from(clustered, None) is None


def test_release_on_the_console_needs_a_name_and_a_server_without_registrations_says_so(identity_key):
    chat, thread = start_server(identity_key)
    try:
        console = OperatorConsole(chat)
        assert console.execute("/release") == ["Usage: /release NAME"]
        assert console.execute("/release Ann") == [NO_REGISTRATIONS]
    finally:
        stop_server(chat, thread)
