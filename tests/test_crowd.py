"""bench/crowd.py: rooms filled and refilled by load generators in several
processes, against a real server process. Checks what was counted, never a
time."""

from __future__ import annotations

import functools
import os

import pytest

from bench import crowd, runner
from socket_chat.chat import presence


def test_one_load_generator_process_per_thousand_clients_and_no_more_than_cpus():
    cpus = os.cpu_count() or 1
    assert crowd.processes_for(10) == 1
    assert crowd.processes_for(5000) == min(cpus, 5)
    assert crowd.processes_for(100_000) == cpus


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_small_crowd_fills_hears_every_line_and_comes_back_after_a_storm(monkeypatch):
    monkeypatch.setattr(crowd, "CLIENTS_PER_PROCESS", 6)  # several processes, if this machine has the CPUs
    plan = crowd.CrowdPlan(sizes=(12,), storm=12, messages=3, pace=0.05, timeout=60.0)
    results, errors, said = crowd.CrowdResults(), [], []
    crowd.measure(plan, results, functools.partial(runner.ServerProcess, runner.CHAT), said.append, errors)
    assert errors == []
    (fill,), (storm,), (heard,) = results.fills, results.storms, results.heard
    assert fill.members == storm.members == heard.members == 12
    assert fill.processes == crowd.processes_for(12)
    # Below presence.BUSY_FROM every join is told: member k hears of the 11 - k after it.
    assert presence.BUSY_FROM > 12 and fill.presence_lines == sum(range(12))
    assert heard.expected == 3 * 11 and heard.received == heard.expected
    assert heard.lost == heard.duplicated == heard.reordered == 0
    assert len(heard.latencies_ms) == heard.expected
    # Everyone came back (else measure records an error), and was shown the storm.
    assert storm.presence_lines > 0 and storm.seconds > 0
    assert any("reconnect storm" in line for line in said)
