"""The chat beside an IRC server (issue 22, part 4): the same measurements,
in the same run, of our server and of Debian's ngircd over TLS (bench/irc.py).

For each of the two, on a fresh server process, one after the other:

- **handshakes**: connect to ready (TCP connect until joined) one at a time
  and 8 at once, and the server's CPU per connection;
- **a room of 101**: RSS growth, then lockstep (one message in flight, to
  100 receivers; bench/lockstep.py);
- **grown to 501**: RSS growth, lockstep to 500 receivers, and flat out
  (``senders`` senders, every message to the 500 others);
- RSS per idle client is the growth from 101 to 501 members over 400.

Skipped, and said so, when ngircd (or openssl, which makes its certificate)
is not installed. ``section`` and ``targets`` write its part of
docs/benchmarks.md. ``python -m bench.peer`` runs this part alone and
prints its table, its targets and its findings (about two minutes; ``--quick``
for a small run), so that a change can be measured beside the IRC server
without the whole benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import irc, lockstep, scenarios
from bench.loadgen import BenchError, ConnectionFactory, LoadGen
from bench.lockstep import LockstepResult
from bench.scenarios import FanOutResult, HandshakeResult

CHAT, IRC = "chat", "irc"
NAMES = {CHAT: "chat", IRC: "ngircd + TLS"}
#: Issue 22, part 3: our CPU per delivery with one message in flight against the IRC server's.
CPU_TARGET = 3.0
#: Issue 22, part 3: RSS per idle client, at 1,000 clients (the main bench's room of 1,000).
RSS_TARGET_KIB = 32


@dataclass(frozen=True)
class PeerPlan:
    handshakes: int  # one at a time; twice as many 8 at once
    small: int  # members of the first room (receivers + 1)
    large: int  # members once grown
    lockstep_deliveries: int  # about this many deliveries per lockstep run
    lockstep_least: int  # messages per lockstep run, at least
    senders: int  # flat out in the large room
    flat_deliveries: int
    timeout: float  # per step, plus a share per member while a room fills


FULL_PEER = PeerPlan(
    handshakes=200,
    small=101,
    large=501,
    lockstep_deliveries=50_000,
    lockstep_least=100,
    senders=10,
    flat_deliveries=100_000,
    timeout=120.0,
)
QUICK_PEER = PeerPlan(
    handshakes=10,
    small=6,
    large=21,
    lockstep_deliveries=200,
    lockstep_least=10,
    senders=2,
    flat_deliveries=400,
    timeout=30.0,
)
NO_PEER = PeerPlan(0, 0, 0, 0, 0, 0, 0, 0.0)


@dataclass
class PeerRun:
    """One server's figures."""

    server: str  # CHAT or IRC
    handshakes: dict[int, HandshakeResult] = field(default_factory=dict)  # by how many at once
    lockstep: dict[int, LockstepResult] = field(default_factory=dict)  # by receivers
    flat: FanOutResult | None = None
    rss_kib: dict[int, int] = field(default_factory=dict)  # members -> RSS growth over the idle server

    def idle_client_kib(self, small: int, large: int) -> float:
        """RSS per idle client from ``small`` to ``large`` members (NaN if not measured)."""
        if small in self.rss_kib and large in self.rss_kib and large > small:
            return (self.rss_kib[large] - self.rss_kib[small]) / (large - small)
        return math.nan

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.lockstep.values()) + (self.flat.lost if self.flat else 0)

    @property
    def duplicated(self) -> int:
        return sum(r.duplicated for r in self.lockstep.values()) + (self.flat.duplicated if self.flat else 0)


@dataclass
class PeerResults:
    runs: dict[str, PeerRun] = field(default_factory=dict)
    skipped: str | None = None  # why the IRC server was not run
    small: int = 0
    large: int = 0


@dataclass
class _Server:
    """What the measurements need of a running server."""

    address: tuple[str, int]
    pid: int
    connection: ConnectionFactory  # None: our protocol


def measure(plan: PeerPlan, results: PeerResults, server_process, progress, errors: list[str]) -> None:
    """Both servers through the same steps; ``server_process()`` starts ours
    (bench/runner.py's ServerProcess). A failing server's error is recorded
    and the other still runs."""
    if not plan.handshakes:
        return
    results.skipped = irc.missing()
    if results.skipped:
        progress(f"  skipped: {results.skipped}")
        return
    results.small, results.large = plan.small, plan.large
    for name in (CHAT, IRC):
        progress(f"  {NAMES[name]}")
        begin = time.monotonic()
        try:
            with _started(name, server_process) as server:
                results.runs[name] = run_one(plan, name, server)
        except (BenchError, OSError) as exc:
            errors.append(f"peer: {NAMES[name]}: {exc}")
            progress(f"    FAILED: {exc}")
        progress(f"    {time.monotonic() - begin:.1f} s")


@contextlib.contextmanager
def _started(name: str, server_process):
    if name == CHAT:
        with server_process() as chat:
            yield _Server(chat.address, chat.proc.pid, None)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ngircd-") as folder, irc.IrcServer(Path(folder)) as ngircd:
        yield _Server(ngircd.address, ngircd.pid, ngircd.connection)


