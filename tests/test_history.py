"""The history read back (issue 20): message IDs and server times on the
wire, /history pages, the unread count on coming back, /mentions, /forget,
and away states kept by key; in memory (``--store none``) and in the
SQLite store, without sockets, then once over loopback across a restart."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from socket_chat import protocol
from socket_chat.chat.history import MENTIONS_CAP, Line, MemoryHistory, Seen
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import MENTIONS_FIRST_VISIT, MENTIONS_NEED_A_KEY, STILL_AWAY, Stage
from socket_chat.chat.room import GUEST_HISTORY, Room
from socket_chat.client import ui as client_ui
from socket_chat.client.receiver import Display
from socket_chat.client.ui import Context, Session
from socket_chat.server import store as store_module
from socket_chat.server.console import OperatorConsole
from socket_chat.server.store import Retention, SqliteStore
from tests.conftest import start_server, stop_server
from tests.helpers import DEADLINE, ChatTestClient
from tests.test_member import Person
from tests.test_room import FakeClock

NOW = 1_764_100_000
ANN, BOB = "SHA256:" + "A" * 43, "SHA256:" + "B" * 43


#: No flood control, except where a test asks for it.
FREE = Limits(rate=0)


def person(room: Room, name: str, key: str | None = None, stamps: bool = True, limits: Limits = FREE) -> Person:
    """A person who joined ``room`` (with a proved key, as the proof would
    leave it, or a guest), having taken the server's offer of stamps; the
    inbox holds what came after the question."""
    someone = Person(room, limits)
    someone.session.fingerprint = key
    someone.session.start()
    if stamps:
        someone.session.receive(protocol.Stamps())
    someone.heard()
    someone.session.receive(protocol.Username(name))
    assert someone.session.stage is Stage.CHATTING
    return someone


def say(speaker: Person, *texts: str) -> None:
    for text in texts:
        speaker.session.receive(protocol.ChatLine(text))


def of(heard, kind):
    return [m for m in heard if isinstance(m, kind)]


@pytest.fixture(params=["memory", "sqlite"])
def archive(request, tmp_path):
    """The history kept in memory (--store none) and in the SQLite store."""
    if request.param == "memory":
        yield MemoryHistory()
        return
    opened = SqliteStore.open(tmp_path / "history.sqlite3", Retention(days=None), history=20, clock=FakeClock(NOW))
    yield opened
    opened.close()


# --- IDs and times on the wire -------------------------------------------------------


def test_public_lines_actions_and_notices_carry_one_sequence_of_ids_and_the_servers_time():
    room = Room(clock=FakeClock(NOW))
    ann, old = person(room, "Ann", ANN), person(room, "Old", stamps=False)
    ann.heard(), old.heard()
    say(ann, "hi")
    ann.session.receive(protocol.ActionLine("waves"))
    room.publish(protocol.Notice("Notice from the operator: noon"))
    # An older client gets the messages it knows, unchanged.
    assert old.heard() == [
        protocol.ChatMessage("Ann", "hi"),
        protocol.ActionMessage("Ann", "waves"),
        protocol.Notice("Notice from the operator: noon"),
    ]
    newer = person(room, "New", BOB)
    say(ann, "again")
    assert of(newer.heard(), protocol.StampedLine) == [protocol.StampedLine("4", NOW, "chat", "Ann", "again")]
    assert of(newer.heard(), protocol.HistoryLine) == []
    later = person(room, "Cat")  # a guest: the history stamped, the notice left out of it
    assert of(later.heard(), protocol.HistoryLine) == [
        protocol.HistoryLine("1", NOW, "chat", "Ann", "hi"),
        protocol.HistoryLine("2", NOW, "action", "Ann", "waves"),
        protocol.HistoryLine("4", NOW, "chat", "Ann", "again"),
    ]


def test_the_stamps_offer_is_made_before_the_question_and_taken_silently():
    room = Room()
    someone = Person(room)
    someone.session.start()
    assert protocol.Stamps() in someone.heard()
    assert someone.send(protocol.Stamps()) == []


def test_ids_go_on_after_a_restart_on_the_store(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = SqliteStore.open(path, Retention(days=None), history=20)
    room = Room(store=first, clock=FakeClock(NOW))
    say(person(room, "Ann", ANN), "one", "two")
    first.close()
    again = SqliteStore.open(path, Retention(days=None), history=20)
    try:
        room = Room(store=again, clock=FakeClock(NOW))
        ann = person(room, "Ann", ANN)
        assert [m.id for m in of(ann.heard(), protocol.HistoryLine)] == ["1", "2"]
        bob = person(room, "Bob", BOB)
        bob.heard()
        say(ann, "three")
        assert of(bob.heard(), protocol.StampedLine)[0].id == "3"
    finally:
        again.close()


def test_a_forgotten_newest_line_and_a_notice_never_give_their_ids_again_after_a_restart(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = SqliteStore.open(path, Retention(days=None), history=20)
    room = Room(store=first, clock=FakeClock(NOW))
    ann = person(room, "Ann", ANN)
    say(ann, "one", "two")
    assert room.forget(2)  # the newest line, taken back: its ID is no longer stored
    first.close()
    second = SqliteStore.open(path, Retention(days=None), history=20)
    room = Room(store=second, clock=FakeClock(NOW))
    ann, bob = person(room, "Ann", ANN), person(room, "Bob", BOB)
    bob.heard()
    say(ann, "three")
    room.publish(protocol.Notice("Notice from the operator: noon"))  # stamped, never stored
    heard = of(bob.heard(), protocol.StampedLine)
    assert [int(m.id) for m in heard] == [3, 4]  # after the forgotten 2
    second.close()
    third = SqliteStore.open(path, Retention(days=None), history=20)
    try:
        room = Room(store=third, clock=FakeClock(NOW))
        ann, bob = person(room, "Ann", ANN), person(room, "Bob", BOB)
        bob.heard()
        say(ann, "four")
        assert int(of(bob.heard(), protocol.StampedLine)[0].id) == 5  # the notice's 4 is not given again
    finally:
        third.close()


def test_ids_handed_out_are_reserved_on_disk_before_a_kill(tmp_path, monkeypatch):
    """The file as a ``kill -9`` leaves it (a copy taken while the server
    runs, with no close): it holds a high-water mark above every ID given,
    the notices' too, so the next start gives none of them again."""
    monkeypatch.setattr(store_module, "ID_BLOCK", 4)  # a block renewed every 2 IDs
    path, copy = tmp_path / "history.sqlite3", tmp_path / "copy"
    running = SqliteStore.open(path, Retention(days=None), history=20)
    copy.mkdir()

    def restarted_after_a_kill() -> int:
        for suffix in ("", "-wal"):
            source = path.with_name(path.name + suffix)
            (copy / source.name).write_bytes(source.read_bytes())
            (copy / source.name).chmod(0o600)
        again = SqliteStore.open(copy / path.name, Retention(days=None), history=20)
        try:
            return again.last_id()
        finally:
            again.close()

    try:
        assert restarted_after_a_kill() >= 4  # the first block, reserved before any ID is given
        room = Room(store=running, clock=FakeClock(NOW))
        ann = person(room, "Ann", ANN)
        for n in range(5):
            say(ann, f"line {n}")
            room.publish(protocol.Notice(f"notice {n}"))
        assert running.flush(DEADLINE)
        assert restarted_after_a_kill() > 10  # 10 IDs given, the last a notice's
    finally:
        running.close()


