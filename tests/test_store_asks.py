"""Review findings on the store and what asks it (no sockets): IDs no line
can have, a bad ask that must not end the writer, a cluster page before
the first ID, offline lines for a device, the order of the waiting lines'
changes, mentions of a name in any case, and the store's open and close."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from types import SimpleNamespace

import pytest

from socket_chat import protocol
from socket_chat.chat.history import HistoryUnavailable, Line
from socket_chat.chat.member import MAX_LINE_ID, line_id_of
from socket_chat.chat.offline import OfflineMessages
from socket_chat.chat.registrations import DeviceAdded, Registrations, RegistryUnavailable
from socket_chat.chat.room import Room
from socket_chat.chat.search import SearchQuery, SearchUnavailable
from socket_chat.protocol import OfflineMessage, PrivateLine
from socket_chat.server import cluster
from socket_chat.server import store as store_module
from socket_chat.server.app import ChatServer
from socket_chat.server.store import Retention, SqliteStore, StoreError
from tests.helpers import DEADLINE
from tests.test_history import ANN, NOW, person, say
from tests.test_offline import ALICE, BOB, clock, keyed
from tests.test_room import FakeClock

DEVICE = "SHA256:alice-laptop"
HUGE = "99999999999999999999"  # 20 digits, above 2**63 - 1


@pytest.fixture
def store(tmp_path):
    opened = SqliteStore.open(tmp_path / "history.sqlite3", Retention(days=None), history=20, clock=FakeClock(NOW))
    yield opened
    opened.close()


def test_ids_no_line_can_have_are_none():
    assert line_id_of("1") == 1 and line_id_of(str(MAX_LINE_ID)) == MAX_LINE_ID
    for text in ("0", str(MAX_LINE_ID + 1), HUGE, "", "x", "٣", "1" * 21):
        assert line_id_of(text) is None


def test_a_history_page_before_a_huge_id_is_no_such_line_and_the_store_goes_on(store):
    room = Room(store=store, clock=FakeClock(NOW))
    ann = person(room, "Ann", ANN)
    say(ann, "one")
    assert ann.send(protocol.HistoryRequest(HUGE, 5)) == [protocol.ErrorNotice(f"No line has the ID {HUGE}.")]
    assert ann.send(protocol.HistoryRequest("0", 5)) == [protocol.ErrorNotice("No line has the ID 0.")]
    say(ann, "two")
    assert [line.text for line in store.page(None, 5)[0]] == ["one", "two"]


def test_forget_at_the_console_of_a_huge_id_is_no_such_line(store):
    server = SimpleNamespace(room=Room(store=store, clock=FakeClock(NOW)))
    assert ChatServer.forget_line(server, HUGE) == [f"No line {HUGE} is in the history."]  # type: ignore[arg-type]
    assert store.page(None, 5) == ([], False)  # the writer still answers


def test_an_ask_that_raises_anything_fails_alone_and_the_writer_goes_on(store, caplog):
    with caplog.at_level(logging.WARNING, logger="chat.store"), pytest.raises(HistoryUnavailable):
        store.page(2**64, 5)  # what an unchecked ID would ask: OverflowError in the writer
    assert len([r for r in caplog.records if "could not be read" in r.getMessage()]) == 1
    store.keep(Line(1, NOW, "chat", "Ann", "after"))
    assert store.flush(5.0)
    assert store.page(None, 5) == ([Line(1, NOW, "chat", "Ann", "after")], False)
    assert store.forget(1) is True


def test_a_cluster_page_before_the_first_id_asks_redis_nothing():
    redis_cluster = cluster.RedisCluster("redis://127.0.0.1:1")

    def no_call(*args, **kwargs):
        raise AssertionError("Redis was asked (XREVRANGE (0-0 is an error, taken for a lost link)")

    redis_cluster._try = no_call  # type: ignore[method-assign]
    assert redis_cluster.page(0, 5) == ([], False)


def test_a_device_is_given_the_lines_kept_for_its_owners_names():
    registrations = Registrations(clock=clock)
    offline = OfflineMessages(clock=clock)
    room = Room(history_size=0)
    options = {"registrations": registrations, "offline": offline}
    keyed(room, "alice", ALICE, **options).session.leave()  # registers alice to ALICE
    assert registrations.add_device(ALICE, DEVICE) is DeviceAdded.ADDED
    keyed(room, "bob", BOB, **options).send(PrivateLine("alice", "hi"))
    assert [m for m in keyed(room, "alice", DEVICE, **options).heard() if isinstance(m, OfflineMessage)] == [
        OfflineMessage("bob", "alice", "hi", NOW)
    ]
    assert offline.count(ALICE) == 0


def test_a_device_whose_owner_cannot_be_asked_takes_its_own_lines():
    offline = OfflineMessages(clock=clock)
    offline.keep(DEVICE, "bob", "alice", "for the device itself")

    class Unreachable(Registrations):
        def owner_of(self, fingerprint: str) -> str:
            raise RegistryUnavailable("Redis is away")

    room = Room(history_size=0)
    person = keyed(room, "dev", DEVICE, registrations=Unreachable(clock=clock), offline=offline)
    assert [m.text for m in person.heard() if isinstance(m, OfflineMessage)] == ["for the device itself"]


class OrderedStore:
    """An offline store that records the changes queued to it, in order."""

    def __init__(self) -> None:
        self.changes: list[str] = []

    def waiting_messages(self) -> list:
        return []

    def save_waiting(self, message) -> None:
        self.changes.append("insert " + message.text)

    def drop_waiting(self, fingerprint: str) -> None:
        self.changes.append("delete")


class TakeOnRelease:
    """A lock that, once, lets a take in right after a release: where
    another thread's take could come between a keep's table and its store."""

    def __init__(self, take) -> None:
        self._lock, self._take, self.armed = threading.Lock(), take, True

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)
        if self.armed:
            self.armed = False
            self._take()


def test_a_take_racing_a_keep_queues_its_delete_after_the_keeps_insert():
    store = OrderedStore()
    offline = OfflineMessages(store, clock=clock)
    offline._lock = TakeOnRelease(lambda: offline.take(ALICE))  # type: ignore[assignment]
    assert offline.keep(ALICE, "bob", "alice", "hi")
    assert store.changes == ["insert hi", "delete"]  # not restored after a restart: given once


def test_mentions_of_a_name_are_found_in_any_case_beyond_ascii(store):
    for line_id, text in enumerate(["élodie: lunch?", "ask ÉLODIE", "élodiette is not her"], 1):
        store.keep(Line(line_id, NOW, "chat", "Ann", text))
    assert store.flush(5.0)
    assert [line.text for line in store.mentioning("Élodie", 0, 10, 10)] == ["ask ÉLODIE", "élodie: lunch?"]


def test_a_search_after_close_is_refused_not_a_new_connection(tmp_path):
    opened = SqliteStore.open(tmp_path / "history.sqlite3", Retention(days=None))
    assert opened.search(SearchQuery(("hello",)), 5) == []  # the reader opened
    opened.close()
    with pytest.raises(SearchUnavailable, match="closing its history store"):
        opened.search(SearchQuery(("hello",)), 5)
    assert opened._reader is None


def test_a_store_that_did_not_open_in_time_lets_its_lock_file_go(tmp_path, monkeypatch):
    gate = threading.Event()

    def stuck(*args, **kwargs) -> sqlite3.Connection:
        gate.wait(DEADLINE)  # an open that takes longer than OPEN_TIMEOUT
        return sqlite3.connect(*args, **kwargs)

    monkeypatch.setattr(store_module, "OPEN_TIMEOUT", 0.05)
    path = tmp_path / "history.sqlite3"
    try:
        with pytest.raises(StoreError, match="did not open within"):
            SqliteStore.open(path, Retention(days=None), connect=stuck)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
        finally:
            os.close(fd)
    finally:
        gate.set()  # the writer opens, sees it is stopping, and gives the file up
