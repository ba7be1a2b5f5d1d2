"""bench/store.py counts right: the store it searches is made as the
server's (its lines found, none dropped by the retention), and its report
holds every figure. Never a time: a benchmark reports, a test checks."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3

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
    for mode, cpu in (("off", 1.0), ("on", 1.05)):
        run = LockstepResult("chat", 10, messages=10, deliveries=100, server_cpu=cpu)
        results.lockstep[mode].append(run)
        burst = FanOutResult(members=11, senders=1, paced=False, deliveries=1000, expected=1000, seconds=1.0)
        results.burst[mode].append((burst, cpu))
    store_bench.measure_search(SMALL, tmp_path / "search.sqlite3", results)
    section = "\n".join(store_bench.markdown(results))
    assert "| lockstep: server CPU µs per delivery | 10000.0 | 10500.0 | 1.050 | ≤ 1.10 (met) |" in section
    assert "| burst: deliveries/s | 1,000 | 1,000 | 1.000 | ≥ 0.90 (met) |" in section
    assert "Lost or duplicated deliveries in these runs: 0." in section
    figures = json.loads(json.dumps(store_bench.as_json(results)))
    assert figures["lockstep_cpu_us_per_delivery"] == {"off": 10000.0, "on": 10500.0}
    assert len(figures["queries"]) == len(results.queries)
