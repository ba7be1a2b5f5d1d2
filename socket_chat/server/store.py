"""The history kept on disk: an SQLite file (the standard library's
``sqlite3``) written by one thread of its own, off the delivery path.

The room hands each chat line and action it keeps to ``SqliteStore.keep``
under its lock; that only appends to a bounded queue (O(1), never a wait,
never SQL: the row is built by the writer). The writer thread owns the
one connection: every ``COMMIT_INTERVAL`` it takes what is queued and
commits it in one transaction, a hundred lines a statement (so the
full-text index is written once a hundred lines, not once a line: ``_insert``),
and now and then it drops what the retention no longer keeps.
A line the room has delivered is on disk within a second, so a server
killed (``kill -9``) or restarted loses none of what its people saw.
The rooms' lines (``keep_room``) have a bounded queue of their own, written
the same way: a busy room never crowds out a person's change (below).

The file is opened in WAL mode with ``synchronous=NORMAL``: a commit is in
the write-ahead log, which the operating system has, when ``COMMIT`` returns;
a killed process loses nothing committed, a power cut may lose the last
commits (never the file's consistency). A lock file holds the file for this
server alone (below): a second server on the same file is refused at start
(after ``BUSY_TIMEOUT``), not left to interleave with the first.

What goes wrong at start (the file is not a database, is in use, cannot be
written) is a ``StoreError`` whose message is the line for the operator.
What goes wrong while running (a full disk, an I/O error) is one warning in
the log; the chat goes on with its history in memory, and the lines not
stored are counted (``unstored``, logged again at close).

The same file keeps the registered names (``chat.registrations``; the
``names`` table, schema 2): read once at start, and each change queued and
written by the same thread in the same commits. A registration made less
than a commit interval before a crash may be lost: the name is then free
again, and the next key to take it registers it.

It keeps the devices (``/device add``; the ``devices`` table, schema 3),
the private lines waiting for someone offline (``chat.offline``; the
``waiting`` table, schema 6) and the bans (``chat.bans``; the ``bans``
table, schema 4) the same way: read at start, each change queued as one SQL
statement and written by the writer thread in order. A ban set less than a
commit interval before a crash may be lost (the operator's log line says it
was set).

Schema 6 adds the full-text index of the lines too (``/search``: an FTS5
table over ``messages.text``, an external-content one kept in step by
triggers, so the writer's inserts and the retention's deletes keep it
right).

Searches run on a connection of their own, read-only, opened on the first
one: in WAL mode a reader neither waits for the writer nor makes it wait,
so a search delays no delivery and no commit. One search runs at a time
(a lock; each is bounded by ``SEARCH_TIMEOUT``), in the thread of the
person who asked.

One server per file: SQLite's ``locking_mode=EXCLUSIVE`` would also shut
out that reader, so the file is held instead by an ``flock`` on a lock file
beside it (``FILE.lock``, 0600), taken before SQLite opens the file and
kept until ``close``: a second server on the same file is refused at start
(after ``BUSY_TIMEOUT``). The operator may still read the file with
``sqlite3`` while the server runs.

It keeps too, by the key's fingerprint, when each person with a key last
left (the last line ID and the time: their unread count) and their away
state (the ``seen`` and ``away`` tables, schema 5), read once at start and
written as the names are. A line's ID is the room's (``chat.history.Line``),
stored as the row's ``id``. The IDs the room hands out, notices' too (never
stored), are reserved ahead (``ID_BLOCK``) in the ``meta`` table (its own step),
written by the same writer in the same commits: no ID is given twice, across
restarts and kills.

Reading back (``page``, ``count_after``, ``mentioning``, ``forget``) is
asked of the writer thread, which owns the connection that writes: the asking thread
(a member's reader, the console) waits for the answer, ``ASK_TIMEOUT`` at
most; the room's lock is never held meanwhile. The writer answers after
writing what was queued, so a page holds every line kept before it was
asked for.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from socket_chat.chat.bans import Ban
from socket_chat.chat.history import HistoryUnavailable, Line, Seen
from socket_chat.chat.offline import Waiting
from socket_chat.chat.presentation import mentions
from socket_chat.chat.registrations import Device, Registration
from socket_chat.chat.search import SearchQuery, SearchUnavailable, fts_expression
from socket_chat.crypto import keystore
from socket_chat.protocol import HistoryMessage

__all__ = [
    "ASK_TIMEOUT",
    "BUSY_TIMEOUT",
    "COMMIT_INTERVAL",
    "QUEUE_LINES",
    "SCHEMA_VERSION",
    "SEARCH_TIMEOUT",
    "Retention",
    "SqliteStore",
    "StoreError",
    "default_path",
]

log = logging.getLogger("chat.store")

COMMIT_INTERVAL = 0.25  # seconds between commits: a line is on disk well within a second
QUEUE_LINES = 10_000  # lines waiting for the writer; beyond this they are counted, not stored
INSERT_ROWS = 100  # lines one INSERT of the writer stores (_insert): 500 parameters, below SQLite's 999
#: A room line's INSERT, before its VALUES: not OR REPLACE (see _insert_room_lines).
ROOM_INSERT = "INSERT INTO room_messages (room, id, sent_at, sender, kind, text) VALUES "
BUSY_TIMEOUT = 2.0  # seconds to wait for a file another process holds, then refuse it
PRUNE_INTERVAL = 600.0  # seconds between two passes of the retention
OPEN_TIMEOUT = 30.0  # seconds the writer may take to open, check and read the file at start
CLOSE_TIMEOUT = 5.0  # seconds ``close`` waits for what is queued to be written
SEARCH_TIMEOUT = 1.0  # seconds one search may run before it is stopped (its person is told)
LOCK_POLL = 0.05  # seconds between two tries of another server's lock file
ASK_TIMEOUT = 5.0  # seconds a reader waits for the writer's answer (a page, a count)
#: Rows ``mentioning`` reads per pass of its filter (SQL's LIKE on the
#: casefolded text finds the name's letters; ``mentions`` decides if it is
#: the whole name).
MENTION_SCAN = 500
#: Message IDs reserved ahead on disk (the ``meta`` row ``reserved_id``), as
#: a sequence allocator reserves a block: the room may hand out every ID up
#: to the reservation without a wait, and the writer moves it on once half
#: of it is given, in its next commit. So no ID handed out (a forgotten
#: line's, a notice's, never stored) is given again after a restart or a
#: ``kill -9``; a kill leaves a gap of at most this many IDs.
ID_BLOCK = 100_000
DAY = 86_400.0

#: The schema, one step per version: ``MIGRATIONS[n]`` takes a file of
#: version n to n + 1 (``PRAGMA user_version``), inside one transaction. A
#: change to come is a new step at the end; a step is never edited or
#: removed, so a file of any older version is brought up to date, never
#: dropped.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, sent_at INTEGER NOT NULL,"
        " sender TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL)",
        "CREATE INDEX messages_sent_at ON messages (sent_at)",
    ],
    [  # 2: registered names (chat.registrations), by the name as registered
        "CREATE TABLE names (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " registered_at INTEGER NOT NULL, used_at INTEGER NOT NULL)",
    ],
    [  # 3: devices (chat.registrations): a key that may use its owner's names
        "CREATE TABLE devices (fingerprint TEXT PRIMARY KEY, owner TEXT NOT NULL, added_at INTEGER NOT NULL)",
    ],
    [  # 4: bans (chat.bans): a fingerprint or an address/network; until 0: for ever
        "CREATE TABLE bans (target TEXT PRIMARY KEY, reason TEXT NOT NULL, set_by TEXT NOT NULL,"
        " set_at INTEGER NOT NULL, until INTEGER NOT NULL, name TEXT NOT NULL)",
    ],
    [  # 5: history: when each key last left (its unread count), and its away state
        "CREATE TABLE seen (fingerprint TEXT PRIMARY KEY, last_id INTEGER NOT NULL, left_at INTEGER NOT NULL)",
        "CREATE TABLE away (fingerprint TEXT PRIMARY KEY, message TEXT NOT NULL)",
    ],
    [  # 6: /search's full-text index of the lines (kept by triggers, the lines stored so far indexed
        # here), and the private lines waiting for someone offline (chat.offline)
        "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id',"
        " tokenize='unicode61 remove_diacritics 2')",
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
        " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN"
        " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN"
        " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
        " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
        "CREATE TABLE waiting (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, sender TEXT NOT NULL,"
        " recipient TEXT NOT NULL, text TEXT NOT NULL, sent_at INTEGER NOT NULL)",
        "CREATE INDEX waiting_fingerprint ON waiting (fingerprint)",
    ],
    [  # the store's own facts, a row each: ``reserved_id``, the message IDs' high-water mark
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ],
    [  # rooms (chat.rooms): each room's lines, by the room's key, in an ID sequence of its own
        "CREATE TABLE room_messages (room TEXT NOT NULL, id INTEGER NOT NULL, sent_at INTEGER NOT NULL,"
        " sender TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (room, id))",
        "CREATE INDEX room_messages_sent_at ON room_messages (sent_at)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

#: A change for the writer to make: one SQL statement and its parameters.
Change = tuple[str, tuple[object, ...]]


class StoreError(Exception):
    """The store cannot be used; the message is the line for the operator."""


@dataclass(frozen=True)
class Retention:
    """How long lines are kept: ``days`` (None: for ever) and at most the
    last ``messages`` (None: no cap)."""

    days: float | None = 30
    messages: int | None = None


def default_path() -> Path:
    """``$XDG_DATA_HOME/socket-chat/history.sqlite3``."""
    return keystore.data_dir() / "history.sqlite3"


class SqliteStore:
    """The history on disk (``chat.history.HistoryStore``), with its writer.

    Methods for the caller:
        open(path, ...): make or open the file, check it, read the last
            lines, start the writer; raises ``StoreError``.
        keep(entry): from the room, under its lock: queue a line.
        recent(count): the last lines stored before this start.
        flush(timeout): wait until what was kept so far is written.
        close(): write what is queued (a bounded wait), stop, close the file.

    Args:
        path: the SQLite file.
        retention: what to keep.
        history: how many of the last lines to read at start (``recent``).
        clock: Unix time, for the retention by days (tests pin it).
        connect: opens the file (``sqlite3.connect``'s signature); tests
            give one whose connection fails as they need.
        interval: seconds between commits.
        capacity: what each queue holds: the lobby's lines, the rooms'
            lines, the other changes.
        busy_timeout: seconds to wait for a file another process holds.
    """

    def __init__(
        self,
        path: Path,
        retention: Retention = Retention(),
        *,
        history: int = 0,
        clock: Callable[[], float] = time.time,
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect,
        interval: float = COMMIT_INTERVAL,
        capacity: int = QUEUE_LINES,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self.retention = retention
        self._history, self._clock, self._connect = history, clock, connect
        self._interval, self._capacity, self._busy_timeout = interval, capacity, busy_timeout
        self._queue: collections.deque[Line] = collections.deque()
        # The rooms' lines (keep_room), bounded as the lobby's and apart
        # from _changes: a busy room never crowds out a person's change.
        self._room_queue: collections.deque[tuple[str, Line]] = collections.deque()
        self._lock = threading.Lock()  # the queue and the counts; never held across I/O
        self._passed = threading.Condition(self._lock)
        self._passes_begun = self._passes_done = 0  # of the writer's loop
        self._unstored = 0
        self._overflowed = False  # the queue was full: the writer warns (the first time)
        self._overflow_told = False
        self._failed = False  # a write failed: nothing more is stored
        self._wake = threading.Event()
        self._stopping = False
        self._recent: list[Line] = []
        self._last_id = 0  # the highest ID given before this start
        self._given = 0  # the highest ID the room has handed out since (``given``)
        self._reserved = 0  # IDs up to this are reserved on disk (ID_BLOCK)
        self._outran_told = False
        # By fingerprint: in memory for the room (no I/O); written as changes.
        self._seen: dict[str, Seen] = {}
        self._away: dict[str, str] = {}
        self._asks: collections.deque[_Ask] = collections.deque()
        # The other changes to write (names, devices, bans, waiting private
        # lines, seen and away), each one SQL statement with its parameters,
        # in order: a drop after a save of the same row wins.
        self._changes: collections.deque[Change] = collections.deque()
        # What those tables held at start.
        self._registered: list[Registration] = []
        self._devices: list[Device] = []
        self._waited: list[Waiting] = []
        self._banned: list[Ban] = []
        self._lock_fd: int | None = None  # the flock on FILE.lock: this server's file
        self._reader: sqlite3.Connection | None = None  # searches' own, opened on the first
        self._reader_lock = threading.Lock()
        self._reader_closed = False  # by close: searches are refused from then on
        self._search_deadline = 0.0
        self._ready = threading.Event()
        self._start_error: StoreError | None = None
        self._thread = threading.Thread(target=self._run, name="history store", daemon=True)
        self._pruned_at = 0.0

    @classmethod
    def open(cls, path: Path, retention: Retention = Retention(), **options) -> SqliteStore:
        """The store at ``path`` (made 0600 if missing), its writer running.

        Raises:
            StoreError: the file or a directory above it is unsafe, cannot
                be made or written, is not a database (or is damaged), is in
                use by another process, or is of a newer schema.
        """
        store = cls(path, retention, **options)
        store._make_file()
        store._hold_file()
        store._thread.start()
        if not store._ready.wait(OPEN_TIMEOUT):
            store._stopping = True  # the writer gives the file up if it opens it yet
            store._wake.set()
            store._let_go()  # this server will not use the file: another may
            raise StoreError(f"The history store {path} did not open within {OPEN_TIMEOUT:g} s.")
        if store._start_error is not None:
            store._let_go()
            raise store._start_error
        return store

    # Methods for the room (chat.history.HistoryStore).

    def keep(self, entry: Line) -> None:
        with self._lock:
            if self._failed or len(self._queue) >= self._capacity:
                self._unstored += 1
                self._overflowed = self._overflowed or not self._failed
                return
            self._queue.append(entry)

    def recent(self, count: int) -> list[Line]:
        return self._recent[-count:] if count > 0 else []

    def last_id(self) -> int:
        return self._last_id

    def given(self, line_id: int) -> None:
        with self._lock:
            self._given = max(self._given, line_id)

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool]:
        def read(db: sqlite3.Connection) -> tuple[list[Line], bool]:
            rows = db.execute(
                f"SELECT {_LINE_COLUMNS} FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**63 - 1, count + 1),
            ).fetchall()
            return [_line(row) for row in reversed(rows[:count])], len(rows) > count

        return self._ask(read)

    def count_after(self, line_id: int) -> int:
        return self._ask(
            lambda db: int(db.execute("SELECT count(*) FROM messages WHERE id > ?", (line_id,)).fetchone()[0])
        )

    def mentioning(self, name: str, after: int, upto: int, cap: int) -> list[Line]:
        def read(db: sqlite3.Connection) -> list[Line]:
            found: list[Line] = []
            below = upto + 1
            folded = name.casefold()  # LIKE ignores only ASCII case: both sides folded, "élodie:" for Élodie
            pattern = "%" + folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            while len(found) < cap:
                rows = db.execute(
                    f"SELECT {_LINE_COLUMNS} FROM messages WHERE id > ? AND id < ?"
                    " AND casefold(text) LIKE ? ESCAPE '\\'"
                    " ORDER BY id DESC LIMIT ?",
                    (after, below, pattern, MENTION_SCAN),
                ).fetchall()
                found += [line for line in map(_line, rows) if mentions(line.text, name)]
                if len(rows) < MENTION_SCAN:
                    break
                below = int(rows[-1][0])
            return found[:cap]

        return self._ask(read)

    def forget(self, line_id: int) -> bool:
        return self._ask(lambda db: db.execute("DELETE FROM messages WHERE id = ?", (line_id,)).rowcount > 0)

    def seen(self, fingerprint: str) -> Seen | None:
        with self._lock:
            return self._seen.get(fingerprint)

    def save_seen(self, fingerprint: str, seen: Seen) -> None:
        with self._lock:
            self._seen[fingerprint] = seen
            self._queue_change_locked(
                "INSERT OR REPLACE INTO seen (fingerprint, last_id, left_at) VALUES (?, ?, ?)",
                (fingerprint, seen.last_id, seen.left_at),
            )

    def away(self, fingerprint: str) -> str | None:
        with self._lock:
            return self._away.get(fingerprint)

    # Methods for the rooms (chat.history.RoomHistoryStore).

    def keep_room(self, room: str, entry: Line) -> None:
        with self._lock:
            if self._failed or len(self._room_queue) >= self._capacity:
                self._unstored += 1
                self._overflowed = self._overflowed or not self._failed
                return
            self._room_queue.append((room, entry))

    def room_recent(self, room: str, count: int) -> list[Line]:
        def read(db: sqlite3.Connection) -> list[Line]:
            rows = db.execute(
                f"SELECT {_LINE_COLUMNS} FROM room_messages WHERE room = ? ORDER BY id DESC LIMIT ?", (room, count)
            ).fetchall()
            return [_line(row) for row in reversed(rows)]

        return self._ask(read)

    def save_away(self, fingerprint: str, message: str | None) -> None:
        with self._lock:
            if message is None:
                self._away.pop(fingerprint, None)
                self._queue_change_locked("DELETE FROM away WHERE fingerprint = ?", (fingerprint,))
            else:
                self._away[fingerprint] = message
                self._queue_change_locked(
                    "INSERT OR REPLACE INTO away (fingerprint, message) VALUES (?, ?)", (fingerprint, message)
                )

    def _ask(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the writer thread and wait for its answer.

        Raises:
            HistoryUnavailable: no answer within ``ASK_TIMEOUT`` (the writer
                is busy or has stopped), or SQLite failed.
        """
        ask = _Ask(work)
        with self._lock:
            if not self._thread.is_alive() or self._stopping:
                raise HistoryUnavailable("the store is closed")
            self._asks.append(ask)
        self._wake.set()
        if not ask.done.wait(ASK_TIMEOUT) or ask.failed:
            raise HistoryUnavailable("the store did not answer")
        return ask.result  # type: ignore[return-value]

    # Methods for the registrations (chat.registrations.RegistrationStore).

    def registrations(self) -> list[Registration]:
        return list(self._registered)

    def save_registration(self, registration: Registration) -> None:
        r = registration
        self._queue_change(
            "INSERT OR REPLACE INTO names (name, fingerprint, registered_at, used_at) VALUES (?, ?, ?, ?)",
            (r.name, r.fingerprint, r.registered_at, r.used_at),
        )

    def drop_registration(self, name: str) -> None:
        self._queue_change("DELETE FROM names WHERE name = ?", (name,))

    def _queue_change(self, statement: str, parameters: tuple[object, ...]) -> None:
        with self._lock:
            self._queue_change_locked(statement, parameters)

    def _queue_change_locked(self, statement: str, parameters: tuple[object, ...]) -> None:
        """Under the lock: a change for the writer (counted, not kept, when
        the store has failed or the queue is full)."""
        if self._failed or len(self._changes) >= self._capacity:
            self._unstored += 1
            self._overflowed = self._overflowed or not self._failed  # warned at once, as a line's
            return
        self._changes.append((statement, parameters))

    # Methods for the devices (chat.registrations.RegistrationStore).

    def devices(self) -> list[Device]:
        return list(self._devices)

    def save_device(self, device: Device) -> None:
        self._queue_change(
            "INSERT OR REPLACE INTO devices (fingerprint, owner, added_at) VALUES (?, ?, ?)",
            (device.fingerprint, device.owner, device.added_at),
        )

    def drop_device(self, fingerprint: str) -> None:
        self._queue_change("DELETE FROM devices WHERE fingerprint = ?", (fingerprint,))

    # Methods for the waiting private lines (chat.offline.OfflineStore).

    def waiting_messages(self) -> list[Waiting]:
        return list(self._waited)

    def save_waiting(self, message: Waiting) -> None:
        w = message
        self._queue_change(
            "INSERT INTO waiting (fingerprint, sender, recipient, text, sent_at) VALUES (?, ?, ?, ?, ?)",
            (w.fingerprint, w.sender, w.recipient, w.text, w.sent_at),
        )

    def drop_waiting(self, fingerprint: str) -> None:
        self._queue_change("DELETE FROM waiting WHERE fingerprint = ?", (fingerprint,))

    # Methods for the sessions (chat.search.SearchIndex).

    def search(self, query: SearchQuery, limit: int) -> list[HistoryMessage]:
        """The newest ``limit`` stored lines that match, newest first, read
        on the searches' own connection (never the writer's): stopped after
        ``SEARCH_TIMEOUT``. What is still queued is not found yet.

        Raises:
            SearchUnavailable: the file could not be read, or the search
                ran too long.
        """
        sql, parameters = search_statement(query, limit)
        with self._reader_lock:
            if self._reader_closed:  # after close: never a new connection to the file
                raise SearchUnavailable("The search failed: the server is closing its history store.")
            try:
                reader = self._open_reader()
                self._search_deadline = time.monotonic() + SEARCH_TIMEOUT
                rows = reader.execute(sql, parameters).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise SearchUnavailable(
                        f"The search ran longer than {SEARCH_TIMEOUT:g} s and was stopped: "
                        "give more words, or a narrower time."
                    ) from None
                log.warning("The history store %s: a search failed: %s", self.path, describe(exc))
                raise SearchUnavailable("The search failed: the server could not read its history store.") from None
            except sqlite3.Error as exc:
                log.warning("The history store %s: a search failed: %s", self.path, describe(exc))
                raise SearchUnavailable("The search failed: the server could not read its history store.") from None
        return [HistoryMessage(str(s), str(t), int(at), str(k)) for s, t, at, k in rows]

    def _open_reader(self) -> sqlite3.Connection:
        """Under ``_reader_lock``: the searches' read-only connection."""
        if self._reader is None:
            uri = "file:" + urllib.parse.quote(str(self.path)) + "?mode=ro"
            reader = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, check_same_thread=False)
            reader.set_progress_handler(lambda: time.monotonic() > self._search_deadline, 1000)  # SQLite steps
            self._reader = reader
        return self._reader

    # Methods for the bans (chat.bans.BanStore).

    def bans(self) -> list[Ban]:
        return list(self._banned)

    def save_ban(self, ban: Ban) -> None:
        self._queue_change(
            "INSERT OR REPLACE INTO bans (target, reason, set_by, set_at, until, name) VALUES (?, ?, ?, ?, ?, ?)",
            (ban.target, ban.reason, ban.by, ban.set_at, ban.until, ban.name),
        )

    def drop_ban(self, target: str) -> None:
        self._queue_change("DELETE FROM bans WHERE target = ?", (target,))

    # Methods for the server.

    @property
    def writer_native_id(self) -> int | None:
        """The writer thread's id in the operating system (None before it
        starts): a profiler's, or bench/store.py's, to read its CPU time."""
        return self._thread.native_id

    @property
    def unstored(self) -> int:
        """Lines kept by the room but not stored (a full queue, a failed write)."""
        with self._lock:
            return self._unstored

    def flush(self, timeout: float) -> bool:
        """Wait until the writer has made a whole pass begun after this call:
        every line kept before it is written (or counted as not stored), and
        the retention applied if it was due. False if that took longer than
        ``timeout`` or the writer has stopped."""
        with self._passed:
            after = self._passes_begun
            self._wake.set()
            return (
                self._passed.wait_for(lambda: self._passes_done > after or not self._thread.is_alive(), timeout)
                and self._passes_done > after
            )

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued (waiting ``timeout`` at most), then stop the
        writer and close the file. The room must be done with the store."""
        with self._reader_lock:  # first: the writer's close, the last, then removes the WAL
            self._reader_closed = True
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("The history store %s: not all was written within %g s", self.path, timeout)
        self._let_go()
        unstored = self.unstored
        if unstored:
            log.warning("The history store %s: %d lines were not stored (kept in memory only)", self.path, unstored)

    # The writer thread.

    def _run(self) -> None:
        try:
            db = self._open_database()
        except (sqlite3.Error, StoreError) as exc:
            self._start_error = (
                exc if isinstance(exc, StoreError) else StoreError(start_error_text(self.path, exc, self._busy_timeout))
            )
            return
        finally:
            self._ready.set()  # open() reads _start_error once this is set
        try:
            self._write_until_stopped(db)
        finally:
            db.close()

    def _write_until_stopped(self, db: sqlite3.Connection) -> None:
        while True:
            self._wake.wait(self._interval)
            with self._lock:
                self._wake.clear()
                self._passes_begun += 1
            stopping = self._stopping
            if self._clock() - self._pruned_at >= PRUNE_INTERVAL:
                self._guarded(db, self._prune)
            asks = self._write_queued(db, final=stopping)
            self._answer_asks(db, asks)
            with self._passed:
                self._passes_done += 1
                self._passed.notify_all()
            if stopping:
                return

    def _write_queued(self, db: sqlite3.Connection, final: bool = False) -> collections.deque[_Ask]:
        """Write what is queued; the asks taken with it, to answer once it is
        written (an ask queued after the swap waits for the next pass, so
        every ask sees each change queued before it)."""
        with self._lock:
            # Swapped, not copied: the room waits for this lock, and a copy
            # would keep it as long as the queue is.
            batch, self._queue = self._queue, collections.deque()
            rooms, self._room_queue = self._room_queue, collections.deque()
            changes, self._changes = self._changes, collections.deque()
            asks, self._asks = self._asks, collections.deque()
            overflowed, self._overflowed = self._overflowed, False
            given = self._given
        reserve = self._reservation(given, final)
        if reserve is not None:
            changes.append(_reserve_change(reserve))
        if overflowed and not self._overflow_told:
            self._overflow_told = True
            log.warning(
                "The history store %s cannot keep up: lines are not being stored (%d so far; "
                "the count is logged at the end)",
                self.path,
                self.unstored,
            )
        if (batch or rooms or changes) and not self._guarded(db, lambda db: self._insert(db, batch, changes, rooms)):
            with self._lock:
                self._unstored += len(batch) + len(rooms) + len(changes)
        elif reserve is not None:
            self._reserved = reserve
        return asks

    def _reservation(self, given: int, final: bool) -> int | None:
        """The IDs' next high-water mark to write, or None: the one on disk
        does. The last pass (``final``: the room is done) writes the last ID
        given, so a clean restart goes on from it without a gap."""
        if self._failed:
            return None
        if final:
            exact = max(given, self._last_id)
            return exact if exact != self._reserved else None
        if given > self._reserved - ID_BLOCK // 2:
            if given > self._reserved and not self._outran_told:  # a burst outran it between two commits
                self._outran_told = True
                log.warning("The history store %s: message IDs were handed out past their reservation", self.path)
            return given + ID_BLOCK
        return None

    def _answer_asks(self, db: sqlite3.Connection, asks: Iterable[_Ask]) -> None:
        for ask in asks:
            try:
                ask.result = ask.work(db)
            except Exception as exc:  # any: a bad ask (an OverflowError) must not end the writer
                ask.failed = True
                log.warning("The history store %s could not be read: %s", self.path, describe(exc))
            finally:
                ask.done.set()

    def _guarded(self, db: sqlite3.Connection, work: Callable[[sqlite3.Connection], None]) -> bool:
        """Run ``work`` in one transaction. A failure (full disk, I/O error)
        is warned about once, and then nothing more is stored."""
        if self._failed:
            return False
        try:
            with transaction(db):
                work(db)
            return True
        except sqlite3.Error as exc:
            with self._lock:
                self._failed = True
                unstored = self._unstored + len(self._queue) + len(self._room_queue) + len(self._changes)
                self._unstored = unstored
                self._queue.clear()
                self._room_queue.clear()
                self._changes.clear()
            log.warning(
                "The history store %s failed: %s. The chat goes on; its history is kept in memory only "
                "from now on (the lines not stored are counted and logged at the end).",
                self.path,
                describe(exc),
            )
            return False

    def _insert(
        self,
        db: sqlite3.Connection,
        batch: Iterable[Line],
        changes: Iterable[Change] = (),
        rooms: Iterable[tuple[str, Line]] = (),
    ) -> None:
        # A batch goes into messages INSERT_ROWS lines a statement (one
        # multi-row VALUES), not one INSERT a line as executemany does: FTS5
        # writes out what it holds at the end of each statement that changes
        # it, so a statement a line had the index write, and then merge, a
        # segment a line (measured: 17 µs of the writer's CPU a line,
        # against 4 so), and each statement gives the GIL up and takes it
        # back from the threads that deliver: once a line, now once a
        # hundred. OR REPLACE: a line kept twice is the later.
        lines = list(batch)  # the queue's deque: sliced below
        for start in range(0, len(lines), INSERT_ROWS):
            chunk = lines[start : start + INSERT_ROWS]
            db.execute(
                "INSERT OR REPLACE INTO messages (id, sent_at, sender, kind, text) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                [field for entry in chunk for field in (entry.id, entry.sent_at, entry.sender, entry.kind, entry.text)],
            )
        self._insert_room_lines(db, list(rooms))
        for statement, parameters in changes:  # in order: a drop after a save of the same row wins
            self._execute_or_refuse(db, statement, parameters)

    def _insert_room_lines(self, db: sqlite3.Connection, rooms: list[tuple[str, Line]]) -> None:
        """The rooms' lines, ``INSERT_ROWS`` a statement as the lobby's
        (600 parameters, below SQLite's 999). Not OR REPLACE: a line under
        an ID already stored is refused (warned, counted), never written
        over it; the chunk it was in is then written a line at a time."""
        for start in range(0, len(rooms), INSERT_ROWS):
            chunk = rooms[start : start + INSERT_ROWS]
            try:
                db.execute(
                    ROOM_INSERT + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
                    [field for room, e in chunk for field in (room, e.id, e.sent_at, e.sender, e.kind, e.text)],
                )
            except sqlite3.IntegrityError:  # the statement is undone whole: find the line refused
                for room, e in chunk:
                    self._execute_or_refuse(
                        db, ROOM_INSERT + "(?, ?, ?, ?, ?, ?)", (room, e.id, e.sent_at, e.sender, e.kind, e.text)
                    )

    def _execute_or_refuse(self, db: sqlite3.Connection, statement: str, parameters: tuple[object, ...]) -> None:
        """One change; if a constraint refuses it, only it is undone (and
        warned about, and counted): the others are written."""
        try:
            db.execute(statement, parameters)
        except sqlite3.IntegrityError as exc:
            with self._lock:
                self._unstored += 1
            log.warning("The history store %s refused a change (%s): %s", self.path, statement[:40], describe(exc))

    def _prune(self, db: sqlite3.Connection) -> None:
        """Drop what the retention no longer keeps."""
        self._pruned_at = self._clock()
        if self.retention.days is not None:
            oldest = max(0.0, self._clock() - self.retention.days * DAY)  # never below 0: --keep-days 10**15 too
            db.execute("DELETE FROM messages WHERE sent_at < ?", (int(oldest),))
            db.execute("DELETE FROM waiting WHERE sent_at < ?", (int(oldest),))  # for a key gone that long
            db.execute("DELETE FROM room_messages WHERE sent_at < ?", (int(oldest),))
        if self.retention.messages is not None:
            db.execute(
                "DELETE FROM messages WHERE id <= (SELECT id FROM messages ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.retention.messages,),
            )
            db.execute(  # each room keeps its own last lines (the key (room, id) finds each room's cut)
                "DELETE FROM room_messages WHERE id <= (SELECT r.id FROM room_messages r"
                " WHERE r.room = room_messages.room ORDER BY r.id DESC LIMIT 1 OFFSET ?)",
                (self.retention.messages,),
            )

    # Opening.

    def _make_file(self) -> None:
        """Make the file 0600 (its directory 0700) before SQLite opens it,
        which would make it by the umask; check it and the directories above."""
        try:
            if not self.path.exists():
                try:
                    keystore.create_private_file(self.path, "history store")
                except FileExistsError:
                    if not self.path.exists():  # not made meanwhile by another process: a directory is a file
                        raise
            elif not self.path.is_file():
                raise StoreError(f"The history store {self.path} is not a file. Choose another with --store FILE.")
            keystore.check_safe_path(self.path, "history store", private=True)
        except keystore.KeyFileError as exc:
            raise StoreError(str(exc)) from None
        except OSError as exc:
            # mkdir of a directory that is a file says "File exists".
            reason = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror or exc
            raise StoreError(
                f"Cannot make the history store {self.path}: {exc.filename}: {reason}. "
                "Choose another with --store FILE, or keep nothing with --store none."
            ) from None

    def _hold_file(self) -> None:
        """Take the flock on ``FILE.lock`` (made 0600), waiting up to the
        busy timeout for another server to let it go.

        Raises:
            StoreError: another process holds it, or it cannot be made.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(
                f"Cannot make the history store's lock file {lock_path}: {exc.strerror or exc}. "
                "Choose another file with --store FILE, or keep nothing with --store none."
            ) from None
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(LOCK_POLL)  # at start only: flock has no timeout of its own
                    continue
                os.close(fd)
                raise StoreError(_START_ERRORS["SQLITE_BUSY"].format(path=self.path, busy=self._busy_timeout)) from None
            self._lock_fd = fd
            return

    def _let_go(self) -> None:
        """Release the lock file (the writer is done with the file)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    def _open_database(self) -> sqlite3.Connection:
        db = self._connect(str(self.path), timeout=self._busy_timeout, isolation_level=None)
        try:
            # Not locking_mode=EXCLUSIVE: it would shut out the searches'
            # reader; the lock file keeps other servers out (_hold_file).
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.create_function("casefold", 1, str.casefold, deterministic=True)  # for mentioning's filter
            # A line stored again (INSERT OR REPLACE, _insert) then takes its
            # old text out of the full-text index: the row REPLACE deletes
            # fires messages_fts_delete only so.
            db.execute("PRAGMA recursive_triggers = ON")
            with transaction(db):  # takes the file's lock: another server's is refused here
                check_intact(db)
                migrate(db, self.path)
                self._prune(db)
            self._recent = self._read_recent(db)
            self._read_people(db)
            with transaction(db):  # before any ID is handed out: the first block, on disk
                db.execute(*_reserve_change(self._last_id + ID_BLOCK))
            self._reserved = self._last_id + ID_BLOCK
            rows = db.execute("SELECT name, fingerprint, registered_at, used_at FROM names").fetchall()
            self._registered = [Registration(str(n), str(f), int(r), int(u)) for n, f, r, u in rows]
            rows = db.execute("SELECT fingerprint, owner, added_at FROM devices").fetchall()
            self._devices = [Device(str(f), str(o), int(a)) for f, o, a in rows]
            rows = db.execute(
                "SELECT fingerprint, sender, recipient, text, sent_at FROM waiting ORDER BY id"
            ).fetchall()
            self._waited = [Waiting(str(f), str(s), str(r), str(t), int(at)) for f, s, r, t, at in rows]
            rows = db.execute("SELECT target, reason, set_by, set_at, until, name FROM bans").fetchall()
            self._banned = [Ban(str(t), str(r), str(b), int(s), int(u), str(n)) for t, r, b, s, u, n in rows]
            return db
        except BaseException:
            db.close()
            raise

    def _read_recent(self, db: sqlite3.Connection) -> list[Line]:
        rows = db.execute(f"SELECT {_LINE_COLUMNS} FROM messages ORDER BY id DESC LIMIT ?", (self._history,)).fetchall()
        return [_line(row) for row in reversed(rows)]

    def _read_people(self, db: sqlite3.Connection) -> None:
        """The keys' last leaving and away states, and the last line ID
        given (the highest stored, or that a leaving saw: lines pruned or
        forgotten do not give their IDs again)."""
        for fingerprint, last_id, left_at in db.execute("SELECT fingerprint, last_id, left_at FROM seen"):
            self._seen[str(fingerprint)] = Seen(int(last_id), int(left_at))
        for fingerprint, message in db.execute("SELECT fingerprint, message FROM away"):
            self._away[str(fingerprint)] = str(message)
        stored = db.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
        row = db.execute("SELECT value FROM meta WHERE key = 'reserved_id'").fetchone()
        reserved = int(row[0]) if row is not None else 0
        self._last_id = max([int(stored), reserved, *(seen.last_id for seen in self._seen.values())])


_T = TypeVar("_T")
_LINE_COLUMNS = "id, sent_at, kind, sender, text"


def _reserve_change(high_water: int) -> Change:
    """The change that sets the IDs' high-water mark (``ID_BLOCK``)."""
    return ("INSERT OR REPLACE INTO meta (key, value) VALUES ('reserved_id', ?)", (high_water,))


def _line(row: Sequence[object]) -> Line:
    line_id, sent_at, kind, sender, text = row
    return Line(int(line_id), int(sent_at), str(kind), str(sender), str(text))  # type: ignore[call-overload]


class _Ask:
    """A question for the writer thread, and its answer when ``done``."""

    def __init__(self, work: Callable[[sqlite3.Connection], object]) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: object = None
        self.failed = False


def search_statement(query: SearchQuery, limit: int) -> tuple[str, list[object]]:
    """The SQL of a search and its parameters: the FTS5 index walked from
    its newest row down (no sort), stopped at ``limit`` matches."""
    where: list[str] = ["messages_fts MATCH ?"]
    parameters: list[object] = [fts_expression(query.words)]
    if query.sender:
        where.append("m.sender = ? COLLATE NOCASE")
        parameters.append(query.sender)
    # A time bound is also a bound on the rowids (through the index on
    # sent_at), which FTS5 keeps to: an old window is not reached by
    # walking every newer match. Exact whatever the clock did: every line
    # sent at or after ``after`` has an id at or above the least of theirs.
    if query.after:
        where.append("m.sent_at >= ?")
        where.append("messages_fts.rowid >= (SELECT min(id) FROM messages WHERE sent_at >= ?)")
        parameters += [query.after, query.after]
    if query.before:
        where.append("m.sent_at < ?")
        where.append("messages_fts.rowid <= (SELECT max(id) FROM messages WHERE sent_at < ?)")
        parameters += [query.before, query.before]
    parameters.append(limit)
    sql = (
        "SELECT m.sender, m.text, m.sent_at, m.kind FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
        f" WHERE {' AND '.join(where)} ORDER BY messages_fts.rowid DESC LIMIT ?"
    )
    return sql, parameters


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the body fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def check_intact(db: sqlite3.Connection) -> None:
    """``PRAGMA quick_check`` (it reads the whole file, without comparing
    indexes to their tables): a damaged file is refused at start rather than
    failing in the middle of a chat.

    Raises:
        sqlite3.DatabaseError: the damage, as SQLite's SQLITE_CORRUPT would.
    """
    found = [str(row[0]) for row in db.execute("PRAGMA quick_check(1)")]
    if found != ["ok"]:  # one line for the operator: the first problem, without SQLite's header
        first = [line for line in "\n".join(found).splitlines() if line and not line.startswith("***")]
        raise sqlite3.DatabaseError(f"database disk image is malformed: {' '.join(first[:1])}")


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``, step by step (inside the
    caller's transaction).

    Raises:
        StoreError: the file is of a newer version than this program knows.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StoreError(
            f"The history store {path} is an SQLite database of something else (it has tables, but not ours). "
            "Choose another file with --store FILE."
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"The history store {path} was written by a newer socket-chat (schema {version}; this one knows "
            f"{SCHEMA_VERSION}). Run the newer version, or choose another file with --store FILE."
        )
    for step in MIGRATIONS[version:]:
        for statement in step:
            db.execute(statement)
    if version < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def describe(exc: Exception) -> str:
    """SQLite's reason, in its words ("database or disk is full")."""
    return str(exc) or type(exc).__name__


#: SQLite's error names (``sqlite3.Error.sqlite_errorname``, Python 3.11)
#: and the start lines they give.
_START_ERRORS = {
    "SQLITE_BUSY": "The history store {path} is in use by another process (another server on the same file?); "
    "waited {busy:g} s. Give this server another file with --store FILE, or --store none.",
    "SQLITE_NOTADB": "The history store {path} is not an SQLite database ({reason}). Move it away (a new one is "
    "then made) or choose another file with --store FILE.",
    "SQLITE_CORRUPT": "The history store {path} is damaged ({reason}). Move it away (a new one is then made), or "
    "try to recover it with: sqlite3 {path} .recover",
}
_START_ERROR_WORDS = {"locked": "SQLITE_BUSY", "not a database": "SQLITE_NOTADB", "malformed": "SQLITE_CORRUPT"}


def start_error_text(path: Path, exc: sqlite3.Error, busy_timeout: float = BUSY_TIMEOUT) -> str:
    """The operator's line for an error opening the store."""
    reason = describe(exc)
    name = getattr(exc, "sqlite_errorname", None) or next(
        (code for words, code in _START_ERROR_WORDS.items() if words in reason), ""
    )
    template = _START_ERRORS.get(name)
    if template is None:
        template = (
            "Cannot use the history store {path}: {reason}. Choose another file with --store FILE, or --store none."
        )
    return template.format(path=path, reason=reason, busy=busy_timeout)
