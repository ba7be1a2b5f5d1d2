"""The benchmark's handshake flood (bench/flood.py): what it reports, and,
against real server processes (slow), that the per-address limits cut
what one address can force to the bucket's allowance."""

from __future__ import annotations

import json

import pytest

from bench import flood, runner
from bench.report import write_json, write_markdown
from bench.runner import Results


def test_the_report_has_the_flood_section_with_before_and_after(tmp_path):
    runs = [
        flood.FloodRun("limits off (before)", 10.0, 800, forced=800, refused=0, server_cpu=9.0),
        flood.FloodRun("server.py's defaults (after)", 10.0, 20_000, forced=20, refused=19_980, server_cpu=1.0),
    ]
    results = Results(flood=runs)
    meta = {"command": "python -m bench", "date": "2026-01-01 00:00 UTC", "minutes": "0.1"}
    write_markdown(results, tmp_path / "benchmarks.md", meta, {"CPU": "test"}, None)
    write_json(results, tmp_path / "benchmarks.json")
    report = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "\n## Handshake flood from one address\n" in report
    assert "One address forced 80 handshakes a second before and 2.0 after (40 times fewer)" in report
    figures = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert [run["forced_per_second"] for run in figures["flood"]] == [80.0, 2.0]


def test_the_attackers_key_exchange_is_a_well_formed_frame():
    frame = flood.key_exchange()
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4 == 2 + 32 + 32 + 2 + flood.WRAPPED_BYTES
    assert frame[4:6] == b"\x02\x01" and frame[38:70] == flood.FIXED_SHARE


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_one_address_forces_only_the_buckets_allowance_with_the_limits_on():
    seconds = 1.5
    runs = []
    for setup, admission_on in flood.SETUPS:
        with runner.ServerProcess(runner.CHAT, *(["--admission"] if admission_on else [])) as server:
            runs.append(flood.flood(server.address, seconds, server.proc.pid, setup))
    before, after = runs
    assert before.refused == 0 and before.forced > 0
    assert after.refused > 0
    assert after.forced <= 10 + after.seconds * 1.0 + 1  # a burst of 10, then 1 a second
    assert after.forced < before.forced