def run_one(plan: PeerPlan, name: str, server: _Server) -> PeerRun:
    run = PeerRun(name)
    for at_once in (1, 8):
        count = plan.handshakes * (1 if at_once == 1 else 2)
        cpu = scenarios.cpu_seconds(server.pid)
        result = scenarios.measure_handshakes(server.address, False, count, at_once, plan.timeout, server.connection)
        result.server_cpu_us = (scenarios.cpu_seconds(server.pid) - cpu) / count * 1e6
        run.handshakes[at_once] = result
    idle = scenarios.rss_kib(server.pid)
    gen = LoadGen(server.address, connection=server.connection)
    try:
        for members in (plan.small, plan.large):
            scenarios.grow_room(gen, members, plan.timeout + 0.15 * members)
            run.rss_kib[members] = scenarios.rss_kib(server.pid) - idle
            run.lockstep[members - 1] = _lockstep(plan, name, server, gen)
        run.flat = _flat_out(plan, server, gen)
    finally:
        gen.close_all()
    return run


def _lockstep(plan: PeerPlan, name: str, server: _Server, gen: LoadGen) -> LockstepResult:
    messages = lockstep.message_count(len(gen.clients) - 1, plan.lockstep_deliveries, plan.lockstep_least)
    return lockstep.run(gen, name, server.pid, messages, plan.timeout)


