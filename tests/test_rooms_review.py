"""Review findings on rooms (no sockets): a room made again never hands out
its stored IDs twice (a store that does not answer, an ask racing the
writer's pass, a room made and gone during a join's read)."""

from __future__ import annotations

import collections
import logging
import threading

from socket_chat import protocol
from socket_chat.chat.history import HistoryUnavailable, Line
from socket_chat.chat.room import Room
from socket_chat.chat.rooms import Rooms, room_key
from socket_chat.server.store import Retention, SqliteStore
from tests.helpers import DEADLINE
from tests.test_member import errors
from tests.test_rooms import Kept, member, of
from tests.test_store import NOW, watched_connect


def test_a_room_whose_stored_lines_cannot_be_read_is_not_made():
    class Unanswered(Kept):
        def room_recent(self, room: str, count: int) -> list[Line]:
            raise HistoryUnavailable("the store did not answer")

    lobby = Room(history_size=0)
    rooms = Rooms(lobby, history_size=5, store=Unanswered())
    ann = member(lobby, rooms, "Ann")
    assert errors(ann.request("join", "#dev")) == [
        "The room cannot be made now: the server's history store did not answer. Try again."
    ]
    assert rooms.rooms_of(ann.session.membership) == [] and rooms.listing()[0] == protocol.RoomList.of([])


def test_a_room_made_and_gone_during_a_joins_read_is_read_again():
    lobby = Room(history_size=0)

    class Racing(Kept):
        raced = False

        def room_recent(self, room: str, count: int) -> list[Line]:
            stale = super().room_recent(room, count)
            if not self.raced:  # Bob makes #dev, talks and leaves while Ann's read is out
                self.raced = True
                bob.request("join", "#dev"), bob.say("#dev", "first"), bob.request("part", "#dev")
            return stale

    store = Racing()
    rooms = Rooms(lobby, history_size=5, store=store, clock=lambda: 5.0)
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    heard = ann.request("join", "#dev")
    assert [(m.id, m.text) for m in of(heard, protocol.RoomHistoryLine)] == [("1", "first")]
    ann.send(protocol.EchoOwnLines())
    assert of(ann.say("#dev", "second"), protocol.RoomMessage)[0].id == "2"


def test_an_ask_queued_after_the_writers_swap_waits_for_what_was_queued_before_it(tmp_path):
    threads: set[str] = set()
    inserting, disk_free = threading.Event(), threading.Event()
    store = SqliteStore.open(
        tmp_path / "h.sqlite3", Retention(days=None), connect=watched_connect(threads, inserting, disk_free)
    )
    try:
        store.keep(Line(1, NOW, "chat", "Ann", "lobby"))
        assert inserting.wait(DEADLINE)  # the writer swapped its queue and is held in its insert
        asked = threading.Event()

        class Watched(collections.deque):
            def append(self, ask) -> None:
                super().append(ask)
                asked.set()

        store.keep_room("dev", Line(1, NOW, "chat", "Ann", "one"))  # after the swap
        with store._lock:
            store._asks = Watched(store._asks)
        answer: list[list[Line]] = []
        reader = threading.Thread(target=lambda: answer.append(store.room_recent("dev", 5)))
        reader.start()
        assert asked.wait(DEADLINE)
        disk_free.set()
        reader.join(DEADLINE)
        assert [line.text for line in answer[0]] == ["one"]
    finally:
        disk_free.set()
        store.close()


def test_a_room_line_stored_twice_under_one_id_keeps_the_first_and_is_warned_about(tmp_path, caplog):
    store = SqliteStore.open(tmp_path / "h.sqlite3", Retention(days=None))
    try:
        with caplog.at_level(logging.WARNING, logger="chat.store"):
            store.keep_room(room_key("#dev"), Line(1, NOW, "chat", "Ann", "first"))
            store.keep_room(room_key("#dev"), Line(1, NOW, "chat", "Bob", "over it"))
            store.keep_room(room_key("#dev"), Line(2, NOW, "chat", "Bob", "second"))
            assert [line.text for line in store.room_recent(room_key("#dev"), 5)] == ["first", "second"]
        assert store.unstored == 1
        assert any("refused a change" in r.getMessage() for r in caplog.records)
    finally:
        store.close()
