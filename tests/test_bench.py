"""The benchmark runs and counts right. A benchmark reports; these tests
check only correctness (nothing lost or duplicated, every section written),
never a time.

The default run checks the parts in process and in a few seconds: the load
generator against an in-process server with a handful of clients, the report
writer on a small results object, and where a run's report goes. The whole
``python -m bench --quick`` (about half a minute) is marked ``slow``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import crowd, micro, runner, scenarios, servers
from bench.lockstep import LockstepResult
from bench.report import SECTIONS, plot, write_json, write_markdown
from bench.runner import CHAT, CLUSTER_SETUPS, PLAIN, ClusterRun, Plan, Results
from bench.scenarios import FanOutResult, HandshakeResult
from tests.redis_proc import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = 5  # clients in the in-process room
TIMEOUT = 20.0  # seconds for any one step against the in-process server


# --- where the report goes ---------------------------------------------------------


def test_a_full_run_writes_to_docs():
    assert bench_main.out_folder(bench_main.parse_args([])) == bench_main.DOCS == ROOT / "docs"


def test_a_quick_run_writes_to_a_new_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = bench_main.out_folder(bench_main.parse_args(["--quick"]))
    second = bench_main.out_folder(bench_main.parse_args(["--quick"]))
    assert first.parent == second.parent == tmp_path
    assert first != second
    assert first.is_dir() and not any(first.iterdir())


@pytest.mark.parametrize("options", [["--out", "elsewhere"], ["--quick", "--out", "elsewhere"]])
def test_out_is_where_it_says(options):
    assert bench_main.out_folder(bench_main.parse_args(options)) == Path("elsewhere")


# --- the load generator against an in-process server --------------------------------


@contextlib.contextmanager
def serving(kind: str):
    """``bench.servers.make_server(kind)`` (``chat`` or ``plain``) serving on
    127.0.0.1:0 in this process; stopped at the end."""
    server = servers.make_server(kind)
    thread = threading.Thread(target=server.serve_forever, name=f"bench {kind}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if kind == PLAIN:
            server.server_close()
        else:
            server.shutdown()
            server.server_close()
        thread.join(5)
        assert not thread.is_alive(), f"the {kind} server did not stop"


def assert_delivered_once(fan: FanOutResult, senders: int, members: int) -> None:
    assert fan.messages > 0 and fan.members == members and fan.senders == senders, fan
    assert fan.expected == fan.messages * (members - 1), fan
    assert fan.deliveries == fan.expected, fan
    assert fan.lost == fan.duplicated == fan.reordered == 0, fan
    assert len(fan.latencies_ms) == fan.deliveries


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [CHAT, PLAIN])
def test_loadgen_delivers_every_line_exactly_once(kind, thread_errors):
    with serving(kind) as server:
        address = ("127.0.0.1", server.server_address[1])
        handshakes = scenarios.measure_handshakes(address, kind == PLAIN, 4, 2, TIMEOUT)
        assert (handshakes.count, handshakes.concurrency) == (4, 2) and handshakes.per_second > 0
        if kind == CHAT:  # the same-run denominator of the handshake target (bench/tables.py): its thread's CPU
            assert scenarios.thread_cpu_seconds(os.getpid(), server.handshakes.native_id) > 0
            assert math.isnan(scenarios.thread_cpu_seconds(os.getpid(), None))
        gen = scenarios.fill_room(address, kind == PLAIN, MEMBERS, TIMEOUT)
        try:
            assert all(client.ready_at is not None for client in gen.clients)
            flat = scenarios.run_flat_out(gen, senders=2, messages_each=5, window=3, timeout=TIMEOUT)
            assert_delivered_once(flat, 2, MEMBERS)
            assert flat.messages == 10
            paced = scenarios.run_paced(gen, senders=2, duration=0.2, timeout=TIMEOUT)
            assert_delivered_once(paced, 2, MEMBERS)
            assert paced.paced and paced.messages == 4
            assert gen.errors == []
        finally:
            gen.close_all()
    assert thread_errors == []


# --- the report writer on a small results object ------------------------------------


TINY = Plan(
    sizes={},
    senders=(1,),
    handshakes=1,
    flat_deliveries=1,
    paced_seconds=0.1,
    timeout=1.0,
    micro_repeat=40,
    rsa_repeat=1,
    stack_room=1,
    cluster_room=1,
    cluster_senders=1,
)


def fan_out(members: int, senders: int, paced: bool, messages: int = 10) -> FanOutResult:
    deliveries = messages * (members - 1)
    return FanOutResult(
        members,
        senders,
        paced,
        messages,
        deliveries,
        deliveries,
        seconds=0.5,
        server_cpu=0.2,
        loadgen_cpu=0.1,
        latencies_ms=[1.0 + i % 7 for i in range(deliveries)],
    )


def small_results() -> Results:
    """A result of every kind, the raw costs and profiles measured for real (briefly)."""
    results = Results()
    runner.measure_costs(TINY, results)
    for kind in (CHAT, PLAIN):
        for at_once in (1, 8):
            results.handshakes[(kind, at_once)] = HandshakeResult(10, at_once, 2.0, 3.0, 400.0, 5_000.0, 4_000.0)
        results.idle_rss_kib[kind] = 20_000
        results.room_rss_kib[(kind, 100)] = 4_000
    for kind in (CHAT, runner.UNBATCHED, PLAIN):
        for senders in (1, 10):
            for paced in (False, True):
                results.fanout.append((kind, fan_out(100, senders, paced)))
    results.cluster = [ClusterRun(setup, fan_out(20, 4, False), redis_cpu=0.05) for setup in CLUSTER_SETUPS]
    for kind in (CHAT, PLAIN):
        results.lockstep.append(
            LockstepResult(kind, 100, 10, 1000, 0, 1.0, 0.02, 0.03, 40, latencies_ms=[float(i) for i in range(10)])
        )
    results.crowd.fills.append(crowd.Fill(5000, 2, 50.0, 40.0, 20.0, 90.0, 5000 * 70, 80.0))
    results.crowd.storms.append(crowd.Fill(1000, 1, 12.0, 9.0, 300.0, 900.0, 1000 * 8))
    results.crowd.heard.append(crowd.Heard(5000, 10, 49_990, 49_990, 0, 0, 3.0, [5.0] * 49_990))
    return results


@pytest.mark.timeout(60)
def test_report_writes_every_section(tmp_path):
    results = small_results()
    assert {"seal one record (AES-256-GCM)", "whole handshake in process (both sides)"} <= set(results.costs_us)
    assert {micro.SEAL_AES_NEW, micro.SEAL_BEFORE, micro.SERVER_HANDSHAKE, micro.SERVER_CRYPTO} <= set(results.costs_us)
    assert len(results.profiles) == 3
    meta = {"command": "python -m bench --quick", "date": "2026-01-01 00:00 UTC", "minutes": "0.1"}
    write_markdown(results, tmp_path / "benchmarks.md", meta, runner.machine(), "benchmarks.png")
    write_json(results, tmp_path / "benchmarks.json")

    report = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"\n{section}\n" in report, section
    assert "`python -m bench --quick`" in report
    assert "## Errors" not in report
    assert "What this means here" in report  # the cluster's finding, from its three setups
    for title in results.profiles:
        assert f"### {title}" in report
    assert not re.search(r"\bnan\b", report.split("## Profiles")[0]), "a figure the results hold came out NaN"
    assert "server CPU per handshake (1 at once) ≤ 1.3 × its own cryptography" in report
    assert "the same (8 at once) against its handshake thread, the same run | 5.00 / 4.00 ms = 1.25 | yes" in report
    assert "The connection around the handshake.** One at a time, the whole server spends 5.00 ms" in report

    figures = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert len(figures["handshakes"]) == 4 and len(figures["fanout"]) == 12 and len(figures["memory"]) == 2
    assert all(row["lost"] == row["duplicated"] == 0 for row in figures["fanout"])
    assert figures["cluster"]["skipped"] is None
    assert [run["ratio"] for run in figures["cluster"]["runs"]] == [1.0, 1.0, 1.0]
    assert figures["costs_us"] == results.costs_us and figures["errors"] == []
    assert figures["crowd"]["heard"][0]["lost"] == 0 and len(figures["crowd"]["storms"]) == 1
    assert "| 5,000 clients on one server, all receiving, nothing lost | 49,990 of 49,990" in report


def test_report_says_why_the_cluster_was_skipped_and_lists_errors(tmp_path):
    results = Results(cluster_skipped="redis-server not installed", errors=["chat room of 10: timed out"])
    meta = {"command": "python -m bench", "date": "2026-01-01 00:00 UTC", "minutes": "0.1"}
    write_markdown(results, tmp_path / "benchmarks.md", meta, {"CPU": "test"}, None)
    report = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"\n{section}\n" in report, section
    assert "skipped: redis-server not installed" in report
    assert "- chat room of 10: timed out" in report


@pytest.mark.timeout(60)
def test_report_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    results = Results(fanout=[(CHAT, fan_out(members, 1, paced)) for members in (10, 50) for paced in (False, True)])
    assert plot(results, tmp_path / "benchmarks.png")
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


# --- the whole quick run (slow) ------------------------------------------------------


def docs_digest() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted((ROOT / "docs").iterdir())}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m bench --quick`` as a user types it (no --out), its
    temporary folder under a folder of this test's; docs/ must not change."""
    temp = tmp_path_factory.mktemp("bench-tmp")
    docs_before = docs_digest()
    env = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150
    )
    folders = list(temp.glob("bench-quick-*"))
    assert docs_digest() == docs_before, "python -m bench --quick changed docs/"
    assert len(folders) == 1, (folders, done.stderr[-2000:])
    assert f"The report goes to {folders[0]}" in done.stderr
    return done, folders[0]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_succeeds(quick_run):
    done, _ = quick_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_loses_and_duplicates_nothing(quick_run):
    _, out = quick_run
    figures = json.loads((out / "benchmarks.json").read_text())
    assert figures["errors"] == []
    kinds = {row["kind"] for row in figures["fanout"]}
    assert kinds == {"chat", "chat-unbatched", "plain"}
    for row in figures["fanout"]:
        assert row["messages"] > 0
        assert row["deliveries"] == row["expected"] > 0, row
        assert row["lost"] == row["duplicated"] == row["reordered"] == 0, row
    assert {(row["kind"], row["receivers"]) for row in figures["lockstep"]} == {
        (kind, members - 1) for kind in ("chat", "plain") for members in runner.QUICK.sizes[kind]
    }
    for row in figures["lockstep"]:
        assert row["deliveries"] == row["messages"] * row["receivers"] > 0, row
        assert row["lost"] == row["duplicated"] == 0, row
    assert figures["rooms"]["lost_or_duplicated"] == 0 and figures["rooms"]["joins"]["joins"] > 0
    assert len(figures["rooms"]["round_ratios"]["lockstep"]) == runner.QUICK.rooms.rounds
    storms = figures["resume"]["storms"]
    assert [storm["resumed"] for storm in storms] == [0, runner.QUICK.resume.storm], storms


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_writes_every_section_and_the_plot(quick_run):
    _, out = quick_run
    report = (out / "benchmarks.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"\n{section}\n" in report, section
    assert "`python -m bench --quick`" in report
    assert (out / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    figures = json.loads((out / "benchmarks.json").read_text())
    assert {(row["kind"], row["at_once"]) for row in figures["handshakes"]} == {
        ("chat", 1),
        ("chat", 8),
        ("plain", 1),
        ("plain", 8),
    }
    assert {row["kind"] for row in figures["memory"]} >= {"chat", "chat-unbatched", "plain"}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_crowd_fills_hears_everything_and_survives_a_storm(quick_run):
    _, out = quick_run
    figures = json.loads((out / "benchmarks.json").read_text())["crowd"]
    assert len(figures["fills"]) == len(figures["storms"]) == len(figures["heard"]) == 1, figures
    for heard in figures["heard"]:
        assert heard["received"] == heard["expected"] > 0 and heard["lost"] == heard["duplicated"] == 0, heard


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_cluster_delivers_everything_once(quick_run):
    """One server alone, one clustered, two clustered: the same load, each
    line to every other member exactly once. Without redis-server (or the
    redis package) the section says it was skipped, and so does this test,
    except in CI, where it fails."""
    _, out = quick_run
    cluster = json.loads((out / "benchmarks.json").read_text())["cluster"]
    if cluster["skipped"]:
        assert f"skipped: {cluster['skipped']}" in (out / "benchmarks.md").read_text(encoding="utf-8")
        skip_or_fail(f"cluster not measured: {cluster['skipped']}")
    runs = cluster["runs"]
    assert [(run["processes"], run["clustered"]) for run in runs] == [(1, False), (1, True), (2, True)]
    assert len({(run["members"], run["senders"], run["messages"]) for run in runs}) == 1, runs  # the same load
    for run in runs:
        assert run["deliveries"] == run["expected"] > 0, run
        assert run["per_second"] > 0 and run["ratio"] > 0, run
        assert run["lost"] == run["duplicated"] == run["reordered"] == 0, run


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_measures_the_irc_server_beside_ours_and_loses_nothing(quick_run):
    """bench/peer.py in the quick run: ngircd over TLS and ours, the same
    steps, every line to every other member once. Without ngircd the report
    says it was skipped, and so does this test, except in CI (.ci/run
    installs ngircd), where it fails."""
    _, out = quick_run
    figures = json.loads((out / "benchmarks.json").read_text())["peer"]
    if figures["skipped"]:
        assert f"skipped: {figures['skipped']}" in (out / "benchmarks.md").read_text(encoding="utf-8")
        skip_or_fail(f"the IRC peer not measured: {figures['skipped']}")
    assert set(figures["runs"]) == {"chat", "irc"}
    for name, run in figures["runs"].items():
        assert set(run["handshakes"]) == {"1", "8"}, name
        assert run["lockstep"] and all(
            step["deliveries"] > 0 and step["lost"] == step["duplicated"] == 0 for step in run["lockstep"].values()
        ), (name, run["lockstep"])
        flat = run["flat"]
        assert flat["deliveries"] == flat["expected"] > 0, (name, flat)
        assert flat["lost"] == flat["duplicated"] == flat["reordered"] == 0, (name, flat)
