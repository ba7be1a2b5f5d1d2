"""The history on disk (socket_chat/server/store.py): what it keeps, for how
long, off the delivery path, and what it says when its file cannot be
used. Every wait is on the writer's ``flush``; no test sleeps. The server
restarted on its store: test_store_server.py."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from contextlib import closing

import pytest

from socket_chat.chat.history import Line
from socket_chat.chat.registrations import Device
from socket_chat.chat.room import Room
from socket_chat.chat.search import SearchQuery
from socket_chat.protocol import ActionMessage, ChatMessage, HistoryMessage
from socket_chat.server import store as store_module
from socket_chat.server.store import DAY, PRUNE_INTERVAL, Retention, SqliteStore, StoreError
from tests.helpers import DEADLINE
from tests.test_room import FakeClock, FakeMember

NOW = 1_764_100_000


def line(n: int, sent_at: int = NOW, kind: str = "chat") -> Line:
    return Line(n + 1, sent_at, kind, "Ann", f"line {n}")


@pytest.fixture
def opened(tmp_path):
    """Open stores (closed at the end): ``opened(**options)``, on one file
    unless ``path`` is given."""
    stores: list[SqliteStore] = []

    def open_store(path=None, retention: Retention | None = None, **options) -> SqliteStore:
        options.setdefault("history", 100)
        options.setdefault("clock", FakeClock(NOW))  # the lines' own time: none is 30 days old
        store = SqliteStore.open(path or tmp_path / "history.sqlite3", retention or Retention(), **options)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


def reopened(opened, store: SqliteStore, **options) -> SqliteStore:
    """Close ``store`` (writing what it has) and open its file again."""
    store.close()
    return opened(store.path, store.retention, **options)


# --- what it keeps --------------------------------------------------------------


def test_lines_kept_are_there_after_a_restart_in_order_with_their_fields(opened, tmp_path):
    store = opened()
    entries = [line(1), Line(3, NOW + 1, "action", "Bob", "waves"), line(3, NOW + 2)]
    for entry in entries:
        store.keep(entry)
    assert store.flush(DEADLINE)

    again = reopened(opened, store)
    assert again.recent(10) == entries
    assert again.recent(2) == entries[1:]
    assert again.recent(0) == []
    assert stat.S_IMODE(os.stat(tmp_path / "history.sqlite3").st_mode) == 0o600


def test_a_new_file_and_its_directory_are_private(opened, tmp_path):
    path = tmp_path / "new" / "dir" / "history.sqlite3"
    opened(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_only_the_last_history_lines_are_read_at_start(opened):
    store = opened()
    for n in range(50):
        store.keep(line(n))
    store.close()
    assert [entry.text for entry in opened(store.path, history=3).recent(10)] == ["line 47", "line 48", "line 49"]


def test_close_writes_what_is_still_queued(opened):
    store = opened(interval=3600)  # no commit of its own before close
    store.keep(line(1))
    assert reopened(opened, store).recent(5) == [line(1)]


def test_the_schema_version_is_recorded(opened):
    store = opened()
    store.close()
    with closing(sqlite3.connect(store.path)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        assert version == store_module.SCHEMA_VERSION == len(store_module.MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


#: FTS5's check of an external-content index against its table's rows.
FTS_CHECK = "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"


def test_a_batch_is_stored_whole_and_indexed_a_line_kept_twice_is_the_later_and_the_schema_is_as_made(opened):
    """The writer puts a batch into messages a hundred lines a statement:
    every line is stored and found by /search, a line kept twice (in one
    batch or two) is the later, in the index too, and the file's schema is
    the migrations' alone."""
    store = opened(interval=3600)  # one batch (of three statements): nothing is written before flush
    for n in range(300):
        store.keep(Line(n + 1, NOW + n, "chat", "Ann", f"batch line {n}"))
    store.keep(Line(300, NOW, "chat", "Ann", "kept twice, the later"))
    assert store.flush(DEADLINE)
    assert len(store.search(SearchQuery(("batch",)), 1000)) == 299
    assert [m.text for m in store.search(SearchQuery(("later",)), 10)] == ["kept twice, the later"]
    store.keep(Line(1, NOW, "chat", "Ann", "kept again, later on"))
    assert store.flush(DEADLINE)
    assert len(store.search(SearchQuery(("batch",)), 1000)) == 298  # the old text left the index
    assert [m.text for m in store.search(SearchQuery(("again",)), 10)] == ["kept again, later on"]
    store.close()
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT count(*), min(id), max(id) FROM messages").fetchone() == (300, 1, 300)
        db.execute(FTS_CHECK)  # the index against the table (rank 1): raises if they differ
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        db.execute("DROP TRIGGER messages_fts_update")  # the control: a text changed behind the index's back
        db.execute("UPDATE messages SET text = 'unindexed' WHERE id = 1")
        with pytest.raises(sqlite3.DatabaseError):
            db.execute(FTS_CHECK)
    with closing(sqlite3.connect(":memory:")) as fresh:
        for step in store_module.MIGRATIONS:
            for statement in step:
                fresh.execute(statement)
        assert names == {name for (name,) in fresh.execute("SELECT name FROM sqlite_master")}


