"""``python -m bench``: measure the chat and write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
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
        "--out",
        type=Path,
        default=DOCS,
        help="where benchmarks.md, benchmarks.json and benchmarks.png go (default: docs/)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
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
    plotted = report.plot(results, args.out / PLOT_NAME)
    report.write_markdown(results, args.out / "benchmarks.md", meta, runner.machine(), PLOT_NAME if plotted else None)
    report.write_json(results, args.out / "benchmarks.json")
    plot_note = f" and {PLOT_NAME}" if plotted else " (no plot: matplotlib missing)"
    print(f"\nWrote {args.out / 'benchmarks.md'}{plot_note}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
