"""The benchmark's flood from 200 addresses while a person connects
(bench/swarm.py): what it reports, and, against real server processes
(slow, about 12 s), that with the proof of work the flood pays more CPU per
forced RSA decryption than it costs the server, and the person gets in."""

from __future__ import annotations

import json
import socket

import pytest

from bench import swarm
from bench.report import write_json, write_markdown
from bench.runner import Results
from socket_chat import protocol
from socket_chat.protocol.handshake import MIN_EFFORT, WORK_REFUSAL, puzzle


def runs() -> list[swarm.SwarmRun]:
    before = swarm.SwarmRun("no proof of work", 10.0, 4000, 2000, 2000, 0.8, 8.0, 0, [0.01] * 9, person_failed=5)
    after = swarm.SwarmRun("proof of work", 10.0, 500, 500, 0, 9.0, 2.0, 16, [0.2] * 13 + [0.6])
    return [before, after]


def test_the_report_has_the_swarm_section_and_its_targets(tmp_path):
    meta = {"command": "python -m bench", "date": "2026-01-01 00:00 UTC", "minutes": "0.1"}
    write_markdown(Results(swarm=runs()), tmp_path / "benchmarks.md", meta, {"CPU": "test"}, None)
    write_json(Results(swarm=runs()), tmp_path / "benchmarks.json")
    report = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "\n## Handshake flood from 200 addresses, and a person\n" in report
    assert "| proof of work | 10.0 | 500 | 0 | 500 | 18.0 ms | 4.0 ms | 0.20 | 16 | 200 / 600 ms (0 of 14) |" in report
    figures = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert [run["person_failed"] for run in figures["swarm"]] == [5, 0]
    assert [met for _, _, met in swarm.targets(runs())] == ["yes", "yes", "yes"]


def greeted_with(monkeypatch, data: bytes) -> None:
    """The attacker's next connection reads ``data``, then the end."""
    near, far = socket.socketpair()
    with far:
        far.sendall(data)
    monkeypatch.setattr(swarm.socket, "create_connection", lambda *args, **kwargs: near)


@pytest.mark.parametrize("after_the_puzzle", [b"", protocol.framing.frame(b"")], ids=["closed", "an empty frame"])
def test_an_attack_that_fails_after_the_puzzle_still_counts_its_effort(monkeypatch, after_the_puzzle):
    greeted_with(monkeypatch, protocol.refusal(WORK_REFUSAL) + protocol.framing.frame(puzzle(14)) + after_the_puzzle)
    assert swarm.attack_once(("127.0.0.1", 1), "127.0.0.2") == ("failed", 14)


def test_an_empty_frame_for_a_greeting_is_a_failure_not_a_crash(monkeypatch):
    greeted_with(monkeypatch, protocol.framing.frame(b""))
    assert swarm.attack_once(("127.0.0.1", 1), "127.0.0.2") == ("failed", 0)


def test_a_target_not_met_says_so():
    before, after = runs()
    after.person_failed = 1
    after.server_cpu = 8.0
    assert [met for _, _, met in swarm.targets([before, after])] == ["**no**", "yes", "**no**"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_with_the_proof_of_work_the_flood_pays_more_than_it_costs_and_the_person_gets_in():
    before, after = swarm.measure(4.0)
    assert before.forced > 0 and before.highest_effort == 0  # no puzzle: the random drop
    assert after.highest_effort > MIN_EFFORT  # asked for work, and more as the flood went on
    assert after.refused == 0  # it pays instead of being dropped
    assert after.attacker_ms_per_forced >= after.server_ms_per_forced
    assert before.attacker_ms_per_forced < before.server_ms_per_forced  # what it was: nearly free
    assert after.person and after.person_failed == 0
    assert after.server_cpu / after.seconds < before.server_cpu / before.seconds