def test_a_file_of_an_older_schema_is_migrated_with_its_lines(opened, monkeypatch):
    store = opened()
    store.keep(line(1))
    store.close()
    later = [*store_module.MIGRATIONS, ["ALTER TABLE messages ADD COLUMN edited INTEGER"]]  # a version to come
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(later))

    migrated = reopened(opened, store)
    assert migrated.recent(5) == [line(1)]
    migrated.close()
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(later)
        assert db.execute("SELECT text, edited FROM messages").fetchall() == [("line 1", None)]


# --- off the delivery path ------------------------------------------------------------


class WatchedConnection(sqlite3.Connection):
    """A connection that notes the thread of each statement, and can be held
    (``hold``) in the middle of an insert, as a slow disk would."""

    threads: set[str]
    inserting: threading.Event
    hold: threading.Event

    def execute(self, *args, **kwargs):
        self.threads.add(threading.current_thread().name)
        if is_lines_insert(*args):
            self.inserting.set()
            assert self.hold.wait(DEADLINE)
        return super().execute(*args, **kwargs)

    def executemany(self, *args, **kwargs):
        self.threads.add(threading.current_thread().name)
        return super().executemany(*args, **kwargs)


def is_lines_insert(statement: str, *parameters) -> bool:
    """The writer's statement that stores lines (store.py's ``_insert``)."""
    return statement.startswith("INSERT OR REPLACE INTO messages ")


def watched_connect(threads: set[str], inserting: threading.Event, hold: threading.Event):
    def connect(*args, **kwargs):
        connection = sqlite3.connect(*args, factory=WatchedConnection, **kwargs)
        connection.threads, connection.inserting, connection.hold = threads, inserting, hold
        return connection

    return connect


def test_the_room_delivers_while_the_disk_is_stuck_and_only_the_writer_runs_sql(opened):
    threads: set[str] = set()
    inserting, disk_free = threading.Event(), threading.Event()
    store = opened(connect=watched_connect(threads, inserting, disk_free), interval=0.01)
    room = Room(history_size=5, store=store, clock=FakeClock())
    ann, bob = FakeMember(), FakeMember()
    assert ann.join(room, "Ann") and bob.join(room, "Bob")
    room.publish(ChatMessage("Ann", "first"), ann.membership)
    assert inserting.wait(DEADLINE)  # the writer took the first line and is held in its insert

    for n in range(200):  # while the writer is stuck: the room only appends to the queue
        room.publish(ChatMessage("Ann", f"line {n}"), ann.membership)
    assert bob.inbox[-1] == ChatMessage("Ann", "line 199")

    disk_free.set()
    assert store.flush(DEADLINE)
    assert threads == {"history store"}
    stored = reopened(opened, store, history=300).recent(300)
    assert [entry.text for entry in stored] == ["first"] + [f"line {n}" for n in range(200)]


