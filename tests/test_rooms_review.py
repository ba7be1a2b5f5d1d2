"""Review findings on rooms (no sockets): a room made again never hands out
its stored IDs twice (a store that does not answer, an ask racing the
writer's pass, a room made and gone during a join's read); a reconnect
joins its rooms again paced, and stays in the room the person was in."""

from __future__ import annotations

import collections
import logging
import threading
import types

import pytest

from socket_chat import protocol
from socket_chat.chat import rooms as rooms_module
from socket_chat.chat.history import HistoryUnavailable, Line
from socket_chat.chat.limits import Limits
from socket_chat.chat.room import Room
from socket_chat.chat.rooms import RoomRefused, Rooms, room_key
from socket_chat.client import session
from socket_chat.client.receiver import Display
from socket_chat.client.rooms import RoomState
from socket_chat.client.ui import PLAIN, Session
from socket_chat.server.store import Retention, SqliteStore
from tests.helpers import DEADLINE
from tests.test_client_rooms import Screen
from tests.test_member import errors
from tests.test_rooms import Kept, Member, member, of
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


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, protocol.Message]] = []
        self.identity = None

    def send(self, message: protocol.Message) -> None:
        self.sent.append(("send", message))

    def send_paced(self, message: protocol.Message) -> None:
        self.sent.append(("paced", message))


def reconnected(monkeypatch, rooms: RoomState) -> RecordingLink:
    """``session.reconnect`` on a server that takes the name back at once."""
    link = RecordingLink()
    monkeypatch.setattr(session, "wait_or_leave", lambda display, seconds: False)
    monkeypatch.setattr(session, "connect", lambda host, port: link)
    monkeypatch.setattr(session, "trust_server", lambda link, args, terminal: None)
    monkeypatch.setattr(session, "take_back_name", lambda link, display, name: True)
    monkeypatch.setattr(session, "start_session", lambda link, display, name, resumed: None)
    shown: list[str] = []
    display = types.SimpleNamespace(
        terminal=None,
        session=types.SimpleNamespace(own_name="Ann", rooms=rooms),
        show=shown.append,
        style=types.SimpleNamespace(notice=str),
    )
    assert session.reconnect(types.SimpleNamespace(host="127.0.0.1", port=1), display) is link
    return link


def in_rooms(names: list[str], current: str | None) -> RoomState:
    rooms = RoomState()
    rooms.offered = True
    for name in names:
        rooms.entered(name)
    rooms.go(current)
    return rooms


def test_a_reconnect_joins_every_room_again_paced(monkeypatch):
    names = [f"#r{n}" for n in range(20)]
    link = reconnected(monkeypatch, in_rooms(names, None))
    assert link.sent == [("paced", protocol.RoomRequest("join", name, "")) for name in names]


@pytest.mark.parametrize("current", ["#b", None])
def test_after_a_reconnect_the_person_types_where_they_were(monkeypatch, current):
    rooms = in_rooms(["#a", "#b", "#c"], current)
    reconnected(monkeypatch, rooms)
    for name in ("#a", "#B", "#c"):  # each Joined of the joins again, in any order of answers
        rooms.entered(name)
    assert rooms.current == (current and "#B")
    rooms.entered("#new")  # a /join the person typed still switches
    assert rooms.current == "#new"


def test_a_join_typed_after_a_refused_join_again_switches_to_the_room():
    rooms = in_rooms([], None)
    rooms.rejoining(["#x"], None)  # its join again was refused (invite-only since)
    rooms.asked("#X")  # the person types /join #X
    rooms.entered("#x")
    assert rooms.current == "#x"


