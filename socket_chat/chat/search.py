"""``/search WORDS [from:NAME] [before:DATE] [after:DATE]``: the query, read
from what a person typed (on the client, which knows their time zone) and
checked again where it is run (on the server, which trusts no client), and
the full-text expression it becomes, with no I/O.

The words never reach SQLite's FTS5 as syntax: each is quoted as one FTS5
string (``"word"``, a ``"`` in it doubled), so ``AND``, ``NEAR(``, ``col:``
or a stray ``"`` are words to look for, never operators. A word that ends
in ``*`` is a prefix (``deplo*``), the one operator a person may use. The
words must all be in a line (FTS5's implicit AND); the index's tokenizer
(unicode61, ``remove_diacritics 2``) ignores case and accents.

Dates are whole days in the person's local time, as Gmail's search takes
them: ``after:2026-12-01`` keeps lines sent on 1 December or later,
``before:2026-12-03`` lines sent before 3 December (so both together: the
1st and the 2nd).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from socket_chat.protocol import HistoryMessage, SearchRequest

__all__ = [
    "MAX_SEARCH_RESULTS",
    "MAX_WORD_LENGTH",
    "MAX_WORDS",
    "NO_INDEX",
    "SearchIndex",
    "SearchQuery",
    "SearchRefused",
    "SearchUnavailable",
    "fts_expression",
    "parse_search",
    "query_of",
]

MAX_SEARCH_RESULTS = 20  # lines one query returns at most, newest first (a page of scrollback)
MAX_WORDS = 10  # words one query may hold
MAX_WORD_LENGTH = 64  # characters of one word
NO_INDEX = (
    "Search needs the server's history store, and this server keeps none (--store none, or a cluster): "
    "nothing was searched."
)


class SearchRefused(ValueError):
    """The query cannot be run; the message says why, for the person."""


class SearchUnavailable(Exception):
    """The index could not answer (a damaged file, a query that ran too
    long); the message is for the person, the cause for the log."""


@dataclass(frozen=True)
class SearchQuery:
    """A checked query: ``words`` (at least one), ``sender`` (a name, or ""
    for anyone), ``after``/``before`` (Unix seconds, inclusive/exclusive; 0:
    no bound)."""

    words: tuple[str, ...]
    sender: str = ""
    after: int = 0
    before: int = 0


class SearchIndex(Protocol):
    """What a session needs to search the history (the server's store)."""

    def search(self, query: SearchQuery, limit: int) -> list[HistoryMessage]:
        """The newest ``limit`` public lines that match, newest first.

        Raises:
            SearchUnavailable: the index could not answer.
        """
        ...


def parse_search(typed: str, local_midnight: Callable[[datetime.date], float] | None = None) -> SearchRequest:
    """The request for what follows ``/search``: words, ``from:NAME``,
    ``before:DATE`` and ``after:DATE`` (``YYYY-MM-DD``, local time).

    Raises:
        SearchRefused: no words, a date that is not one, a field twice.
    """
    midnight = local_midnight or _local_midnight
    words: list[str] = []
    fields: dict[str, str] = {}
    for token in typed.split():
        field, colon, value = token.partition(":")
        if colon and field.casefold() in ("from", "before", "after") and value:
            if field.casefold() in fields:
                raise SearchRefused(f"{field.casefold()}: is given twice")
            fields[field.casefold()] = value
        else:
            words.append(token)
    if not words:
        raise SearchRefused("give at least one word to look for")
    after = _day(fields.get("after"), "after", midnight)
    before = _day(fields.get("before"), "before", midnight)
    return SearchRequest(" ".join(words), fields.get("from", ""), after, before)


def _day(value: str | None, field: str, midnight: Callable[[datetime.date], float]) -> int:
    if value is None:
        return 0
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise SearchRefused(f"{field}:{value} is not a date: write it as YYYY-MM-DD") from None
    return max(1, min(int(midnight(day)), 0xFFFFFFFF))  # 0 is "no bound"


def _local_midnight(day: datetime.date) -> float:
    try:
        return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))
    except (OverflowError, ValueError):
        return 0xFFFFFFFF if day.year > 1970 else 1


def query_of(request: SearchRequest) -> SearchQuery:
    """The server's check of a request from the network.

    Raises:
        SearchRefused: no words, too many, one too long, a bad name or
            bounds that leave no time between them.
    """
    words = tuple(request.words.split())
    if not words:
        raise SearchRefused("give at least one word to look for")
    if len(words) > MAX_WORDS:
        raise SearchRefused(f"a search may hold {MAX_WORDS} words at most")
    if any(len(word) > MAX_WORD_LENGTH for word in words):
        raise SearchRefused(f"a word may be {MAX_WORD_LENGTH} characters long at most")
    if not all(word.isprintable() for word in words):
        raise SearchRefused("the words may not hold control characters")
    sender = request.sender.strip()
    if len(sender) > 4 * 32 or not sender.isprintable():
        raise SearchRefused("from: is not a name")
    if request.after and request.before and request.before <= request.after:
        raise SearchRefused("before: must be later than after:")
    return SearchQuery(words, sender, request.after, request.before)


def fts_expression(words: tuple[str, ...]) -> str:
    """The FTS5 MATCH expression for ``words``: each one a quoted string
    (``"`` doubled), a trailing ``*`` kept outside the quotes as a prefix;
    all of them must match."""
    terms = []
    for word in words:
        prefix = word.endswith("*") and len(word.rstrip("*")) > 0
        bare = word.rstrip("*") if prefix else word
        terms.append('"' + bare.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)