def test_a_full_queue_counts_the_lines_not_stored_and_warns_once(opened, caplog):
    store = opened(capacity=2, interval=3600)
    for n in range(5):
        store.keep(line(n))
    assert store.unstored == 3
    with caplog.at_level(logging.WARNING, logger="chat.store"):
        assert store.flush(DEADLINE)
        store.keep(line(5))
        store.keep(line(6))
        store.keep(line(7))
        assert store.flush(DEADLINE)
    assert store.unstored == 4
    warnings = [r.getMessage() for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(warnings) == 1 and "3 so far" in warnings[0]
    assert [e.text for e in reopened(opened, store).recent(10)] == ["line 0", "line 1", "line 5", "line 6"]


def test_a_full_room_queue_drops_no_device_removal_and_warns_once(opened, caplog):
    """A busy room fills its own queue: a person's change queued after it
    (a device removed) is still written, and the overflow is warned at once."""
    store = opened(capacity=3, interval=3600)
    store.save_device(Device("ab" * 32, "Ann", NOW))
    assert store.flush(DEADLINE)
    with caplog.at_level(logging.WARNING, logger="chat.store"):
        for n in range(5):
            store.keep_room("#dev", line(n))
        store.drop_device("ab" * 32)
        assert store.unstored == 2
        assert store.flush(DEADLINE)
        for n in range(5, 10):
            store.keep_room("#dev", line(n))
        assert store.flush(DEADLINE)
    warnings = [r.getMessage() for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(warnings) == 1 and "2 so far" in warnings[0]
    again = reopened(opened, store)
    assert again.devices() == []
    assert [e.text for e in again.room_recent("#dev", 10)] == [f"line {n}" for n in (0, 1, 2, 5, 6, 7)]


class CountingConnection(sqlite3.Connection):
    """A connection that counts the statements storing rooms' lines."""

    room_inserts = 0

    def execute(self, *args, **kwargs):
        if " INTO room_messages " in args[0]:
            CountingConnection.room_inserts += 1
        return super().execute(*args, **kwargs)


def test_a_rooms_lines_are_stored_a_hundred_a_statement(opened, monkeypatch):
    monkeypatch.setattr(CountingConnection, "room_inserts", 0)
    store = opened(interval=3600, connect=lambda *a, **k: sqlite3.connect(*a, factory=CountingConnection, **k))
    for n in range(250):
        store.keep_room("#dev", line(n))
    assert store.flush(DEADLINE)
    assert CountingConnection.room_inserts == 3
    assert [e.text for e in store.room_recent("#dev", 300)] == [f"line {n}" for n in range(250)]


def test_the_room_keeps_only_chat_lines_and_actions_and_fills_its_history_from_the_store(opened):
    store = opened()
    room = Room(history_size=5, store=store, clock=FakeClock(NOW))
    ann = FakeMember()
    assert ann.join(room, "Ann")
    room.publish(ChatMessage("Ann", "hi"), ann.membership)
    room.publish(ActionMessage("Ann", "waves"), ann.membership)
    room.leave(ann.membership, parting="bye")  # not history: not stored

    again = reopened(opened, store)
    later = FakeMember()
    assert later.join(Room(history_size=5, store=again), "Bob")
    assert [m for m in later.inbox if isinstance(m, HistoryMessage)] == [
        HistoryMessage("Ann", "hi", NOW, "chat"),
        HistoryMessage("Ann", "waves", NOW, "action"),
    ]


# --- retention ----------------------------------------------------------------------


def test_only_the_last_keep_messages_lines_are_kept(opened):
    store = opened(retention=Retention(days=None, messages=3))
    for n in range(5):
        store.keep(line(n))
    assert [e.text for e in reopened(opened, store).recent(10)] == ["line 2", "line 3", "line 4"]


def test_lines_older_than_keep_days_are_dropped_at_start(opened):
    clock = FakeClock(NOW)
    store = opened(retention=Retention(days=30), clock=clock)
    store.keep(line(1, NOW - 31 * int(DAY)))
    store.keep(line(2, NOW - 29 * int(DAY)))
    assert [e.text for e in reopened(opened, store, clock=clock).recent(10)] == ["line 2"]


def test_retention_runs_in_the_background_while_the_server_runs(opened):
    clock = FakeClock(NOW)
    store = opened(retention=Retention(days=30), clock=clock)
    store.keep(line(1, NOW))
    store.keep(line(2, NOW + int(DAY)))
    assert store.flush(DEADLINE)

    clock.now = NOW + 30 * DAY + PRUNE_INTERVAL  # the next pass prunes: line 1 is now 30 days old and more
    assert store.flush(DEADLINE)
    store.close()
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT text FROM messages").fetchall() == [("line 2",)]


# --- faults at start: one clear line ----------------------------------------------------


def open_error(path, **options) -> str:
    with pytest.raises(StoreError) as raised:
        SqliteStore.open(path, **options)
    text = str(raised.value)
    assert "\n" not in text and str(path) in text
    return text


def private_file(path, data: bytes):
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = private_file(tmp_path / "history.sqlite3", b"this is no database\n" * 100)
    assert "is not an SQLite database" in open_error(path)
    assert path.read_bytes() == b"this is no database\n" * 100  # left as it was


def test_a_damaged_database_is_refused(opened, tmp_path):
    store = opened()
    for n in range(300):
        store.keep(Line(n + 1, NOW, "chat", "Ann", f"{n} " + "x" * 300))
    store.close()
    with open(store.path, "r+b") as file:  # the pages after the first (which says it is a database)
        file.seek(4096 * 2 + 100)
        file.write(b"\x07" * 3000)
    assert "is damaged" in open_error(store.path)


def test_a_database_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE accounts (id)")
    path.chmod(0o600)
    assert "of something else" in open_error(path)


def test_a_database_of_a_newer_version_is_refused_not_dropped(opened):
    store = opened()
    store.keep(line(1))
    store.close()
    with closing(sqlite3.connect(store.path)) as db:
        db.execute("PRAGMA user_version = 99")
    assert "newer socket-chat (schema 99" in open_error(store.path)
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_a_file_another_server_holds_is_refused_after_a_short_wait(opened):
    first = opened()
    assert "in use by another process" in open_error(first.path, busy_timeout=0.05)
    first.keep(line(1))
    assert first.flush(DEADLINE)  # the first goes on


def test_a_directory_that_is_a_file_and_a_store_that_is_a_directory_are_refused(tmp_path):
    blocker = private_file(tmp_path / "plain", b"")
    assert "not a directory" in open_error(blocker / "history.sqlite3")
    assert "is not a file" in open_error(tmp_path)


def test_a_file_readable_by_others_is_refused(tmp_path):
    path = private_file(tmp_path / "history.sqlite3", b"")
    path.chmod(0o644)
    assert "chmod 600" in open_error(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only directory")
def test_a_directory_without_write_permission_is_refused(tmp_path):
    directory = tmp_path / "read-only"
    directory.mkdir(mode=0o500)
    try:
        assert "Cannot make the history store" in open_error(directory / "history.sqlite3")
    finally:
        directory.chmod(0o700)


# --- faults while running: one warning, the chat goes on ------------------------------------


def schema_pages() -> int:
    """The pages of a file holding the schema alone (a page a table and an
    index, and the first): one so limited is full once lines come."""
    with closing(sqlite3.connect(":memory:")) as db:
        for step in store_module.MIGRATIONS:
            for statement in step:
                db.execute(statement)
        return int(db.execute("PRAGMA page_count").fetchone()[0])


def limited_connect(pages: int):
    """Connections to a disk that is full once the file has ``pages`` pages."""

    def connect(*args, **kwargs):
        connection = sqlite3.connect(*args, **kwargs)
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    return connect


class FailingConnection(sqlite3.Connection):
    def execute(self, *args, **kwargs):
        if is_lines_insert(*args):
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(*args, **kwargs)


def failing_connect(*args, **kwargs):
    return sqlite3.connect(*args, factory=FailingConnection, **kwargs)


@pytest.mark.parametrize(
    ("connect", "reason"),
    [
        (limited_connect(schema_pages()), "database or disk is full"),
        (failing_connect, "disk I/O error"),
    ],
    ids=["disk full", "I/O error"],
)
def test_a_failure_while_running_is_one_warning_and_the_chat_goes_on_in_memory(opened, caplog, connect, reason):
    store = opened(connect=connect)
    room = Room(history_size=100, store=store, clock=FakeClock(NOW))
    ann, bob = FakeMember(), FakeMember()
    assert ann.join(room, "Ann") and bob.join(room, "Bob")
    with caplog.at_level(logging.WARNING, logger="chat.store"):
        for n in range(3):
            for k in range(20):
                room.publish(ChatMessage("Ann", f"{n}.{k} " + "x" * 2000), ann.membership)
            assert store.flush(DEADLINE)
        store.close()
    assert bob.inbox[-1].text.startswith("2.19 ")  # every line delivered
    newcomer = FakeMember()
    assert newcomer.join(room, "Cat")
    assert len([m for m in newcomer.inbox if isinstance(m, HistoryMessage)]) == 60  # in memory, all of them
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and reason in failures[0] and "in memory" in failures[0]
    assert store.unstored > 0
    assert any(f"{store.unstored} lines were not stored" in r.getMessage() for r in caplog.records)