def _flat_out(plan: PeerPlan, server: _Server, gen: LoadGen) -> FanOutResult:
    """As bench/runner.py's run_flat_out: at most 512 messages not yet everywhere."""
    senders = min(plan.senders, len(gen.clients))
    each = max(10, math.ceil(plan.flat_deliveries / (len(gen.clients) - 1) / senders))
    window = max(1, min(64, 512 // senders))
    cpu, own = scenarios.cpu_seconds(server.pid), scenarios.own_cpu_seconds()
    result = scenarios.run_flat_out(gen, senders, each, window, plan.timeout)
    result.server_cpu = scenarios.cpu_seconds(server.pid) - cpu
    result.loadgen_cpu = scenarios.own_cpu_seconds() - own  # which of the two sets the pace (findings)
    return result


# --- the report ------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _fig(value: float) -> str:
    """A figure to three significant places or so: 12,345 / 123 / 12.3 / 1.23."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _rows(results: PeerResults) -> list[tuple[str, ...]]:
    chat, ngircd = results.runs.get(CHAT), results.runs.get(IRC)
    small, large = results.small - 1, results.large - 1  # receivers

    def each(figure) -> tuple[str, str, str]:
        ours = figure(chat) if chat else math.nan
        theirs = figure(ngircd) if ngircd else math.nan
        ratio = ours / theirs if theirs and not math.isnan(theirs) else math.nan
        return _fig(ours), _fig(theirs), _f(ratio, 2)

    def hand(at_once: int, what: str):
        return lambda run: getattr(run.handshakes[at_once], what) if at_once in run.handshakes else math.nan

    def lock(receivers: int, what):
        return lambda run: what(run.lockstep[receivers]) if receivers in run.lockstep else math.nan

    def flat(what):
        return lambda run: what(run.flat) if run.flat and run.flat.deliveries else math.nan

    return [
        ("connect to ready, p50 ms", *each(hand(1, "p50_ms"))),
        ("connections/s, one at a time", *each(hand(1, "per_second"))),
        ("connections/s, 8 at once", *each(hand(8, "per_second"))),
        ("server CPU ms per connection, one at a time", *each(lambda r: hand(1, "server_cpu_us")(r) / 1000)),
        (f"server CPU µs per delivery, one message in flight, {small} receivers", *each(lock(small, _cpu_us))),
        (f"server CPU µs per delivery, one message in flight, {large} receivers", *each(lock(large, _cpu_us))),
        (f"p99 ms to the {large}th receiver, one message in flight", *each(lock(large, lambda r: r.latency(0.99)))),
        (f"flat out, {large} receivers: deliveries/s", *each(flat(lambda f: f.per_second))),
        (f"flat out, {large} receivers: server CPU µs per delivery", *each(flat(_flat_cpu_us))),
        (
            f"RSS KiB per idle client ({results.small} → {results.large})",
            *each(lambda r: r.idle_client_kib(results.small, results.large)),
        ),
        ("lost / duplicated, all runs", *_counts(chat), *_counts(ngircd), ""),
    ]


def _counts(run: PeerRun | None) -> tuple[str]:
    return (f"{run.lost} / {run.duplicated}" if run else "n/a",)


def _cpu_us(run: LockstepResult) -> float:
    return run.cpu_us


def _flat_cpu_us(fan: FanOutResult) -> float:
    return 1e6 * fan.server_cpu / fan.deliveries


def table(results: PeerResults) -> list[str]:
    if results.skipped:
        return [f"skipped: {results.skipped}"]
    if not results.runs:
        return ["not measured in this run"]
    header = ("", NAMES[CHAT], NAMES[IRC], "chat ÷ ngircd")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in _rows(results)]


def section(results: PeerResults) -> list[str]:
    """The peer's section of docs/benchmarks.md, its title included."""
    return [
        "## The IRC server as a peer",
        "",
        "The same load generator drives our server and Debian's `ngircd` over TLS, one after the other "
        "in this run, each in a fresh process on 127.0.0.1 (bench/peer.py, bench/irc.py). ngircd listens "
        "for TLS only, with a self-signed RSA-3072 certificate made for the run by `openssl` (our "
        "server's identity key is RSA-3072 too) and its per-address and flood limits off "
        "(`MaxConnectionsIP = 0`, `MaxPenaltyTime = 0`), as ours runs here without them. Its clients are "
        "the standard library's `ssl` on memory BIOs (TLS 1.3, a full handshake each, the certificate "
        "checked), sending NICK, USER and JOIN at once; *ready* is the end of the channel's NAMES, as "
        "ours is its `Welcome`. A message is a PRIVMSG to the channel. Server CPU is each process's "
        "user and system time from /proc/PID/stat, as for ours; RSS from /proc/PID/status. Lockstep "
        "and flat out are as in their sections above; RSS per idle client is the growth from the "
        "first room to the second, over the clients added.",
        "",
        *table(results),
        "",
    ]


def targets(results: PeerResults, room_rss_kib: dict[tuple[str, int], int]) -> list[tuple[str, str, str]]:
    """(target, measured, met) for issue 22's targets that name the IRC server, and its RSS target."""
    rows = []
    chat, ngircd = results.runs.get(CHAT), results.runs.get(IRC)
    if chat and ngircd:
        for receivers in sorted(set(chat.lockstep) & set(ngircd.lockstep)):
            ours, theirs = chat.lockstep[receivers].cpu_us, ngircd.lockstep[receivers].cpu_us
            rows.append(
                (
                    f"one message in flight, {receivers} receivers: server CPU per delivery "
                    f"≤ {CPU_TARGET:g} × the IRC server's",
                    f"{_f(ours)} / {_f(theirs)} µs = {_f(ours / theirs, 2) if theirs else 'n/a'}",
                    _yes(ours <= CPU_TARGET * theirs),
                )
            )
        large = max(chat.lockstep, default=0)
        if large in ngircd.lockstep:
            ours, theirs = chat.lockstep[large].latency(0.99), ngircd.lockstep[large].latency(0.99)
            rows.append(
                (
                    f"one message in flight: p99 to the {large}th receiver ≤ the IRC server's",
                    f"{_f(ours, 2)} / {_f(theirs, 2)} ms",
                    _yes(ours <= theirs),
                )
            )
    elif results.skipped:
        rows.append(("the IRC server side by side (issue 22, part 4)", f"skipped: {results.skipped}", "**no**"))
    for (kind, members), grown in sorted(room_rss_kib.items()):
        if kind == CHAT and members >= 1000:
            rows.append(
                (
                    f"RSS ≤ {RSS_TARGET_KIB} KiB per idle client ({members:,})",
                    f"{grown / members:.1f} KiB",
                    _yes(grown / members <= RSS_TARGET_KIB),
                )
            )
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def as_json(results: PeerResults) -> dict:
    return {
        "skipped": results.skipped,
        "runs": {
            name: dict(
                handshakes={
                    str(k): dict(
                        p50_ms=h.p50_ms, p99_ms=h.p99_ms, per_second=h.per_second, server_cpu_us=h.server_cpu_us
                    )
                    for k, h in run.handshakes.items()
                },
                lockstep={
                    str(k): dict(
                        messages=r.messages,
                        deliveries=r.deliveries,
                        lost=r.lost,
                        duplicated=r.duplicated,
                        server_cpu_us_per_delivery=r.cpu_us,
                        p99_ms=r.latency(0.99),
                    )
                    for k, r in run.lockstep.items()
                },
                flat=(
                    dict(
                        deliveries=run.flat.deliveries,
                        expected=run.flat.expected,
                        lost=run.flat.lost,
                        duplicated=run.flat.duplicated,
                        reordered=run.flat.reordered,
                        per_second=run.flat.per_second,
                        server_cpu_s=run.flat.server_cpu,
                    )
                    if run.flat
                    else None
                ),
                rss_kib=run.rss_kib,
                idle_client_kib=run.idle_client_kib(results.small, results.large),
            )
            for name, run in results.runs.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.peer``: this part alone, printed."""
    from bench import findings, runner  # here: runner imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.peer", description="The chat beside ngircd over TLS.")
    parser.add_argument("--quick", action="store_true", help="a small run (rooms of 6 and 21), for a smoke test")
    args = parser.parse_args(argv)
    results = runner.Results()
    errors: list[str] = []
    server_process = functools.partial(runner.ServerProcess, runner.CHAT)
    measure(QUICK_PEER if args.quick else FULL_PEER, results.peer, server_process, _progress, errors)
    print("\n".join(table(results.peer)))
    for target, measured, met in targets(results.peer, {}):
        print(f"- {target}: {measured} ({met})")
    print("\n".join(findings._peer_finding(results)))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
