"""Private messages kept for someone offline (chat/offline.py): the table,
the session's words to the sender and the delivery after the welcome
(chat/member.py), and the store's ``waiting`` table (server/store.py):
kept across a restart, deleted once delivered."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from socket_chat import protocol
from socket_chat.chat.member import KEPT_FOR_LATER, NOT_KEPT_FOR_GUESTS, WAITING_FULL, WAITING_UNAVAILABLE, Stage
from socket_chat.chat.offline import OfflineMessages, OfflineUnavailable, Waiting
from socket_chat.chat.registrations import Registrations
from socket_chat.chat.room import Room
from socket_chat.protocol import OfflineMessage, PrivateLine
from tests.helpers import DEADLINE
from tests.test_member import Person, errors, joined
from tests.test_store import NOW, opened  # noqa: F401 (a fixture)

ALICE, BOB = "SHA256:alice-key", "SHA256:bob-key"


def clock() -> float:
    return NOW


def keyed(room: Room, name: str, fingerprint: str | None, **options) -> Person:
    """A person with a key (None: a guest) in ``room`` as ``name``; what
    they heard on joining stays in their inbox."""
    person = Person(room, **options)
    person.session.fingerprint = fingerprint
    person.session.start()
    person.inbox.clear()
    person.session.receive(protocol.Username(name))
    assert person.session.stage is Stage.CHATTING
    return person


@pytest.fixture
def chat():
    """A room, its registrations and waiting messages (in memory)."""
    registrations = Registrations(clock=clock)
    offline = OfflineMessages(clock=clock)
    return Room(history_size=0), registrations, offline


def test_a_line_for_a_key_offline_is_kept_the_sender_told_and_given_after_the_welcome(chat):
    room, registrations, offline = chat
    options = {"registrations": registrations, "offline": offline}
    alice = keyed(room, "alice", ALICE, **options)
    alice.session.leave()
    bob = keyed(room, "bob", BOB, **options)
    bob.inbox.clear()

    heard = bob.send(PrivateLine("ALICE", "the keys are under the mat"), PrivateLine("alice", "and the cat"))
    assert heard == [protocol.Notice(KEPT_FOR_LATER.format(name="alice"))] * 2
    assert KEPT_FOR_LATER.format(name="alice") == "alice is offline; they will get it when they come back."

    back = keyed(room, "alice", ALICE, **options)
    heard = back.heard()
    assert heard[0] == protocol.Welcome("alice")
    assert heard[-3:] == [
        protocol.Notice("2 private messages came while you were away:"),
        OfflineMessage("bob", "alice", "the keys are under the mat", NOW),
        OfflineMessage("bob", "alice", "and the cat", NOW),
    ]
    back.session.leave()
    again = keyed(room, "alice", ALICE, **options)
    assert not [m for m in again.heard() if isinstance(m, OfflineMessage)]  # given once


def test_they_are_given_to_the_key_under_any_of_its_names_not_to_another_key(chat):
    room, registrations, offline = chat
    options = {"registrations": registrations, "offline": offline}
    keyed(room, "alice", ALICE, **options).session.leave()
    bob = keyed(room, "bob", BOB, **options)
    bob.send(PrivateLine("alice", "hi"))
    carol = keyed(room, "carol", "SHA256:carol-key", **options)
    assert not [m for m in carol.heard() if isinstance(m, OfflineMessage)]
    assert [m for m in keyed(room, "alice2", ALICE, **options).heard() if isinstance(m, OfflineMessage)] == [
        OfflineMessage("bob", "alice", "hi", NOW)
    ]


def test_nothing_is_kept_for_a_guest_and_the_sender_is_told(chat):
    room, registrations, offline = chat
    options = {"registrations": registrations, "offline": offline}
    keyed(room, "zed", None, **options).session.leave()  # a guest: the name is not registered
    bob = keyed(room, "bob", BOB, **options)
    assert errors(bob.send(PrivateLine("zed", "hello?"))) == [NOT_KEPT_FOR_GUESTS.format(name="zed")]
    assert offline.count(ALICE) == 0


def test_over_the_cap_the_sender_is_told_it_was_not_kept(chat):
    room, registrations, _ = chat
    offline = OfflineMessages(cap=2, clock=clock)
    options = {"registrations": registrations, "offline": offline}
    keyed(room, "alice", ALICE, **options).session.leave()
    bob = keyed(room, "bob", BOB, **options)
    heard = bob.send(*[PrivateLine("alice", f"n{n}") for n in range(3)])
    assert errors(heard) == [WAITING_FULL.format(name="alice", cap=2)]
    assert offline.count(ALICE) == 2


def test_when_they_cannot_be_kept_now_the_sender_is_told_it_was_not_sent(chat):
    """A cluster's Redis lost (server/cluster_history.py): ``keep`` raises."""

    class Unreachable(OfflineMessages):
        def keep(self, fingerprint, sender, recipient, text):
            raise OfflineUnavailable("Redis did not answer")

    room, registrations, _ = chat
    options = {"registrations": registrations, "offline": Unreachable(clock=clock)}
    keyed(room, "alice", ALICE, **options).session.leave()
    bob = keyed(room, "bob", BOB, **options)
    assert errors(bob.send(PrivateLine("alice", "later?"))) == [WAITING_UNAVAILABLE.format(name="alice")]


