"""``python -m bench``: measure the chat and write docs/benchmarks.md.

``--quick`` writes to a new temporary folder instead (unless given
``--out``): docs/ holds the full run's report, which a quick run must not
replace.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import report, runner

DOCS = runner.ROOT / "docs"
PLOT_NAME = "benchmarks.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the chat on 127.0.0.1.")
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument(
        "--history-query",
        action="store_true",
        help="only the CPU per /history page over 1,000,000 stored lines (bench/history_query.py), printed",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where benchmarks.md, benchmarks.json and benchmarks.png go "
        "(default: docs/; with --quick, a new temporary folder)",
    )
    return parser.parse_args(argv)


def out_folder(args: argparse.Namespace) -> Path:
    """Where the report goes: ``--out``, else docs/ for a full run and a new
    temporary folder for a quick one (whose report would replace the full
    run's committed one)."""
    if args.out is not None:
        return args.out
    if args.quick:
        return Path(tempfile.mkdtemp(prefix="bench-quick-"))
    return DOCS


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.history_query:
        from bench import history_query

        return history_query.main()
    out = out_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    print(f"The report goes to {out}", file=sys.stderr, flush=True)
    begin = time.monotonic()
    results = runner.run(
        runner.QUICK if args.quick else runner.FULL, progress=lambda text: print(text, file=sys.stderr, flush=True)
    )
    report.print_tables(results)
    meta = {
        "command": " ".join(["python -m bench", *(["--quick"] if args.quick else [])]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": f"{(time.monotonic() - begin) / 60:.1f}",
    }
    plotted = report.plot(results, out / PLOT_NAME)
    report.write_markdown(results, out / "benchmarks.md", meta, runner.machine(), PLOT_NAME if plotted else None)
    report.write_json(results, out / "benchmarks.json")
    plot_note = f" and {PLOT_NAME}" if plotted else " (no plot: matplotlib missing)"
    print(f"\nWrote {out / 'benchmarks.md'}, benchmarks.json{plot_note}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
