"""Lockstep: a room at human pace (issue 12, item 1).

One sender, one message in flight: the next is sent only once every
receiver has the one before. So each message is sealed and sent to the
whole room by an idle server, as when people type, and nothing batches. It
measures what one delivery costs the server (its CPU time over the run,
from /proc, per delivery), how long the last receiver waits, and how often
the server's threads were switched (from /proc/PID/task/*/status).

This module also writes its section of docs/benchmarks.md and its targets,
beside the cost of one of the project's seals and one ``AES.new`` seal
measured in the same run (bench/micro.py).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import BenchError, LoadGen
from bench.scenarios import own_cpu_seconds, percentile

#: The IRC server over TLS (ngircd), p99 to the last of 500 receivers, in the
#: run issue 12 reports; set beside ours when the run has not measured it
#: (bench/peer.py does, with ngircd installed, and then gives this target).
IRC_P99_500_MS = 28.0
SEAL_TARGET, AES_NEW_TARGET, RSS_TARGET_KIB = 1.3, 0.6, 40


@dataclass
class LockstepResult:
    kind: str  # the server kind (bench.runner's CHAT or PLAIN)
    receivers: int
    messages: int = 0
    deliveries: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server process used
    server_system: float = 0.0  # of which in the kernel
    loadgen_cpu: float = 0.0
    switches: int = 0  # context switches of all the server's threads
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # to the last receiver

    @property
    def expected(self) -> int:
        return self.messages * self.receivers

    @property
    def lost(self) -> int:
        return self.expected - (self.deliveries - self.duplicated)

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per delivery."""
        return 1e6 * self.server_cpu / self.deliveries if self.deliveries else math.nan

    def latency(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of ``pid``."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:  # a thread that just ended
            continue
        total += sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)
    return total


