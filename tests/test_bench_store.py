"""bench/store.py counts right: the store it searches is made as the
server's (its lines found, none dropped by the retention), and its report
holds every figure. Never a time: a benchmark reports, a test checks."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import sqlite3
import types

import pytest

from bench import store as store_bench
from bench.lockstep import LockstepResult
from bench.scenarios import FanOutResult

SMALL = store_bench.StorePlan(members=3, lockstep_messages=2, burst_each=2, burst_senders=1, lines=3_000, repeat=1)


def test_the_search_store_is_the_servers_and_every_query_finds_what_it_should(tmp_path):
    results = store_bench.StoreResults()
    store_bench.measure_search(SMALL, tmp_path / "search.sqlite3", results)
    found = {cost.name: cost.found for cost in results.queries}
    assert found["the commonest word"] == found["a word in the oldest tenth"] == found["a prefix"] == 21
    assert 1 <= found["two words"] <= 21
    assert results.lines == SMALL.lines and results.file_bytes > 0
    assert all(len(cost.cpu_ms) == SMALL.repeat for cost in results.queries)


def test_each_line_of_the_store_has_words_per_line_words(tmp_path, monkeypatch):
    monkeypatch.setattr(store_bench, "WORDS_PER_LINE", 3)
    store_bench.build(tmp_path / "s.sqlite3", 5, ["a", "b", "c"], random.Random(1), 1_000)
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite3")) as db:
        texts = [text for (text,) in db.execute("SELECT text FROM messages")]
    assert len(texts) == 5 and all(len(text.split()) == 3 for text in texts)


def test_the_section_reports_the_ratios_and_the_json_holds_them(tmp_path):
    results = store_bench.StoreResults()
    assert store_bench.rows(results) == ["Not measured in this run (see the errors, if any)."]
    # Three rounds; the last was on a slow phase of the machine for the store on alone.
    for off_cpu, on_cpu, on_seconds in ((1.0, 1.05, 1.0), (1.0, 1.02, 1.0), (1.0, 2.0, 2.0)):
        for mode, cpu, seconds in (("off", off_cpu, 1.0), ("on", on_cpu, on_seconds)):
            run = LockstepResult("chat", 10, messages=10, deliveries=100, server_cpu=cpu)
            results.lockstep[mode].append(run)
            burst = FanOutResult(members=11, senders=1, paced=False, deliveries=1000, expected=1000, seconds=seconds)
            results.burst[mode].append((burst, cpu))
    results.writer_cpu, results.stored = 0.003, 1000
    store_bench.measure_search(SMALL, tmp_path / "search.sqlite3", results)
    section = "\n".join(store_bench.markdown(results))
    # Summed, the slow round weighs as the store's cost (1.357); a round's median does not.
    lockstep_row = "| lockstep: server CPU µs per delivery | 10,000.0 | 13,566.7 | 1.357 |"
    assert f"{lockstep_row} 1.050 (1.04–1.52; 1.02–2.00) | ≤ 1.10 (met) |" in section
    assert "| burst: deliveries/s | 1,000 | 750 | 0.750 | 1.000 (0.75–1.00; 0.50–1.00) | ≥ 0.90 (met) |" in section
    assert "3 rounds. The store's writer thread (its own CPU time, from /proc): 3.0 µs per line stored" in section
    assert "Lost or duplicated deliveries in these runs: 0." in section
    figures = json.loads(json.dumps(store_bench.as_json(results)))
    assert figures["lockstep_cpu_us_per_delivery"] == {"off": 10000.0, "on": pytest.approx(13566.67)}
    assert figures["round_ratios"]["lockstep"] == pytest.approx([1.05, 1.02, 2.0])
    assert figures["writer_us_per_line"] == pytest.approx(3.0)
    assert len(figures["queries"]) == len(results.queries)


def test_a_round_that_misses_is_seen_as_missed_on_the_median():
    results = store_bench.StoreResults()
    for cpu in (1.2, 1.3):
        results.lockstep["off"].append(LockstepResult("chat", 10, messages=1, deliveries=10, server_cpu=1.0))
        results.lockstep["on"].append(LockstepResult("chat", 10, messages=1, deliveries=10, server_cpu=cpu))
    results.queries.append(store_bench.QueryCost("q", "q", 1, [1.0]))
    assert "| 1.250 (1.22–1.28; 1.20–1.30) | ≤ 1.10 (MISSED) |" in "\n".join(store_bench.rows(results))


def test_the_rounds_take_turns_and_each_server_fills_its_room_once(monkeypatch, tmp_path):
    """Each measure's runs side by side, their order turned round every
    round: a drift of the machine weighs on both alike."""
    started, filled, measured = [], [], []

    @contextlib.contextmanager
    def start_server(*options):
        started.append(options[:1])
        yield types.SimpleNamespace(address=("127.0.0.1", len(started)), options=options)

    def fill_room(address, *args):
        filled.append(address)
        return types.SimpleNamespace(close_all=lambda: None)

    monkeypatch.setattr(store_bench.scenarios, "fill_room", fill_room)
    monkeypatch.setattr(store_bench, "measure_lockstep", lambda plan, mode, *args: measured.append(f"lockstep {mode}"))
    monkeypatch.setattr(store_bench, "measure_burst", lambda plan, mode, *args: measured.append(f"burst {mode}"))
    monkeypatch.setattr(store_bench, "measure_search", lambda *args: None)
    plan = dataclasses.replace(SMALL, rounds=3)
    store_bench.measure(plan, store_bench.StoreResults(), start_server, progress=lambda text: None)
    assert started == [(), ("--store",)] and filled == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert measured == [
        *("lockstep off", "lockstep on", "burst on", "burst off"),
        *("lockstep on", "lockstep off", "burst off", "burst on"),
        *("lockstep off", "lockstep on", "burst on", "burst off"),
    ]
