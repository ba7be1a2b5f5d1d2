"""``/search``: the query as typed and as checked (chat/search.py), the
full-text index in the store (server/store.py: schema 3, a reader of its
own, the lock file that keeps one server per file), and the session's
answer (chat/member.py). No test sleeps: the writer is waited on with
``flush``."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import sqlite3
import threading
from contextlib import closing

import pytest

from socket_chat import protocol
from socket_chat.chat.history import Line
from socket_chat.chat.limits import Limits
from socket_chat.chat.room import Room
from socket_chat.chat.search import (
    MAX_SEARCH_RESULTS,
    MAX_WORDS,
    NO_INDEX,
    SearchQuery,
    SearchRefused,
    SearchUnavailable,
    fts_expression,
    parse_search,
    query_of,
)
from socket_chat.protocol import HistoryMessage, SearchRequest, SearchResult
from socket_chat.server import store as store_module
from socket_chat.server.store import Retention, SqliteStore, StoreError
from tests.helpers import DEADLINE
from tests.test_member import STRICT, errors, joined
from tests.test_store import NOW, opened  # noqa: F401 (a fixture)

LINE_IDS = itertools.count(1)  # IDs rising across every store of these tests, as a room's do


def said(sender: str, text: str, sent_at: int = NOW, kind: str = "chat") -> Line:
    """A line as the room keeps it; its ID is given by ``stored``."""
    return Line(0, sent_at, kind, sender, text)


def stored(store: SqliteStore, *entries: Line) -> SqliteStore:
    for entry in entries:
        store.keep(dataclasses.replace(entry, id=next(LINE_IDS)))
    assert store.flush(DEADLINE)
    return store


def texts(found: list[HistoryMessage]) -> list[str]:
    return [entry.text for entry in found]


# --- the query -------------------------------------------------------------------------


def midnight(day: datetime.date) -> float:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()


def test_the_typed_query_splits_into_words_and_fields_with_dates_as_local_midnights():
    request = parse_search("deploy  Friday from:Ann after:2026-12-01 before:2026-12-03", midnight)
    first, third = (int(midnight(datetime.date(2026, 12, day))) for day in (1, 3))
    assert request == SearchRequest("deploy Friday", "Ann", first, third)
    assert parse_search("from: is a word", midnight).words == "from: is a word"  # no value: a word


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("from:Ann", "give at least one word"),
        ("x after:yesterday", "after:yesterday is not a date: write it as YYYY-MM-DD"),
        ("x before:2026-13-01", "is not a date"),
        ("x from:a from:b", "from: is given twice"),
    ],
)
def test_a_typed_query_that_cannot_be_run_says_why(typed, reason):
    with pytest.raises(SearchRefused, match=reason):
        parse_search(typed, midnight)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (SearchRequest("   ", "", 0, 0), "at least one word"),
        (SearchRequest(" ".join(["w"] * (MAX_WORDS + 1)), "", 0, 0), f"{MAX_WORDS} words at most"),
        (SearchRequest("x" * 65, "", 0, 0), "64 characters"),
        (SearchRequest("a\x00b", "", 0, 0), "control characters"),
        (SearchRequest("x", "a\nb", 0, 0), "from: is not a name"),
        (SearchRequest("x", "", 200, 100), "before: must be later than after:"),
    ],
)
def test_the_server_checks_a_request_from_the_network_again(request_, reason):
    with pytest.raises(SearchRefused, match=reason):
        query_of(request_)


def test_each_word_is_one_quoted_fts5_string_and_only_a_trailing_star_is_an_operator():
    assert fts_expression(("deploy", 'say"what', "NEAR(a", "OR", "col:x", "dep*", "*")) == (
        '"deploy" "say""what" "NEAR(a" "OR" "col:x" "dep"* "*"'
    )


# --- the index in the store ---------------------------------------------------------------


def test_search_finds_lines_with_all_the_words_newest_first_in_any_case_and_accent(opened):
    store = stored(
        opened(),
        said("Ann", "the deploy is on Friday", NOW),
        said("Bob", "no deploy today", NOW + 1),
        said("Ann", "DÉPLOY friday, again", NOW + 2, "action"),
    )
    assert store.search(SearchQuery(("deploy", "friday")), 10) == [
        said("Ann", "DÉPLOY friday, again", NOW + 2, "action").plain(),
        said("Ann", "the deploy is on Friday", NOW).plain(),
    ]
    assert texts(store.search(SearchQuery(("depl*",)), 10)) == [
        "DÉPLOY friday, again",
        "no deploy today",
        "the deploy is on Friday",
    ]
    assert texts(store.search(SearchQuery(("deploy",)), 2)) == ["DÉPLOY friday, again", "no deploy today"]  # capped


def test_search_filters_by_sender_in_any_case_and_by_time(opened):
    store = stored(opened(), *(said("Ann" if n % 2 else "Bob", f"line {n}", NOW + n) for n in range(10)))
    assert texts(store.search(SearchQuery(("line",), sender="ANN"), 10)) == [f"line {n}" for n in (9, 7, 5, 3, 1)]
    window = SearchQuery(("line",), after=NOW + 3, before=NOW + 6)  # after: inclusive, before: exclusive
    assert texts(store.search(window, 10)) == ["line 5", "line 4", "line 3"]


@pytest.mark.parametrize("words", [('"',), ("NEAR(",), ("AND", "OR"), ("a*b",), ("text:",), ("^x",), ("-",)])
def test_fts5_syntax_in_the_words_is_searched_for_never_an_sql_error(opened, words):
    store = stored(opened(), said("Ann", 'a line with " NEAR( AND OR a*b text: ^x -'))
    store.search(SearchQuery(words), 10)  # no sqlite3.Error: found or not, never a failure


def test_the_index_follows_the_retention_and_indexes_lines_stored_before_it_existed(opened, tmp_path):
    path = tmp_path / "old.sqlite3"
    steps = store_module.MIGRATIONS
    index_step = next(n for n, step in enumerate(steps) if any("messages_fts" in statement for statement in step))
    with closing(sqlite3.connect(path)) as db:  # a file from before the index: made by the steps before it
        for step in steps[:index_step]:
            for statement in step:
                db.execute(statement)
        db.execute(
            "INSERT INTO messages (id, sent_at, sender, kind, text) VALUES (?, ?, 'Ann', 'chat', ?)",
            (next(LINE_IDS), NOW, "from before the index"),
        )
        db.execute(f"PRAGMA user_version = {index_step}")
        db.commit()
    path.chmod(0o600)
    migrated = opened(path, Retention(messages=2))
    assert texts(migrated.search(SearchQuery(("before",)), 10)) == ["from before the index"]
    stored(migrated, said("Ann", "two"), said("Ann", "three"))
    migrated.close()
    pruned = opened(path, Retention(messages=2))  # the retention runs at start
    assert texts(pruned.search(SearchQuery(("before",)), 10)) == []  # deleted from the index with its line
    assert texts(pruned.search(SearchQuery(("three",)), 10)) == ["three"]


def test_a_search_runs_while_the_writer_holds_a_transaction_open(opened):
    """The reader is its own connection (WAL): the writer held in the
    middle of an insert neither blocks a search nor is blocked by it."""
    inserting, release = threading.Event(), threading.Event()

    class Held(sqlite3.Connection):
        def execute(self, *args, **kwargs):
            result = super().execute(*args, **kwargs)
            if args[0].startswith("INSERT OR REPLACE INTO messages "):  # the writer's insert of lines
                inserting.set()
                assert release.wait(DEADLINE)
            return result

    store = opened(connect=lambda *a, **k: sqlite3.connect(*a, factory=Held, **k))
    store.keep(said("Ann", "first"))
    store._wake.set()
    assert inserting.wait(DEADLINE)  # the writer is inside BEGIN IMMEDIATE ... COMMIT
    assert store.search(SearchQuery(("first",)), 10) == []  # not committed yet: not found, and no wait
    release.set()
    assert store.flush(DEADLINE)
    assert texts(store.search(SearchQuery(("first",)), 10)) == ["first"]


def test_a_search_that_runs_too_long_is_stopped_with_a_clear_line(opened, monkeypatch):
    store = stored(opened(), *(said("Ann", f"word {n}") for n in range(500)))
    monkeypatch.setattr(store_module, "SEARCH_TIMEOUT", -1.0)  # every search is already over time
    with pytest.raises(SearchUnavailable, match="ran longer than"):
        store.search(SearchQuery(("word",)), 1000)  # through all 500 rows


def test_one_server_per_file_is_kept_by_the_lock_file_and_let_go_at_close(opened):
    first = opened()
    lock = first.path.with_name(first.path.name + ".lock")
    assert lock.stat().st_mode & 0o777 == 0o600
    with pytest.raises(StoreError, match="in use by another process"):
        SqliteStore.open(first.path, busy_timeout=0.05)
    with closing(sqlite3.connect(f"file:{first.path}?mode=ro", uri=True)) as reader:  # the operator may read it
        assert reader.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    first.close()
    second = opened(first.path)  # free again
    assert second.search(SearchQuery(("x",)), 1) == []


# --- the session's answer ------------------------------------------------------------------


class FakeIndex:
    def __init__(self, found: list[HistoryMessage] | None = None, fails: Exception | None = None) -> None:
        self.found, self.fails, self.asked = found or [], fails, []

    def search(self, query: SearchQuery, limit: int) -> list[HistoryMessage]:
        self.asked.append((query, limit))
        if self.fails is not None:
            raise self.fails
        return self.found[:limit]


@pytest.fixture
def room() -> Room:
    return Room(history_size=0)


def test_a_search_answers_with_a_count_then_the_lines_newest_first(room):
    index = FakeIndex([said("Bob", "two", NOW + 1), said("Ann", "one", NOW, "action")])
    ann = joined(room, "Ann", search=index)
    heard = ann.send(SearchRequest("one two", "bob", 0, 0))
    assert heard == [
        protocol.Notice("2 lines match, newest first:"),
        SearchResult("Bob", "two", NOW + 1, "chat"),
        SearchResult("Ann", "one", NOW, "action"),
    ]
    assert index.asked == [(SearchQuery(("one", "two"), "bob"), MAX_SEARCH_RESULTS + 1)]


def test_a_search_is_capped_and_says_so(room):
    ann = joined(room, "Ann", search=FakeIndex([said("Bob", f"x {n}") for n in range(50)]))
    heard = ann.send(SearchRequest("x", "", 0, 0))
    assert heard[0].text.startswith(f"The newest {MAX_SEARCH_RESULTS} lines that match")
    assert len(heard) == 1 + MAX_SEARCH_RESULTS


def test_a_search_with_no_store_no_match_bad_words_or_a_failure_is_one_clear_line(room):
    assert errors(joined(room, "Ann").send(SearchRequest("x", "", 0, 0))) == [NO_INDEX]
    assert joined(room, "Bob", search=FakeIndex()).send(SearchRequest("x", "", 0, 0)) == [
        protocol.Notice("No line matches.")
    ]
    assert errors(joined(room, "Cat", search=FakeIndex()).send(SearchRequest("", "", 0, 0))) == [
        "Not searched: give at least one word to look for."
    ]
    failing = FakeIndex(fails=SearchUnavailable("The search failed: the server could not read its history store."))
    assert errors(joined(room, "Dan", search=failing).send(SearchRequest("x", "", 0, 0))) == [
        "The search failed: the server could not read its history store."
    ]


def test_searches_are_charged_to_flood_control(room):
    index = FakeIndex([said("Bob", "x")])
    ann = joined(room, "Ann", STRICT, search=index)
    heard = ann.send(*[SearchRequest("x", "", 0, 0)] * 4)
    assert len(index.asked) == STRICT.burst
    assert errors(heard)[-1].startswith("Slow down: nothing was searched.")


def test_a_search_on_a_real_store_through_the_session(room, opened):
    store = stored(opened(), said("Bob", "release notes"), said("Cat", "release party"))
    ann = joined(room, "Ann", Limits(), search=store)
    heard = ann.send(SearchRequest("release", "cat", 0, 0))
    assert heard[1:] == [SearchResult("Cat", "release party", NOW, "chat")]


# --- the client ------------------------------------------------------------------------------


def test_the_client_sends_slash_search_as_a_request_and_refuses_a_bad_date_itself():
    from socket_chat.client import ui as client_ui
    from tests.test_client_ui import HOSTILE, Recorder

    sent = Recorder().run("/search deploy from:Bob").sent
    assert sent == [SearchRequest("deploy", "Bob", 0, 0)]
    refused = Recorder().run("/search deploy after:soon")
    assert refused.sent == [] and refused.errors == ["Not searched: after:soon is not a date: write it as YYYY-MM-DD."]
    assert Recorder().run("/search").errors == [f"Usage: {client_ui.COMMANDS.parse('/search')[1].usage}"]
    found = client_ui.render(SearchResult("Bob", "x" + HOSTILE, NOW, "chat"))
    assert found == [f"[found {client_ui.date_time(NOW)}] Bob: x" + client_ui.printable_text(HOSTILE)]
    kept = client_ui.render(protocol.OfflineMessage("Bob", "Ann", "hi", NOW))
    assert kept == [f"[{client_ui.date_time(NOW)} Bob -> me] hi"]


def test_the_wire_formats_are_protocol_mds_test_vectors():
    import re
    from pathlib import Path

    from socket_chat.protocol import OfflineMessage
    from socket_chat.protocol.codec import decode_message, encode_message

    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vectors = dict(re.findall(r"^(search_request|search_result|offline_message) = ([0-9a-f]+)$", spec, re.MULTILINE))
    messages = {
        "search_request": SearchRequest("deploy fri*", "Ann", 1764547200, 0),
        "search_result": SearchResult("Ann", "Deploy on Friday", 1764600000, "chat"),
        "offline_message": OfflineMessage("bob", "alice", "see you", 1764600000),
    }
    assert set(vectors) == set(messages)
    for name, message in messages.items():
        assert encode_message(message).hex() == vectors[name]
        assert decode_message(bytes.fromhex(vectors[name])) == message
