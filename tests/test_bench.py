"""The benchmark runs and counts right: ``python -m bench --quick``, which
writes to a temporary folder of its own (never docs/). A benchmark reports; this test checks only
correctness (nothing lost or duplicated, every section written), never a time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.report import SECTIONS
from tests.redis_proc import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


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


def docs_digest() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted((ROOT / "docs").iterdir())}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m bench --quick`` as a user types it (no --out), its
    temporary folder under a folder of this test's; docs/ must not change."""
    temp = tmp_path_factory.mktemp("bench-tmp")
    docs_before = docs_digest()
    env = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    folders = list(temp.glob("bench-quick-*"))
    assert docs_digest() == docs_before, "python -m bench --quick changed docs/"
    assert len(folders) == 1, (folders, done.stderr[-2000:])
    assert f"The report goes to {folders[0]}" in done.stderr
    return done, folders[0]


@pytest.mark.timeout(180)
def test_quick_run_succeeds(quick_run):
    done, _ = quick_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.timeout(180)
def test_quick_run_loses_and_duplicates_nothing(quick_run):
    _, out = quick_run
    figures = json.loads((out / "benchmarks.json").read_text())
    assert figures["errors"] == []
    kinds = {row["kind"] for row in figures["fanout"]}
    assert kinds == {"chat", "chat-unlocked", "chat-unbatched", "plain"}
    for row in figures["fanout"]:
        assert row["messages"] > 0
        assert row["deliveries"] == row["expected"] > 0, row
        assert row["lost"] == row["duplicated"] == row["reordered"] == 0, row


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
        ("chat", 1), ("chat", 8), ("plain", 1), ("plain", 8)}
    assert {row["kind"] for row in figures["memory"]} >= {"chat", "chat-unlocked", "chat-unbatched", "plain"}


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
        assert run["lost"] == run["duplicated"] == run["reordered"] == 0, run
        assert run["per_second"] > 0 and run["ratio"] > 0, run
