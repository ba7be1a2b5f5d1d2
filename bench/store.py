"""The history store, measured (issue 20, section 4).

- On and off in the same run, in turns: two chat servers side by side, one
  with ``--store FILE`` and one without (its history then in memory only),
  each with its room filled once; then ``rounds`` rounds, each measuring
  both, one right after the other, the order turned round every round
  (lockstep off on, burst on off; then lockstep on off, burst off on;
  ...), so that a slow phase of a shared machine lands on both sides
  alike and is seen as a spread rather than as the store's cost:
  lockstep server CPU per delivery (bench/lockstep.py) and burst deliveries
  a second (bench/scenarios.py's flat-out run). Each round gives its own
  on ÷ off; the target (the store on within 10% of off) is judged on the
  median of the rounds', reported with their spread. The CPU is taken over
  a window that ends a commit interval after the last delivery, so the
  writer's commit of the round's lines is counted; the writer thread's own
  CPU time (from /proc, by its thread id) is reported per line stored.
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
from socket_chat.server.store import COMMIT_INTERVAL, Retention, SqliteStore

MODES = ("off", "on")  # the order of the first round; the next turns it round, and so on
#: Seconds a measurement's window stays open after its last delivery: the
#: writer has then committed the lines (every COMMIT_INTERVAL), so its CPU is
#: counted; both modes wait alike.
SETTLE = COMMIT_INTERVAL + 0.1
SEARCH_TARGET_MS = 100.0
WITHIN = 0.10  # the store on may cost this much more than off
WORDS_PER_LINE = 8
VOCABULARY = 20_000  # distinct words, drawn as Zipf's law has them (the first the most often)
SENDERS = 200  # distinct names the lines are from
KEEP_ALL = Retention(days=None)  # the lines are of a made-up past: the retention must not drop them


@dataclass(frozen=True)
class StorePlan:
    members: int  # in the room for lockstep and burst
    lockstep_messages: int  # per round and mode
    burst_each: int  # messages per sender, flat out, per round and mode
    burst_senders: int
    lines: int  # in the store searched
    repeat: int  # runs of each query
    rounds: int = 6  # of on and off, in turns


FULL_STORE = StorePlan(
    members=100, lockstep_messages=50, burst_each=50, burst_senders=10, lines=1_000_000, repeat=20, rounds=16
)
QUICK_STORE = StorePlan(
    members=10, lockstep_messages=10, burst_each=10, burst_senders=2, lines=20_000, repeat=3, rounds=2
)


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
    """The runs of each mode, ``[k]`` of round k (so ``on[k]`` and
    ``off[k]`` ran one right after the other)."""

    lockstep: dict[str, list[lockstep.LockstepResult]] = field(default_factory=lambda: {"off": [], "on": []})
    burst: dict[str, list[tuple[scenarios.FanOutResult, float]]] = field(default_factory=lambda: {"off": [], "on": []})
    writer_cpu: float = 0.0  # CPU seconds of the store's writer thread over the rounds' windows
    stored: int = 0  # lines the store-on server kept over those windows
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

    def round_ratios(self, measure: str) -> list[float]:
        """On ÷ off of each round: ``lockstep`` (CPU per delivery), ``burst``
        (deliveries a second) or ``burst_cpu`` (CPU per delivery)."""
        # strict=False: a round cut short by an error has one side only, and is left out.
        if measure == "lockstep":
            pairs = zip(self.lockstep["on"], self.lockstep["off"], strict=False)
            return [ratio(on.cpu_us, off.cpu_us) for on, off in pairs]
        bursts = zip(self.burst["on"], self.burst["off"], strict=False)
        if measure == "burst":
            return [ratio(_rate(on), _rate(off)) for (on, _), (off, _) in bursts]
        return [ratio(_per_delivery(*on), _per_delivery(*off)) for on, off in bursts]

    def lost(self) -> int:
        return sum(r.lost + r.duplicated for runs in self.lockstep.values() for r in runs) + sum(
            r.lost + r.duplicated for runs in self.burst.values() for r, _ in runs
        )

    @property
    def writer_us_per_line(self) -> float:
        return 1e6 * self.writer_cpu / self.stored if self.stored else math.nan

    @property
    def mib_per_million(self) -> float:
        return self.file_bytes / self.lines * 1e6 / 2**20 if self.lines else math.nan


def _rate(run: scenarios.FanOutResult) -> float:
    return run.deliveries / run.seconds if run.seconds else math.nan


def _per_delivery(run: scenarios.FanOutResult, cpu: float) -> float:
    return 1e6 * cpu / run.deliveries if run.deliveries else math.nan


def median_spread(values: list[float]) -> tuple[float, float, float, float, float]:
    """(median, lower quartile, upper quartile, least, greatest) of
    ``values``; NaNs if there are none."""
    if not values:
        return math.nan, math.nan, math.nan, math.nan, math.nan
    if len(values) == 1:
        return values[0], values[0], values[0], values[0], values[0]
    lower, _, upper = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), lower, upper, min(values), max(values)


def measure(plan: StorePlan, results: StoreResults, start_server: Callable, progress=print) -> None:
    """Both parts; ``start_server(*options)`` starts a chat server process
    (bench.runner's ``ServerProcess`` for the kind ``chat``)."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        with contextlib.ExitStack() as stack:
            servers = {
                "off": stack.enter_context(start_server()),
                "on": stack.enter_context(start_server("--store", str(Path(folder) / "history.sqlite3"))),
            }
            rooms = {}
            for mode, server in servers.items():
                gen = scenarios.fill_room(server.address, False, plan.members, 60.0 + plan.members * 0.2)
                stack.callback(gen.close_all)
                rooms[mode] = gen
            for index in range(plan.rounds):
                order = MODES if index % 2 == 0 else MODES[::-1]
                progress(f"  round {index + 1} of {plan.rounds}: the store {order[0]}, then {order[1]}")
                # Each measure's two runs one right after the other: lockstep
                # A then B, burst B then A.
                for mode in order:
                    measure_lockstep(plan, mode, servers[mode], rooms[mode], results)
                for mode in reversed(order):
                    measure_burst(plan, mode, servers[mode], rooms[mode], results)
        progress(f"  /search over {plan.lines:,} lines")
        measure_search(plan, Path(folder) / "search.sqlite3", results)


def measure_lockstep(plan: StorePlan, mode: str, server, gen, results: StoreResults) -> None:
    """One round's lockstep run of ``mode``, its window closed ``SETTLE``
    after its last delivery."""
    pid, writer = server.proc.pid, getattr(server, "writer_tid", None)
    writer_before, cpu = thread_cpu(pid, writer), process_cpu(pid)
    run = lockstep.run(gen, "chat", pid, plan.lockstep_messages, 120.0)
    gen.settle(SETTLE, time.monotonic() + 2 * SETTLE)  # nothing arrives: it waits SETTLE
    run.server_cpu = process_cpu(pid) - cpu
    results.lockstep[mode].append(run)
    if mode == "on" and writer is not None:
        results.writer_cpu += thread_cpu(pid, writer) - writer_before
        results.stored += run.messages


def measure_burst(plan: StorePlan, mode: str, server, gen, results: StoreResults) -> None:
    """One round's burst of ``mode`` (flat out), its window closed as lockstep's."""
    pid, writer = server.proc.pid, getattr(server, "writer_tid", None)
    writer_before, cpu = thread_cpu(pid, writer), process_cpu(pid)
    senders = min(plan.burst_senders, plan.members)
    window = max(1, min(64, 512 // senders))
    burst = scenarios.run_flat_out(gen, senders, plan.burst_each, window, 120.0)
    gen.settle(SETTLE, time.monotonic() + 2 * SETTLE)
    results.burst[mode].append((burst, process_cpu(pid) - cpu))
    if mode == "on" and writer is not None:
        results.writer_cpu += thread_cpu(pid, writer) - writer_before
        results.stored += senders * plan.burst_each


def thread_cpu(pid: int, tid: int | None) -> float:
    """CPU seconds of one thread, from /proc/PID/task/TID/schedstat (in
    nanoseconds: the 10 ms ticks of /proc's stat are too coarse for a
    thread that works a few ms a round, and are 5% of a round's lockstep);
    0 for none."""
    if tid is None:
        return 0.0
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9


def process_cpu(pid: int) -> float:
    """CPU seconds of the threads ``pid`` has now, summed (schedstat, as
    ``thread_cpu``). A thread that ends in the window would take its time
    with it, but none does in a round: the rooms are filled before."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int(path.read_text().split()[0])
    return total / 1e9


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
    rounds = min(len(results.lockstep["off"]), len(results.lockstep["on"]))
    lines = [
        "| measure | store off | store on | on ÷ off, all rounds summed | on ÷ off a round: median (middle "
        "half; all) | target (on the median) |",
        "|---|---|---|---|---|---|",
        _row(
            "lockstep: server CPU µs per delivery",
            (results.cpu_us("off"), results.cpu_us("on")),
            1,
            results.round_ratios("lockstep"),
            f"≤ {1 + WITHIN:.2f}",
            lambda median: median <= 1 + WITHIN,
        ),
        _row(
            "burst: server CPU µs per delivery",
            (results.burst_cpu_us("off"), results.burst_cpu_us("on")),
            2,
            results.round_ratios("burst_cpu"),
            "(beside the target: what the store costs the server when busy)",
        ),
        _row(
            "burst: deliveries/s",
            (results.per_second("off"), results.per_second("on")),
            0,
            results.round_ratios("burst"),
            f"≥ {1 - WITHIN:.2f}",
            lambda median: median >= 1 - WITHIN,
        ),
        "",
        f"{rounds} rounds. The store's writer thread (its own CPU time, from /proc): "
        f"{results.writer_us_per_line:.1f} µs per line stored ({results.stored:,} lines), "
        f"{_writer_share(results):.1%} of the store-on server's CPU over the same windows.",
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


def _row(
    name: str,
    figures: tuple[float, float],
    digits: int,
    ratios: list[float],
    target: str,
    met: Callable[[float], bool] | None = None,
) -> str:
    """One measure's row: both modes summed, their ratio, the rounds'
    ratios, and the target (judged on their median)."""
    off, on = figures
    median, lower, upper, least, greatest = median_spread(ratios)
    verdict = "" if met is None else f" ({'met' if met(median) else 'MISSED'})"
    return (
        f"| {name} | {off:,.{digits}f} | {on:,.{digits}f} | {ratio(on, off):.3f} | "
        f"{median:.3f} ({lower:.2f}–{upper:.2f}; {least:.2f}–{greatest:.2f}) | {target}{verdict} |"
    )


def _writer_share(results: StoreResults) -> float:
    """The writer's part of the store-on server's CPU over the rounds."""
    server = sum(r.server_cpu for r in results.lockstep["on"]) + sum(cpu for _, cpu in results.burst["on"])
    return results.writer_cpu / server if server else math.nan


def markdown(results: StoreResults) -> list[str]:
    """The report's section."""
    return [
        "## The history store",
        "",
        "Two chat servers side by side, one with `--store FILE` and one without, each with a room of "
        f"{FULL_STORE.members} (full run) filled once, measured in turns: {FULL_STORE.rounds} rounds (full "
        "run), each measuring both one right after the other, the order turned round every round (off on, "
        "on off, ...; the bursts in the other order), so that a slow phase of the shared machine weighs on "
        "both alike. Each measurement is a lockstep run (server CPU per delivery) or a flat-out burst "
        f"(deliveries a second), its CPU window closed {SETTLE:g} s after the last delivery (the writer has "
        "committed the lines by then). "
        "The target is judged on the median of the rounds' on ÷ off; their spread (the middle half of "
        "the rounds, and all of them) says how noisy the machine was. Then `/search` through the server's "
        "own `SqliteStore.search` over a store made as the server makes it; CPU time of the thread that "
        "runs the query.",
        "",
        *rows(results),
        "",
    ]


def as_json(results: StoreResults) -> dict:
    return dict(
        lockstep_cpu_us_per_delivery={mode: results.cpu_us(mode) for mode in ("off", "on")},
        burst_deliveries_per_second={mode: results.per_second(mode) for mode in ("off", "on")},
        burst_cpu_us_per_delivery={mode: results.burst_cpu_us(mode) for mode in ("off", "on")},
        round_ratios={m: results.round_ratios(m) for m in ("lockstep", "burst", "burst_cpu")},
        writer_us_per_line=results.writer_us_per_line,
        lines_stored=results.stored,
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
