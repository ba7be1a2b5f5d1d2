"""Server CPU per ``/history 50`` page over a store of 1,000,000 lines.

``python -m bench --history-query`` (on its own: it builds its file in a
temporary folder and leaves docs/ alone). The file is made at once with
``executemany`` (the schema is the store's own ``MIGRATIONS``), then opened
as the server opens it (``SqliteStore.open``), and a member's session asks
for pages through the whole server path: ``MemberSession`` takes the
``HistoryRequest``, the room asks the store, the store's writer thread runs
the query, and each ``HistoryLine`` of the answer is encoded as it would be
for the send queue. The figure is the process's CPU time (every thread's:
``time.process_time``) over the pages, divided by their number; each page
is the lines before an ID drawn at random (seeded), the pages in no order.
The target (issue 20) is 10 ms a page on the project's machine.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from socket_chat import protocol
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import MemberSession
from socket_chat.chat.room import Room
from socket_chat.server import store as store_module

__all__ = ["HistoryQueryResult", "build", "measure", "main"]

LINES = 1_000_000
PAGES = 300
PAGE = 50
TARGET_MS = 10.0
_CHUNK = 50_000
_NOW = 1_764_100_000


@dataclass(frozen=True)
class HistoryQueryResult:
    lines: int
    pages: int
    build_seconds: float
    file_bytes: int
    cpu_ms_per_page: float


def build(path: Path, lines: int = LINES) -> None:
    """A store file of ``lines`` chat lines, one a second, of 40 to 120
    characters, some of them naming someone."""
    rng = random.Random(20)
    words = ["lunch", "deploy", "Ann", "the", "build", "is", "green", "again", "coffee", "later", "ok", "review"]
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for step in store_module.MIGRATIONS:
            for statement in step:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {store_module.SCHEMA_VERSION}")
        for start in range(1, lines + 1, _CHUNK):
            rows = []
            for line_id in range(start, min(start + _CHUNK, lines + 1)):
                text = " ".join(rng.choices(words, k=rng.randint(8, 20)))
                rows.append((line_id, _NOW - lines + line_id, f"user{line_id % 50}", "chat", text))
            db.executemany("INSERT INTO messages (id, sent_at, sender, kind, text) VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    path.chmod(0o600)


class _Encoder:
    """A member whose send queue only encodes (as the sender would)."""

    def __init__(self) -> None:
        self.told = 0

    def tell(self, message: protocol.Message) -> None:
        protocol.encode(message)
        self.told += 1

    def deliver(self, item: protocol.Encoded) -> bool:
        return True

    def send_queue_overflowed(self) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def measure(path: Path, lines: int, pages: int = PAGES) -> float:
    """CPU milliseconds per page over the store at ``path``."""
    store = store_module.SqliteStore.open(path, store_module.Retention(days=None), history=20)
    try:
        room = Room(store=store)
        member = _Encoder()
        session = MemberSession(room, member, Limits(rate=0), member.tell)
        session.start()
        session.receive(protocol.Stamps())
        session.receive(protocol.Username("bench"))
        rng = random.Random(50)
        befores = [str(rng.randint(PAGE + 1, lines + 1)) for _ in range(pages)]
        session.receive(protocol.HistoryRequest(befores[0], PAGE))  # warm: the first read of the file's pages
        told = member.told
        begin = time.process_time()
        for before in befores:
            session.receive(protocol.HistoryRequest(before, PAGE))
        spent = time.process_time() - begin
        assert member.told - told == pages * (PAGE + 1), "every page is whole"
        return spent * 1000 / pages
    finally:
        store.close()


def run(lines: int = LINES, pages: int = PAGES) -> HistoryQueryResult:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        path = Path(folder) / "history.sqlite3"
        begin = time.monotonic()
        build(path, lines)
        built = time.monotonic() - begin
        size = path.stat().st_size
        return HistoryQueryResult(lines, pages, built, size, measure(path, lines, pages))


def main(lines: int = LINES) -> int:
    result = run(lines)
    verdict = "within" if result.cpu_ms_per_page <= TARGET_MS else "over"
    print(
        f"/history {PAGE} over {result.lines:,} stored lines: {result.cpu_ms_per_page:.2f} ms of server CPU a page "
        f"({result.pages} pages; {verdict} the {TARGET_MS:g} ms target). "
        f"File: {result.file_bytes / 1e6:.0f} MB, built in {result.build_seconds:.1f} s."
    )
    return 0