def test_keep_messages_keeps_the_last_lines_of_each_room(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = SqliteStore.open(path, Retention(days=None, messages=2))
    for room in ("dev", "ops"):
        for n in range(1, 5):
            store.keep_room(room, Line(n, NOW, "chat", "Ann", f"{room} {n}"))
    store.keep_room("one", Line(1, NOW, "chat", "Ann", "alone"))
    store.close()
    store = SqliteStore.open(path, Retention(days=None, messages=2))  # the retention runs at start
    try:
        assert [line.text for line in store.room_recent("dev", 10)] == ["dev 3", "dev 4"]
        assert [line.text for line in store.room_recent("ops", 10)] == ["ops 3", "ops 4"]
        assert [line.text for line in store.room_recent("one", 10)] == ["alone"]
    finally:
        store.close()


def test_an_operators_reason_too_long_closes_nothing_and_one_is_one_line():
    lobby = Room(history_size=0)
    rooms = Rooms(lobby, history_size=0)
    ann = member(lobby, rooms, "Ann")
    ann.request("join", "#dev")
    with pytest.raises(RoomRefused, match="200 characters long at most; #dev is not closed"):
        rooms.close("#dev", "x" * 70_000)
    assert rooms.rooms_of(ann.session.membership) == ["#dev"] and ann.heard() == []
    assert rooms.close("#dev", "off\ntopic") == "#dev is closed (1 person was in it)."
    assert ann.heard() == [protocol.Parted("#dev", "The operator closed #dev: off topic")]


def test_closing_a_room_gone_since_it_was_found_leaves_the_one_made_again_under_its_name():
    lobby = Room(history_size=0)
    rooms = Rooms(lobby, history_size=0)
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#dev")
    found = rooms._rooms[room_key("#dev")]
    ann.request("part", "#dev")
    bob.request("join", "#dev")  # another room, under the same key
    rooms._find = lambda raw: found  # as if the operator's close found the first before it went
    with pytest.raises(RoomRefused, match="There is no room #dev"):
        rooms.close("#dev")
    assert rooms.rooms_of(bob.session.membership) == ["#dev"]


def test_who_lists_as_many_as_fit_in_one_message_and_counts_the_others(monkeypatch):
    lobby = Room(history_size=0)
    rooms = Rooms(lobby, history_size=0)
    people = [member(lobby, rooms, name) for name in ("Ann", "Bob", "Cy", "Dee")]
    for person in people:
        person.request("join", "#dev")
    monkeypatch.setattr(rooms_module, "USER_LIST_BYTES", len("Ann\nBob\n"))  # a frame's worth, scaled down
    heard = people[0].request("who", "#dev")
    more = protocol.Notice("...and 2 more in #dev: too many to list.")
    assert heard == [protocol.RoomMembers("#dev", "Ann\nBob"), more]


def test_a_lobby_block_shown_in_a_room_keeps_its_lines_under_its_text():
    shown = Session("Ann")
    shown.rooms.offered = True
    shown.rooms.entered("#dev")
    screen = Screen(interactive=True)
    Display(screen, shown, PLAIN).show_event(protocol.ChatMessage("bob", "a\nb"))
    assert screen.lines == ["[lobby] bob: a\n" + " " * len("[lobby] bob: ") + "b"]


@pytest.mark.parametrize("where", ["lobby", "room"])
def test_a_block_over_the_line_limit_is_charged_to_flood_control(where):
    lobby = Room(history_size=0)
    rooms = Rooms(lobby, history_size=0)
    ann = Member(lobby, Limits(rate=1.0, burst=3, max_lines=2), rooms=rooms)  # 3 at once, then 1 a second
    ann.session.start()
    ann.send(protocol.Rooms(), protocol.Multiline(), protocol.Username("Ann"))
    ann.request("join", "#dev")  # one token
    ann.clock.advance(1.0)

    def block(text: str) -> protocol.Event:
        return protocol.ChatLine(text) if where == "lobby" else protocol.RoomLine("#dev", "chat", text)

    for _ in range(3):
        assert errors(ann.send(block("a\nb\nc"))) == ["The message was not sent: it has 3 lines, and the limit is 2."]
    assert errors(ann.send(block("a\nb\nc")))[0].startswith("Slow down: it was not sent.")
    assert errors(ann.send(block("hi")))[0].startswith("Slow down")


def test_a_room_made_just_after_a_joins_look_and_gone_during_its_read_is_read_again():
    lobby = Room(history_size=0)
    steps: list[str] = []

    class Looked(dict):
        def __contains__(self, key) -> bool:
            found = super().__contains__(key)
            if not steps:  # Ann looked (no #dev); Bob makes it before she reads the store
                steps.append("looked")
                bob.request("join", "#dev"), bob.say("#dev", "first")
                steps.append("made")
            return found

    class Racing(Kept):
        def room_recent(self, room: str, count: int) -> list[Line]:
            stale = super().room_recent(room, count)
            if steps == ["looked", "made"]:  # Bob talks on and leaves while Ann's read is out
                steps.append("gone")
                bob.say("#dev", "second"), bob.request("part", "#dev")
            return stale

    rooms = Rooms(lobby, history_size=5, store=Racing(), clock=lambda: 5.0)
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    rooms._rooms = Looked()
    heard = ann.request("join", "#dev")
    assert [(m.id, m.text) for m in of(heard, protocol.RoomHistoryLine)] == [("1", "first"), ("2", "second")]