# --- /history --------------------------------------------------------------------------


def test_history_pages_go_back_to_the_beginning_and_say_so(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    ann = person(room, "Ann", ANN)
    say(ann, *(f"line {n}" for n in range(1, 121)))
    bob = person(room, "Bob", BOB)
    shown = of(bob.heard(), protocol.HistoryLine)
    assert [m.text for m in shown] == [f"line {n}" for n in range(101, 121)]  # the newcomer's 20

    page = bob.send(protocol.HistoryRequest(shown[0].id, 0))  # default: 50
    assert [m.text for m in page[:-1]] == [f"line {n}" for n in range(51, 101)]
    assert page[-1] == protocol.PageEnd("history", 50, 1)
    page = bob.send(protocol.HistoryRequest(page[0].id, 30))
    assert [m.text for m in page[:-1]] == [f"line {n}" for n in range(21, 51)]
    page = bob.send(protocol.HistoryRequest(page[0].id, 30))
    assert [m.text for m in page[:-1]] == [f"line {n}" for n in range(1, 21)]
    assert page[-1] == protocol.PageEnd("history", 20, 0)  # the beginning
    assert bob.send(protocol.HistoryRequest(page[0].id, 30)) == [protocol.PageEnd("history", 0, 0)]


def test_a_page_is_capped_and_a_bad_id_is_a_clear_error(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    ann = person(room, "Ann", ANN)
    say(ann, *(f"line {n}" for n in range(300)))
    page = ann.send(protocol.HistoryRequest("", 100_000))
    assert len(page) == protocol.MAX_HISTORY_PAGE + 1 and page[-1] == protocol.PageEnd("history", 200, 1)
    assert ann.send(protocol.HistoryRequest("x'; DROP TABLE messages", 5)) == [
        protocol.ErrorNotice("No line has the ID x'; DROP TABLE messages.")
    ]
    assert len(ann.send(protocol.HistoryRequest("", 5))) == 6  # nothing dropped


def test_history_requests_are_charged_to_flood_control():
    room = Room()
    ann = person(room, "Ann", ANN, limits=Limits(rate=1.0, burst=3))
    heard = ann.send(*[protocol.HistoryRequest("", 5)] * 4)
    assert of(heard, protocol.PageEnd) == [protocol.PageEnd("history", 0, 0)] * 3
    assert "Slow down: the history was not sent" in of(heard, protocol.ErrorNotice)[0].text


# --- unread, on coming back -----------------------------------------------------------


def test_a_person_with_a_key_who_comes_back_is_told_what_is_new_where_it_begins(archive):
    clock = FakeClock(NOW)
    room = Room(store=archive, clock=clock)
    bob = person(room, "Bob", BOB)
    say(bob, "seen 1", "seen 2")
    ann = person(room, "Ann", ANN)
    ann.session.leave()
    clock.now = NOW + 60
    say(bob, "new 1", "new 2", "new 3")
    back = person(room, "Ann", ANN)
    history = [m for m in back.heard() if isinstance(m, (protocol.HistoryLine, protocol.Unread))]
    assert [getattr(m, "text", m) for m in history] == [
        "seen 1",
        "seen 2",
        protocol.Unread(3, NOW, 3),  # the marker: what follows is new
        "new 1",
        "new 2",
        "new 3",
    ]
    assert archive.seen(ANN) == Seen(2, NOW)


def test_more_new_than_the_newcomers_history_says_how_many_are_not_shown(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    bob = person(room, "Bob", BOB)
    person(room, "Ann", ANN).session.leave()
    say(bob, *(f"new {n}" for n in range(137)))
    heard = person(room, "Ann", ANN).heard()
    assert heard.index(protocol.Unread(137, NOW, 20)) < heard.index(of(heard, protocol.HistoryLine)[0])


def test_a_guest_and_a_first_visit_get_the_plain_history():
    room = Room()
    bob = person(room, "Bob", BOB)
    say(bob, "hello")
    guest = person(room, "Cat")
    assert protocol.Notice(GUEST_HISTORY) in guest.heard()
    first = person(room, "Ann", ANN)
    assert of(first.heard(), protocol.Unread) == [] and of(first.heard(), protocol.Notice) == []


# --- /mentions ----------------------------------------------------------------------------


def test_mentions_are_the_lines_that_named_you_while_away_newest_first(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    bob = person(room, "Bob", BOB)
    say(bob, "Ann: before you left")
    person(room, "Ann", ANN).session.leave()
    say(bob, "ann, lunch?", "Annie is not you", "banner neither", "@ANN are you there")
    back = person(room, "Ann", ANN)
    say(bob, "ann: after you came back")
    assert back.send(protocol.MentionsRequest()) == [
        protocol.HistoryLine("5", NOW, "chat", "Bob", "@ANN are you there"),
        protocol.HistoryLine("2", NOW, "chat", "Bob", "ann, lunch?"),
        protocol.PageEnd("mentions", 2, 0),
    ]


def test_mentions_are_capped(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    bob = person(room, "Bob", BOB)
    person(room, "Ann", ANN).session.leave()
    say(bob, *(f"Ann {n}" for n in range(MENTIONS_CAP + 10)))
    answer = person(room, "Ann", ANN).send(protocol.MentionsRequest())
    assert answer[-1] == protocol.PageEnd("mentions", MENTIONS_CAP, 0)
    assert answer[0].text == f"Ann {MENTIONS_CAP + 9}"


def test_mentions_need_a_key_and_a_visit_before():
    room = Room()
    assert person(room, "Cat").send(protocol.MentionsRequest()) == [protocol.ErrorNotice(MENTIONS_NEED_A_KEY)]
    assert person(room, "Ann", ANN).send(protocol.MentionsRequest()) == [protocol.Notice(MENTIONS_FIRST_VISIT)]


# --- /forget, /away kept -------------------------------------------------------------------


def test_forget_takes_a_line_out_of_the_newcomers_history_and_the_pages(archive):
    room = Room(store=archive, clock=FakeClock(NOW))
    ann = person(room, "Ann", ANN)
    say(ann, "fine", "take this back", "also fine")
    assert room.forget(2) and not room.forget(2) and not room.forget(99)
    newcomer = person(room, "Bob", BOB)
    assert [m.text for m in of(newcomer.heard(), protocol.HistoryLine)] == ["fine", "also fine"]
    assert [m.text for m in of(newcomer.send(protocol.HistoryRequest("", 10)), protocol.HistoryLine)] == [
        "fine",
        "also fine",
    ]


def test_an_away_state_is_kept_for_the_key_and_given_back(archive):
    room = Room(store=archive)
    ann = person(room, "Ann", ANN)
    ann.send(protocol.Away("lunch"))
    ann.session.leave()
    back = person(room, "Ann", ANN)
    assert protocol.Notice(STILL_AWAY.format(message="lunch")) in back.heard()
    assert room.away_messages() == {"Ann": "lunch"}
    back.send(protocol.Back())
    assert archive.away(ANN) is None
    guest = person(room, "Cat")
    guest.send(protocol.Away("gone"))
    assert room.away_messages() == {"Cat": "gone"}  # shown, but kept for no key


def test_seen_and_away_outlive_a_restart_of_the_store(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = SqliteStore.open(path, Retention(days=None), history=20)
    first.save_seen(ANN, Seen(41, NOW))
    first.save_away(ANN, "lunch")
    first.save_away(BOB, "gone")
    first.save_away(BOB, None)
    first.close()
    again = SqliteStore.open(path, Retention(days=None), history=20)
    try:
        assert again.seen(ANN) == Seen(41, NOW) and again.away(ANN) == "lunch" and again.away(BOB) is None
        assert again.last_id() == 41  # a leaving's ID is never given again, even with no line stored
    finally:
        again.close()


def test_a_store_of_schema_2_is_migrated_with_its_lines_and_names(tmp_path):
    path = tmp_path / "history.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        for step in store_module.MIGRATIONS[:2]:
            for statement in step:
                db.execute(statement)
        db.execute("INSERT INTO messages (sent_at, sender, kind, text) VALUES (1, 'Ann', 'chat', 'kept')")
        db.execute("PRAGMA user_version = 2")
        db.commit()
    path.chmod(0o600)
    migrated = SqliteStore.open(path, Retention(days=None), history=5)
    try:
        assert migrated.recent(5) == [Line(1, 1, "chat", "Ann", "kept")] and migrated.seen(ANN) is None
        assert migrated.page(None, 5) == ([Line(1, 1, "chat", "Ann", "kept")], False)
    finally:
        migrated.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM seen").fetchone()[0] == 0


# --- over loopback, across a restart ------------------------------------------------------


def test_history_ids_unread_and_forget_over_loopback_across_a_restart(identity_key, tmp_path):
    path = tmp_path / "history.sqlite3"
    options = {"history": 20}
    store = SqliteStore.open(path, Retention(days=None), history=20)
    server, thread = start_server(identity_key, store=store, **options)
    try:
        ann = ChatTestClient(server.server_address)
        ann.handshake(stamps=True)
        ann_key = ann.identity
        ann.join("Ann")
        ann.send(protocol.EchoOwnLines())
        assert ann.expect(protocol.EchoOwnLines)
        for n in range(3):
            ann.say(f"line {n}")
        assert [ann.expect(protocol.StampedLine).id for _ in range(3)] == ["1", "2", "3"]
        ann.send(protocol.HistoryRequest("", 10))
        page = [ann.expect(protocol.HistoryLine) for _ in range(3)]
        assert [(m.id, m.text) for m in page] == [("1", "line 0"), ("2", "line 1"), ("3", "line 2")]
        assert ann.expect(protocol.PageEnd) == protocol.PageEnd("history", 3, 0)
        assert OperatorConsole(server).execute("/forget 2") == [
            "Forgot the line 2: newcomers and /history no longer get it."
        ]
        assert OperatorConsole(server).execute("/forget 2") == ["No line 2 is in the history."]
        ann.close()
    finally:
        stop_server(server, thread)
    store = SqliteStore.open(path, Retention(days=None), history=20)
    server, thread = start_server(identity_key, store=store, **options)
    try:
        bob = ChatTestClient(server.server_address)
        bob.handshake(stamps=True)
        bob.join("Bob")
        assert [(m.id, m.text) for m in [bob.expect(protocol.HistoryLine) for _ in range(2)]] == [
            ("1", "line 0"),
            ("3", "line 2"),
        ]
        bob.say("while Ann was away")
        back = ChatTestClient(server.server_address)
        back.handshake(identity=ann_key, stamps=True)
        back.join("Ann")
        history = [back.next_event() for _ in range(4)]
        assert [getattr(m, "id", None) for m in history] == ["1", "3", None, "4"]
        assert isinstance(history[2], protocol.Unread) and (history[2].new, history[2].shown) == (1, 1)
        assert history[3].text == "while Ann was away"
        back.close()
        bob.close()
        assert store.flush(DEADLINE)
    finally:
        stop_server(server, thread)


# --- the client ---------------------------------------------------------------------------


class Screen:
    """A terminal that keeps the lines shown."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def show(self, line: str) -> None:
        self.lines.append(line)

    def bell(self) -> None:
        pass


def client_display(**options) -> Display:
    session = Session()
    session.observe(protocol.Welcome("Ann"))
    session.stamped = True
    return Display(Screen(), session, client_ui.PLAIN, clock=lambda: NOW + 3600, **options)


def test_the_client_shows_stamped_lines_as_before_at_the_servers_time():
    shown = client_display(timestamps=True, ids=True)
    shown.show_event(protocol.StampedLine("7", NOW, "chat", "Bob", "hi"))
    shown.show_event(protocol.StampedLine("8", NOW, "action", "Bob", "waves"))
    shown.show_event(protocol.StampedLine("9", NOW, "notice", "", "Notice from the operator: noon"))
    at = client_ui.clock_time(NOW)
    assert shown.terminal.lines == [
        f"{at} #7 Bob: hi",
        f"{at} #8 * Bob waves",
        f"{at} #9 * Notice from the operator: noon",
    ]
    plain = client_display()
    plain.show_event(protocol.StampedLine("7", NOW, "chat", "Bob", "hi"))
    assert plain.terminal.lines == ["Bob: hi"]  # as an older server's line


def test_the_unread_line_and_its_marker_and_the_end_of_a_page():
    shown = client_display()
    shown.show_event(protocol.HistoryLine("5", NOW, "chat", "Bob", "seen"))
    shown.show_event(protocol.Unread(137, int(time.time()) - 60, 20))
    left = client_ui.clock_time(int(time.time()) - 60)
    assert shown.terminal.lines[1:] == [
        f"* 137 new lines since you left at {left}; showing the last 20. /history for more.",
        client_ui.NEW_MARKER,
    ]
    assert client_ui.page_end_text(protocol.PageEnd("history", 50, 1)) == "50 earlier lines above. /history for more."
    assert "beginning of the history" in client_ui.page_end_text(protocol.PageEnd("history", 3, 0))
    assert client_ui.page_end_text(protocol.PageEnd("mentions", 0, 0)) == "No one mentioned you while you were away."


def test_history_asks_for_lines_before_the_oldest_shown_until_the_beginning():
    shown = client_display()
    sent: list = []
    said: list = []
    errors: list = []
    recorder = Context(shown.session, sent.append, said.append, errors.append)
    shown.show_event(protocol.StampedLine("30", NOW, "chat", "Bob", "live"))
    client_ui.run_line("/history", recorder)
    shown.show_event(protocol.HistoryLine("10", NOW, "chat", "Bob", "older"))
    shown.show_event(protocol.PageEnd("history", 1, 1))
    client_ui.run_line("/mentions", recorder)
    shown.show_event(protocol.HistoryLine("3", NOW, "chat", "Bob", "Ann!"))  # a mention: not the history's place
    shown.show_event(protocol.PageEnd("mentions", 1, 0))
    client_ui.run_line("/history 5", recorder)
    shown.show_event(protocol.PageEnd("history", 0, 0))
    client_ui.run_line("/history", recorder)
    client_ui.run_line("/history lots", recorder)
    assert sent == [
        protocol.HistoryRequest("30", 0),
        protocol.MentionsRequest(),
        protocol.HistoryRequest("10", 5),
    ]
    assert said == ["* That is the beginning of the history: nothing is earlier."]
    assert errors == ["Usage: /history [N]"]
    sent.clear(), errors.clear()
    older = Context(Session("Ann"), sent.append, said.append, errors.append)  # a server of before the history
    client_ui.run_line("/history", older)
    assert sent == [] and "keeps no history" in errors[0]


def test_the_history_bench_measures_whole_pages_on_a_small_file():
    from bench import history_query

    result = history_query.run(lines=2_000, pages=5)
    assert result.lines == 2_000 and result.cpu_ms_per_page > 0 and result.file_bytes > 0


# --- in a cluster: the stream is the archive ---------------------------------------------


def test_in_a_cluster_every_server_gives_the_streams_ids_and_the_same_history_across_restarts(
    identity_key, redis_server
):
    from socket_chat.server import cluster
    from tests.helpers import OwnServer

    def started() -> OwnServer:
        own = OwnServer(identity_key)
        own.start(cluster=cluster.RedisCluster.connect(redis_server.url))
        return own

    def stamped(own: OwnServer, name: str) -> ChatTestClient:
        client = own.client(handshake=False)
        client.handshake(stamps=True)
        client.join(name)
        client.send(protocol.UserListRequest())  # read past the newcomer's history
        while not isinstance(client.next_event(), protocol.UserList):
            pass
        return client

    def page(client: ChatTestClient, before: str = "", count: int = 10) -> tuple[list, protocol.PageEnd]:
        client.send(protocol.HistoryRequest(before, count))
        lines = []
        while not isinstance(event := client.next_event(), protocol.PageEnd):
            if isinstance(event, protocol.HistoryLine):
                lines.append((event.id, event.text))
        return lines, event

    first, second = started(), started()
    try:
        alice, bob = stamped(first, "alice"), stamped(second, "bob")
        alice.send(protocol.EchoOwnLines())
        next_of(alice, protocol.EchoOwnLines)  # bob's join may come first
        for n in range(3):
            alice.say(f"line {n}")
        own_ids = [next_of(alice, protocol.StampedLine).id for _ in range(3)]
        assert [next_of(bob, protocol.StampedLine).id for _ in range(3)] == own_ids  # one order, one ID space
        assert own_ids == sorted(own_ids, key=int) and len(set(own_ids)) == 3
        expected = [(line_id, f"line {n}") for n, line_id in enumerate(own_ids)]
        for own in (first, second):  # each server restarted in turn answers the same
            own.cleanup()
            restarted = started()
            try:
                carol = stamped(restarted, f"carol{own is first}")
                assert page(carol) == (expected, protocol.PageEnd("history", 3, 0))
                assert page(carol, own_ids[2], 1) == (expected[1:2], protocol.PageEnd("history", 1, 1))
            finally:
                restarted.cleanup()
        last = started()
        try:
            assert OperatorConsole(last.server).execute(f"/forget {own_ids[1]}")[0].startswith("Forgot the line")
            dave = stamped(last, "dave")
            assert page(dave) == ([expected[0], expected[2]], protocol.PageEnd("history", 2, 0))
        finally:
            last.cleanup()
    finally:
        first.cleanup()
        second.cleanup()


def next_of(client: ChatTestClient, event_type):
    """The next event of ``event_type``, skipping others (joins, for one)."""
    while not isinstance(event := client.next_event(), event_type):
        pass
    return event


def test_the_messages_encode_as_protocol_md_says():
    import re
    from pathlib import Path

    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text()
    section = spec.split("### Message IDs and server time", 1)[1].split("### Key proof", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    vectors = dict(line.split(" = ") for line in block.strip().splitlines())
    assert len(vectors) == 9
    for written, hex_bytes in vectors.items():
        message = eval(written, {name: getattr(protocol, name) for name in re.findall(r"^\w+", written)})
        assert protocol.encode_message(message).hex() == hex_bytes, written
        assert protocol.decode_message(bytes.fromhex(hex_bytes)) == message


def test_forget_at_the_console_says_what_it_did(running_server):
    console = OperatorConsole(running_server)
    assert console.execute("/forget") == ["Usage: /forget ID"]
    assert console.execute("/forget abc")[0].startswith("abc is not a message ID: IDs are numbers")
    assert console.execute("/forget 7") == ["No line 7 is in the history."]