def message_count(receivers: int, deliveries: int, least: int) -> int:
    """Messages for about ``deliveries`` deliveries, at least ``least`` (for
    a p99), at most 1,000."""
    return max(least, min(1000, deliveries // max(1, receivers)))


def run(gen: LoadGen, kind: str, pid: int, messages: int, timeout: float) -> LockstepResult:
    """The first client sends ``messages``, each once all the others have
    the one before; the room is filled and quiet."""
    sender, receivers = gen.clients[0], len(gen.clients) - 1
    result = LockstepResult(kind, receivers)
    tag = f"l{id(result)}"
    seq, seen = -1, set()  # the message in flight, and who has it

    def on_chat(client, message, now: float) -> None:
        parts = message.text.split(" ")
        if parts[0] != tag or int(parts[1]) != seq:
            return  # from an earlier run (not ours to count)
        if client.name in seen:
            result.duplicated += 1
            return
        seen.add(client.name)
        result.deliveries += 1
        if len(seen) == receivers:
            result.latencies_ms.append((now - int(parts[2]) / 1e9) * 1000)

    gen.on_chat = on_chat
    deadline = time.monotonic() + timeout
    (user, system), own, switches = cpu_split(pid), own_cpu_seconds(), context_switches(pid)
    begin = time.perf_counter()
    try:
        for seq in range(messages):
            seen.clear()
            gen.send_chat(sender, f"{tag} {seq} {time.perf_counter_ns()}")
            result.messages += 1
            gen.run_until(lambda: len(seen) == receivers, deadline, f"lockstep message {seq} of {messages}")
    finally:
        result.seconds = time.perf_counter() - begin
        user_after, system_after = cpu_split(pid)
        result.server_cpu = user_after + system_after - user - system
        result.server_system = system_after - system
        result.loadgen_cpu = own_cpu_seconds() - own
        result.switches = context_switches(pid) - switches
        gen.on_chat = lambda client, message, now: None
    if gen.errors:
        raise BenchError(f"{len(gen.errors)} client errors, first: {gen.errors[0]}")
    return result


# --- the report ------------------------------------------------------------------


def seal_costs(costs_us: dict[str, float]) -> tuple[float, float]:
    """(one of the project's seals, one ``AES.new`` seal) in µs, from
    bench/micro.py's figures of this run; NaN if missing."""
    from bench import micro

    return costs_us.get(micro.SEAL, math.nan), costs_us.get(micro.SEAL_AES_NEW, math.nan)


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def table(runs: list[LockstepResult], costs_us: dict[str, float], names: dict[str, str]) -> list[str]:
    ours, aes_new = seal_costs(costs_us)
    header = (
        "server",
        "receivers",
        "messages",
        "server CPU µs / delivery",
        "of which kernel",
        "÷ our seal",
        "÷ AES.new seal",
        "p50 ms to the last",
        "p99 ms to the last",
        "context switches / message",
        "lost",
        "dup",
    )
    rows = [
        (
            names.get(r.kind, r.kind),
            f"{r.receivers:,}",
            r.messages,
            _f(r.cpu_us),
            f"{r.server_system / r.server_cpu:.0%}" if r.server_cpu else "n/a",
            _f(r.cpu_us / ours, 2),
            _f(r.cpu_us / aes_new, 2),
            _f(r.latency(0.5), 2),
            _f(r.latency(0.99), 2),
            _f(r.switches / r.messages if r.messages else math.nan),
            r.lost,
            r.duplicated,
        )
        for r in sorted(runs, key=lambda r: (r.receivers, r.kind))
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def targets(
    runs: list[LockstepResult],
    costs_us: dict[str, float],
    rss_kib: dict[tuple[str, int], int],
    chat: str,
    plain: str,
    irc_measured: bool = False,
) -> list[tuple[str, str, str]]:
    """(target, measured, met) for issue 12's items 1 and 4; the one against
    the IRC server's p99 from issue 12's figure only if ``irc_measured`` is
    false (else bench/peer.py gives it, measured in the same run)."""
    ours, aes_new = seal_costs(costs_us)
    rows = []
    for r in sorted((r for r in runs if r.kind == chat and r.receivers >= 100), key=lambda r: r.receivers):
        rows.append(
            (
                f"lockstep, {r.receivers:,} receivers: server CPU per delivery ≤ {SEAL_TARGET} × one of our seals",
                f"{_f(r.cpu_us)} µs = {_f(r.cpu_us / ours, 2)} × {_f(ours)} µs",
                _verdict(r.cpu_us <= SEAL_TARGET * ours),
            )
        )
        rows.append(
            (
                f"lockstep, {r.receivers:,} receivers: server CPU per delivery ≤ {AES_NEW_TARGET} × one AES.new seal",
                f"{_f(r.cpu_us)} µs = {_f(r.cpu_us / aes_new, 2)} × {_f(aes_new)} µs",
                _verdict(r.cpu_us <= AES_NEW_TARGET * aes_new),
            )
        )
    around_500 = [r for r in runs if r.kind == chat and 400 <= r.receivers <= 600 and not irc_measured]
    for r in around_500:
        floor = next((f for f in runs if f.kind == plain and f.receivers == r.receivers), None)
        against = (
            f"; the plaintext floor {_f(floor.latency(0.99))} ms ({_f(r.latency(0.99) / floor.latency(0.99), 2)} ×)"
            if floor
            else ""
        )
        rows.append(
            (
                f"lockstep p99 to the last of {r.receivers} receivers ≤ the IRC server's "
                f"({IRC_P99_500_MS:g} ms in the issue's run, not run here)",
                f"{_f(r.latency(0.99))} ms{against}",
                _verdict(r.latency(0.99) <= IRC_P99_500_MS),
            )
        )
    for (kind, members), grown in sorted(rss_kib.items()):
        if kind == chat and members >= 1000:
            rows.append(
                (
                    f"RSS ≤ {RSS_TARGET_KIB} KiB per idle client ({members:,})",
                    f"{grown / members:.0f} KiB",
                    _verdict(grown / members <= RSS_TARGET_KIB),
                )
            )
    return rows


def section(
    runs: list[LockstepResult], costs_us: dict[str, float], names: dict[str, str], chat: str, plain: str
) -> list[str]:
    """The Lockstep section of docs/benchmarks.md (its title included)."""
    if not runs:
        return ["## Lockstep", "", "not measured in this run", ""]
    ours, aes_new = seal_costs(costs_us)
    lines = [
        "## Lockstep",
        "",
        "A room at human pace: one sender, one message in flight; the next is sent only once every "
        "receiver has decrypted the one before. Nothing batches: each delivery is a record of its "
        "own, sealed and sent by a server that was idle. *Server CPU µs / delivery* is the server "
        "process's CPU time (user and system, from /proc) over the run, per delivery; it includes "
        "the kernel's loopback TCP work for both ends' sockets. Latency runs from just before the "
        "sender seals to when the last receiver has decrypted it, so it includes the load "
        "generator, which decrypts for every receiver in one thread. *Context switches* are all "
        "the server's threads', per message. The seals beside it were measured in this run "
        f"(bench/micro.py): one of ours {_f(ours)} µs, one `AES.new(key, MODE_GCM, nonce)` seal "
        f"{_f(aes_new)} µs.",
        "",
        *table(runs, costs_us, names),
        "",
        *_where_the_time_goes(runs, ours, chat),
    ]
    return lines


#: Measured once, not in this run: the server of before server/sender.py (a
#: writer thread per client, commit beaf098, with crypto/aes_gcm.py's cheaper
#: seal already), lockstep at 100 receivers, 600 messages, on the 2-core
#: machine the bench runs on: CPU time and context switches from /proc, GIL
#: time by py-spy.
BEFORE = (
    "Before (a writer thread per client, measured in separate runs with py-spy `--gil` and "
    "/proc, not in this one): at 100 receivers 54 to 82 µs of server CPU per delivery, about "
    "half of it in the kernel, and about 4 context switches per delivery (390 a message); at 500, "
    "137 µs and 8.6 (4,300 a message). The reader woke each receiver's writer in turn: "
    "`Condition.notify` inside `Outbox.put` was half the time any thread held the GIL, and each "
    "writer then took the GIL and the seal lock, and gave the GIL back around every call into "
    "pycryptodomex. In the same runs the server of server/sender.py used 35 and 32 µs, a sixth of it in "
    "the kernel, with 5 and 12 context switches a message."
)


def _where_the_time_goes(runs: list[LockstepResult], ours: float, chat: str) -> list[str]:
    at_100 = next((r for r in runs if r.kind == chat and 90 <= r.receivers <= 110 and r.deliveries), None)
    if at_100 is None:
        return []
    kernel = 1e6 * at_100.server_system / at_100.deliveries
    return [
        f"- **Where a delivery's time goes.** {BEFORE}",
        f"  After (this run, {at_100.receivers} receivers): {_f(at_100.cpu_us)} µs per delivery, "
        f"{_f(kernel)} of them in the kernel: one non-blocking `send` per delivery, which on loopback "
        "also does the receiving end's TCP work. "
        f"{_f(at_100.switches / at_100.messages if at_100.messages else math.nan)} context switches a "
        "message: the reader wakes, and wakes the one sender thread once (server/sender.py), which then "
        "seals and sends to every receiver without a switch or a lock held. By py-spy `--gil` "
        "(measured once), the sender holds the GIL about 85% of the time the process does: the seal "
        "about half of that (crypto/aes_gcm.py: the ECB keystream, GHASH and the XOR), the protocol's "
        "`send_batch` checks and framing a tenth, the outbox and the sender's loop a sixth, the "
        "Python side of `send` a tenth; the reader (receive, open, `Room.distribute` into every "
        f"outbox) the rest. One of our seals costs {_f(ours)} µs in this run, so the seal is about "
        "what the target allows, and the kernel's send, Python's framing and the outbox are the "
        "rest: a delivery cannot fall to 1.3 seals while each is a system call and some Python.",
        "- **Why one sender thread, not the readers.** The hand-off is now paid once a message, "
        "not once a delivery: at 100 receivers, one wake-up for 100 records. Sealing in the reader "
        "would save only that wake-up (a few context switches a message) and would need a lock on "
        "each connection's sending half, with readers sealing at once trading the GIL again.",
        "",
    ]