def test_without_registrations_or_waiting_messages_the_old_answer_stands():
    room = Room(history_size=0)
    bob = joined(room, "bob")
    assert errors(bob.send(PrivateLine("alice", "x"))) == [
        "No one called alice is online; the private message was not sent."
    ]


def test_the_store_keeps_them_across_a_restart_and_deletes_them_once_given(opened):
    store = opened()
    offline = OfflineMessages(store, clock=clock)
    assert offline.keep(ALICE, "bob", "alice", "one") and offline.keep(ALICE, "bob", "alice", "two")
    offline.keep(BOB, "alice", "bob", "for bob")
    store.close()

    store = opened(store.path)
    restarted = OfflineMessages(store, clock=clock)
    assert restarted.take(ALICE) == [
        Waiting(ALICE, "bob", "alice", "one", NOW),
        Waiting(ALICE, "bob", "alice", "two", NOW),
    ]
    assert store.flush(DEADLINE)
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT fingerprint, text FROM waiting").fetchall() == [(BOB, "for bob")]  # deleted


def test_waiting_lines_older_than_keep_days_are_dropped_with_the_history(opened):
    from socket_chat.server.store import DAY, Retention

    store = opened()
    OfflineMessages(store, clock=lambda: NOW - 40 * DAY).keep(ALICE, "bob", "alice", "long ago")
    store.close()
    store = opened(store.path, Retention(days=30))
    assert store.waiting_messages() == []


# --- through the real server, with a restart in between ------------------------------------


def test_a_line_kept_for_alice_outlives_a_restart_and_a_search_finds_the_public_lines(identity_key, tmp_path):
    from socket_chat.crypto import PersonKey
    from socket_chat.protocol import Notice, SearchRequest, SearchResult, UserLeft
    from socket_chat.server.store import SqliteStore
    from tests.conftest import start_server, stop_server
    from tests.helpers import ChatTestClient

    alice_key, bob_key = PersonKey.from_seed(bytes(range(32))), PersonKey.from_seed(bytes(range(1, 33)))
    path = tmp_path / "history.sqlite3"

    def serve():
        store = SqliteStore.open(path, history=5)
        return start_server(identity_key, history=5, store=store, registrations=Registrations(store))

    def client(server, key, name):
        person = ChatTestClient(server.server_address)
        person.handshake(key)
        person.join(name)
        return person

    chat, thread = serve()
    try:
        bob = client(chat, bob_key, "bob")
        alice = client(chat, alice_key, "alice")
        alice.say("the release is on Friday")
        alice.close()
        bob.events_until(UserLeft("alice"))  # alice is gone
        bob.send(PrivateLine("alice", "see you Friday"))
        assert bob.expect(Notice).text == KEPT_FOR_LATER.format(name="alice")
        bob.close()
    finally:
        stop_server(chat, thread)

    chat, thread = serve()
    try:
        alice = client(chat, alice_key, "alice")
        while not isinstance(kept := alice.next_event(), OfflineMessage):  # after the welcome and the history
            pass
        assert kept.text == "see you Friday"
        alice.send(SearchRequest("friday", "", 0, 0))
        assert alice.expect(Notice).text == "1 line matches, newest first:"
        found = alice.expect(SearchResult)
        assert (found.sender, found.text) == ("alice", "the release is on Friday")
        alice.close()
    finally:
        stop_server(chat, thread)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM waiting").fetchone() == (0,)  # deleted once given
