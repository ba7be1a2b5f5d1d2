"""The history store, measured (issue 20, section 4).

- On and off in the same run: the chat server with ``--store FILE`` and
  without (its history then in memory only), each on a fresh process, in
  the order off, on, on, off (so a drift of the machine's load weighs on
  both alike): lockstep server CPU per delivery (bench/lockstep.py) and
  burst deliveries a second (bench/scenarios.py's flat-out run). Target:
  the store on within 10% of off.
- ``/search`` over a store of ``lines`` lines (1,000,000 in the full run):
  the file is made as the server makes it (``SqliteStore.open`` on an
  empty file: its migrations), then filled in one transaction
  (``executemany``) and indexed in one pass (FTS5's ``rebuild``); each
  query is then run through ``SqliteStore.search``, the server's own
  code, and its CPU time taken in the thread that runs it (a search runs
  in the thread of the person who asked). Target: at most 100 ms a query.
- The store's size per 1,000,000 lines (the file after a checkpoint).

Run alone: ``python -m bench.store [--quick]`` prints this section.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import lockstep, scenarios
from bench.loadgen import BenchError
from socket_chat.chat.search import MAX_SEARCH_RESULTS, SearchQuery
from socket_chat.server.store import Retention, SqliteStore

MODES = ("off", "on", "on", "off")  # one fresh server each, in this order
SEARCH_TARGET_MS = 100.0
WITHIN = 0.10  # the store on may cost this much more than off
WORDS_PER_LINE = 8
VOCABULARY = 20_000  # distinct words, drawn as Zipf's law has them (the first the most often)
SENDERS = 200  # distinct names the lines are from
KEEP_ALL = Retention(days=None)  # the lines are of a made-up past: the retention must not drop them


@dataclass(frozen=True)
class StorePlan:
    members: int  # in the room for lockstep and burst
    lockstep_messages: int
    burst_each: int  # messages per sender, flat out
    burst_senders: int
    lines: int  # in the store searched
    repeat: int  # runs of each query


FULL_STORE = StorePlan(members=100, lockstep_messages=200, burst_each=200, burst_senders=10, lines=1_000_000, repeat=20)
QUICK_STORE = StorePlan(members=10, lockstep_messages=20, burst_each=20, burst_senders=2, lines=20_000, repeat=3)


@dataclass
class QueryCost:
    name: str
    typed: str  # as a person would type it
    found: int
    cpu_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.cpu_ms) if self.cpu_ms else math.nan

    @property
    def max_ms(self) -> float:
        return max(self.cpu_ms) if self.cpu_ms else math.nan


@dataclass
class StoreResults:
    lockstep: dict[str, list[lockstep.LockstepResult]] = field(default_factory=lambda: {"off": [], "on": []})
    burst: dict[str, list[tuple[scenarios.FanOutResult, float]]] = field(default_factory=lambda: {"off": [], "on": []})
    lines: int = 0
    file_bytes: int = 0
    build_seconds: float = 0.0
    open_seconds: float = 0.0
    queries: list[QueryCost] = field(default_factory=list)

    def cpu_us(self, mode: str) -> float:
        """Lockstep server CPU µs per delivery, over every run of ``mode``."""
        runs = self.lockstep[mode]
        deliveries = sum(r.deliveries for r in runs)
        return 1e6 * sum(r.server_cpu for r in runs) / deliveries if deliveries else math.nan

    def per_second(self, mode: str) -> float:
        """Burst deliveries a second, over every run of ``mode``."""
        runs = self.burst[mode]
        seconds = sum(r.seconds for r, _ in runs)
        return sum(r.deliveries for r, _ in runs) / seconds if seconds else math.nan

    def burst_cpu_us(self, mode: str) -> float:
        """Server CPU µs per delivery in the burst runs of ``mode``."""
        runs = self.burst[mode]
        deliveries = sum(r.deliveries for r, _ in runs)
        return 1e6 * sum(cpu for _, cpu in runs) / deliveries if deliveries else math.nan

    def lost(self) -> int:
        return sum(r.lost + r.duplicated for runs in self.lockstep.values() for r in runs) + sum(
            r.lost + r.duplicated for runs in self.burst.values() for r, _ in runs
        )

    @property
    def mib_per_million(self) -> float:
        return self.file_bytes / self.lines * 1e6 / 2**20 if self.lines else math.nan


def measure(plan: StorePlan, results: StoreResults, start_server: Callable, progress=print) -> None:
    """Both parts; ``start_server(*options)`` starts a chat server process
    (bench.runner's ``ServerProcess`` for the kind ``chat``)."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        for index, mode in enumerate(MODES):
            progress(f"  the store {mode} ({index + 1} of {len(MODES)})")
            options = ("--store", str(Path(folder) / f"history-{index}.sqlite3")) if mode == "on" else ()
            with start_server(*options) as server:
                measure_room(plan, mode, server, results)
        progress(f"  /search over {plan.lines:,} lines")
        measure_search(plan, Path(folder) / "search.sqlite3", results)


def measure_room(plan: StorePlan, mode: str, server, results: StoreResults) -> None:
    gen = scenarios.fill_room(server.address, False, plan.members, 60.0 + plan.members * 0.2)
    try:
        pid = server.proc.pid
        results.lockstep[mode].append(lockstep.run(gen, "chat", pid, plan.lockstep_messages, 120.0))
        cpu = sum(lockstep.cpu_split(pid))
        senders = min(plan.burst_senders, plan.members)
        window = max(1, min(64, 512 // senders))
        burst = scenarios.run_flat_out(gen, senders, plan.burst_each, window, 120.0)
        results.burst[mode].append((burst, sum(lockstep.cpu_split(pid)) - cpu))
    finally:
        gen.close_all()


# --- /search over a big store ------------------------------------------------------------------


def vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        words["".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))] = None
    return list(words)


def build(path: Path, lines: int, words: list[str], rng: random.Random, base_time: int) -> None:
    """A store of ``lines`` lines, one a second from ``base_time``, as the server's schema has it."""
    SqliteStore.open(path, KEEP_ALL).close()  # the file and its schema, by the server's own migrations
    weights = [1 / rank for rank in range(1, len(words) + 1)]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        trigger = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_fts_insert'").fetchone()[0]
        db.execute("DROP TRIGGER messages_fts_insert")  # indexed in one pass below, not line by line
        db.execute("BEGIN")
        chunk = 100_000
        for start in range(0, lines, chunk):
            count = min(chunk, lines - start)
            per = WORDS_PER_LINE
            drawn = rng.choices(words, weights, k=count * per)
            db.executemany(
                "INSERT INTO messages (sent_at, sender, kind, text) VALUES (?, ?, 'chat', ?)",
                (
                    (base_time + start + i, f"user{(start + i) % SENDERS}", " ".join(drawn[i * per : (i + 1) * per]))
                    for i in range(count)
                ),
            )
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
        db.execute(trigger)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def queries(words: list[str], lines: int, base_time: int) -> list[tuple[str, str, SearchQuery]]:
    """(name, as typed, the query)."""
    common, middle, rare = words[0], words[99], words[-1]
    oldest = base_time + lines // 10  # the oldest tenth of the lines
    return [
        ("the commonest word", common, SearchQuery((common,))),
        ("a word of rank 100", middle, SearchQuery((middle,))),
        ("a rare word", rare, SearchQuery((rare,))),
        ("two words", f"{common} {middle}", SearchQuery((common, middle))),
        ("a prefix", f"{middle[:2]}*", SearchQuery((f"{middle[:2]}*",))),
        ("a word from one of 200 names", f"{middle} from:user7", SearchQuery((middle,), sender="user7")),
        ("a word in the oldest tenth", f"{common} before:...", SearchQuery((common,), before=oldest)),
        ("a rare word from one name", f"{rare} from:user7", SearchQuery((rare,), sender="user7")),
    ]


def measure_search(plan: StorePlan, path: Path, results: StoreResults) -> None:
    rng = random.Random(20)
    words = vocabulary(rng)
    base_time = int(time.time()) - plan.lines
    begin = time.monotonic()
    build(path, plan.lines, words, rng, base_time)
    results.build_seconds = time.monotonic() - begin
    results.lines, results.file_bytes = plan.lines, path.stat().st_size
    begin = time.monotonic()
    store = SqliteStore.open(path, KEEP_ALL, history=20)  # as the server opens it: its check, its migrations
    results.open_seconds = time.monotonic() - begin
    try:
        for name, typed, query in queries(words, plan.lines, base_time):
            cost = QueryCost(name, typed, 0)
            for _ in range(plan.repeat):
                cpu = time.thread_time()
                found = store.search(query, MAX_SEARCH_RESULTS + 1)
                cost.cpu_ms.append((time.thread_time() - cpu) * 1000)
            cost.found = len(found)
            results.queries.append(cost)
    finally:
        store.close()


# --- the report --------------------------------------------------------------------------------


def ratio(on: float, off: float) -> float:
    return on / off if off else math.nan


def rows(results: StoreResults) -> list[str]:
    if not (results.lockstep["off"] and results.lockstep["on"]) or not results.queries:
        return ["Not measured in this run (see the errors, if any)."]
    cpu_off, cpu_on = results.cpu_us("off"), results.cpu_us("on")
    rate_off, rate_on = results.per_second("off"), results.per_second("on")
    cpu_ratio, rate_ratio = ratio(cpu_on, cpu_off), ratio(rate_on, rate_off)
    lines = [
        "| measure | store off | store on | on ÷ off | target |",
        "|---|---|---|---|---|",
        f"| lockstep: server CPU µs per delivery | {cpu_off:.1f} | {cpu_on:.1f} | {cpu_ratio:.3f} | "
        f"≤ {1 + WITHIN:.2f} ({'met' if cpu_ratio <= 1 + WITHIN else 'MISSED'}) |",
        f"| burst: server CPU µs per delivery | {results.burst_cpu_us('off'):.2f} | "
        f"{results.burst_cpu_us('on'):.2f} | {ratio(results.burst_cpu_us('on'), results.burst_cpu_us('off')):.3f} | "
        "(beside the target: what the store costs the server when busy) |",
        f"| burst: deliveries/s | {rate_off:,.0f} | {rate_on:,.0f} | {rate_ratio:.3f} | "
        f"≥ {1 - WITHIN:.2f} ({'met' if rate_ratio >= 1 - WITHIN else 'MISSED'}) |",
        "",
        f"Lost or duplicated deliveries in these runs: {results.lost()}.",
        "",
        "| /search | typed | lines found (cap 20, +1 to tell more) | CPU ms median | CPU ms max | target |",
        "|---|---|---|---|---|---|",
    ]
    for cost in results.queries:
        met = "met" if cost.max_ms <= SEARCH_TARGET_MS else "MISSED"
        lines.append(
            f"| {cost.name} | `{cost.typed}` | {cost.found} | {cost.median_ms:.2f} | {cost.max_ms:.2f} | "
            f"≤ {SEARCH_TARGET_MS:g} ({met}) |"
        )
    lines += [
        "",
        f"The store of {results.lines:,} lines: {results.file_bytes / 2**20:,.1f} MiB "
        f"({results.mib_per_million:,.0f} MiB per 1,000,000 lines, {WORDS_PER_LINE} words a line, the index "
        f"included); made in {results.build_seconds:.1f} s, opened by the server (its quick_check of the "
        f"whole file) in {results.open_seconds:.1f} s.",
    ]
    return lines


def markdown(results: StoreResults) -> list[str]:
    """The report's section."""
    return [
        "## The history store",
        "",
        "The chat server with `--store FILE` and without it, each on a fresh process, in the order off, "
        f"on, on, off, in rooms of {FULL_STORE.members} (full run): lockstep server CPU per delivery and "
        "burst deliveries a second (flat out), the runs of each mode summed. Then `/search` through the "
        "server's own `SqliteStore.search` over a store made as the server makes it; CPU time of the "
        "thread that runs the query.",
        "",
        *rows(results),
        "",
    ]


def as_json(results: StoreResults) -> dict:
    return dict(
        lockstep_cpu_us_per_delivery={mode: results.cpu_us(mode) for mode in ("off", "on")},
        burst_deliveries_per_second={mode: results.per_second(mode) for mode in ("off", "on")},
        burst_cpu_us_per_delivery={mode: results.burst_cpu_us(mode) for mode in ("off", "on")},
        lost_or_duplicated=results.lost(),
        lines=results.lines,
        file_bytes=results.file_bytes,
        mib_per_million_lines=results.mib_per_million,
        build_seconds=results.build_seconds,
        open_seconds=results.open_seconds,
        queries=[dict(name=c.name, typed=c.typed, found=c.found, cpu_ms=c.cpu_ms) for c in results.queries],
    )


def main(argv: list[str] | None = None) -> int:
    from bench.runner import CHAT, ServerProcess  # not at import: the runner imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.store", description="The history store, measured.")
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    args = parser.parse_args(argv)
    results = StoreResults()
    try:
        measure(
            QUICK_STORE if args.quick else FULL_STORE,
            results,
            lambda *options: ServerProcess(CHAT, *options),
            lambda text: print(text, file=sys.stderr, flush=True),
        )
    except (BenchError, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(markdown(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
