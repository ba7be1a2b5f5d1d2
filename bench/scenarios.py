"""What is measured against a running server: handshakes, fan-out, memory.

Each function takes the server's address (and whether it is the plaintext
floor), runs a ``LoadGen`` within a deadline, and returns plain numbers.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import BenchClient, BenchError, ConnectionFactory, LoadGen

_run_ids = itertools.count()
PACE = 0.1  # seconds between a paced sender's messages: 10 a second
JOIN_CONCURRENCY = 16  # handshakes in flight while a room fills


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, tid: int | None) -> float:
    """One thread's CPU time, from /proc (Linux): NaN without a thread."""
    if tid is None:
        return math.nan
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def rss_kib(pid: int) -> int:
    """A process's resident set size, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError("no VmRSS in /proc")


# --- handshakes --------------------------------------------------------------


@dataclass
class HandshakeResult:
    count: int
    concurrency: int
    p50_ms: float
    p99_ms: float
    per_second: float
    server_cpu_us: float = math.nan  # the server process's CPU per handshake (runner.py measures it)
    #: Its handshake thread's CPU per handshake, the same run: the unwrap, the
    #: X25519 agreement and the key schedule (and their parsing), as loaded
    #: as the rest of the process (runner.py measures it; NaN: no such thread).
    handshake_thread_us: float = math.nan


def measure_handshakes(
    address, plain: bool, count: int, concurrency: int, timeout: float, connection: ConnectionFactory = None
) -> HandshakeResult:
    """Connect-to-ready (TCP connect until Welcome) for ``count`` clients,
    ``concurrency`` at a time; each leaves as soon as it is ready."""
    gen, prefix = LoadGen(address, plain, connection), f"h{next(_run_ids)}-"
    deadline = time.monotonic() + timeout
    times: list[float] = []
    active: list[BenchClient] = []
    started = 0
    begin = time.perf_counter()
    try:
        while len(times) < count:
            if time.monotonic() > deadline:
                raise BenchError(f"handshakes timed out after {len(times)} of {count}")
            while started < count and len(active) < concurrency:
                active.append(gen.connect(f"{prefix}{started}"))
                started += 1
            gen.pump(0.05)
            for client in list(active):
                if client.ready_at is not None:
                    times.append(client.ready_at - client.started)
                    active.remove(client)
                    gen.close(client)
        elapsed = time.perf_counter() - begin
    finally:
        gen.close_all()
    _raise_errors(gen)
    return HandshakeResult(
        count, concurrency, 1000 * percentile(times, 0.5), 1000 * percentile(times, 0.99), count / elapsed
    )


# --- a room of N members -----------------------------------------------------


def fill_room(address, plain: bool, members: int, timeout: float, connection: ConnectionFactory = None) -> LoadGen:
    """``members`` clients joined and the join storm drained."""
    return fill_rooms([address], plain, members, timeout, connection)


def fill_rooms(
    addresses: list, plain: bool, members: int, timeout: float, connection: ConnectionFactory = None
) -> LoadGen:
    """``members`` clients dealt in turn to the servers at ``addresses`` (the
    servers of one cluster), all joined and the join storm drained. Dealt in
    turn, the first *n* clients (the senders) are split as evenly as all."""
    gen = LoadGen(addresses[0], plain, connection)
    grow_room(gen, members, timeout, addresses)
    return gen


def grow_room(gen: LoadGen, members: int, timeout: float, addresses: list | None = None) -> None:
    """More clients into ``gen``'s room until it has ``members``, dealt in
    turn to ``addresses`` (default: the generator's server), all joined and
    the join storm drained."""
    addresses = addresses or [gen.address]
    prefix = f"m{next(_run_ids)}-"
    deadline = time.monotonic() + timeout
    for index in range(len(gen.clients), members):
        gen.connect(f"{prefix}{index}", addresses[index % len(addresses)])
        while sum(c.ready_at is None for c in gen.clients) >= JOIN_CONCURRENCY:
            if time.monotonic() > deadline:
                raise BenchError(f"joining timed out at {index} of {members}")
            gen.pump(0.05)
    gen.run_until(lambda: all(c.ready_at is not None for c in gen.clients), deadline, "members joining")
    gen.settle(0.3, deadline)
    _raise_errors(gen)


# --- fan-out -----------------------------------------------------------------


@dataclass
class FanOutResult:
    members: int
    senders: int
    paced: bool
    messages: int = 0
    deliveries: int = 0
    expected: int = 0
    duplicated: int = 0
    reordered: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server process used during the run
    loadgen_cpu: float = 0.0  # and the load generator
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def lost(self) -> int:
        return self.expected - (self.deliveries - self.duplicated)

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    def latency(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    @property
    def latency_max(self) -> float:
        return max(self.latencies_ms, default=float("nan"))


class _FanOut:
    """One fan-out run over a filled room: sends, then counts every delivery."""

    def __init__(self, gen: LoadGen, senders: int, paced: bool) -> None:
        self.gen = gen
        self.tag = f"r{next(_run_ids)}"
        self.senders = gen.clients[:senders]
        self.sender_index = {c.name: i for i, c in enumerate(self.senders)}
        self.result = FanOutResult(len(gen.clients), senders, paced)
        self.receivers = len(gen.clients) - 1
        self.sent = [0] * senders  # messages sent by each sender
        self.done = [0] * senders  # of those, how many every other member has
        self.remaining: dict[tuple[int, int], int] = {}
        self.next_seq: dict[tuple[str, int], int] = {}  # (receiver, sender) -> seq
        gen.on_chat = self.on_chat

    def send(self, index: int) -> None:
        seq = self.sent[index]
        self.remaining[(index, seq)] = self.receivers
        # The send time travels in the message itself.
        self.gen.send_chat(self.senders[index], f"{self.tag} {seq} {time.perf_counter_ns()}")
        self.sent[index] += 1
        self.result.messages += 1
        self.result.expected += self.receivers

    def on_chat(self, client, message, now: float) -> None:
        tag, seq, sent_ns = message.text.split(" ")
        index = self.sender_index.get(message.sender)
        if tag != self.tag or index is None:
            return  # a late delivery from an earlier run
        seq = int(seq)
        result = self.result
        result.deliveries += 1
        result.latencies_ms.append((now - int(sent_ns) / 1e9) * 1000)
        expected = self.next_seq.get((client.name, index), 0)
        if seq < expected:
            result.duplicated += 1
            return
        if seq > expected:
            result.reordered += 1
        self.next_seq[(client.name, index)] = seq + 1
        self.remaining[(index, seq)] -= 1
        if not self.remaining[(index, seq)]:
            del self.remaining[(index, seq)]
            self.done[index] += 1

    def all_delivered(self) -> bool:
        return not self.remaining


def run_flat_out(gen: LoadGen, senders: int, messages_each: int, window: int, timeout: float) -> FanOutResult:
    """Each sender sends ``messages_each`` as fast as the room takes them:
    at most ``window`` not yet delivered to everyone (below the server's
    outbox limit, so a fast sender never gets a slow reader cut off)."""
    run = _FanOut(gen, senders, paced=False)
    deadline = time.monotonic() + timeout
    begin = time.perf_counter()
    while sum(run.sent) < senders * messages_each or not run.all_delivered():
        if time.monotonic() > deadline:
            break  # what is missing is reported as lost
        for index in range(senders):
            while run.sent[index] < messages_each and run.sent[index] - run.done[index] < window:
                run.send(index)
        gen.pump(0.05)
    run.result.seconds = time.perf_counter() - begin
    return _finish(gen, run)


def run_paced(gen: LoadGen, senders: int, duration: float, timeout: float) -> FanOutResult:
    """Each sender sends 10 messages a second for ``duration`` seconds,
    the senders spread evenly over each tenth of a second."""
    run = _FanOut(gen, senders, paced=True)
    per_sender = max(1, round(duration / PACE))
    begin = time.perf_counter()
    deadline = time.monotonic() + duration + timeout
    due = [begin + index * PACE / senders for index in range(senders)]
    while sum(run.sent) < senders * per_sender or not run.all_delivered():
        if time.monotonic() > deadline:
            break
        now = time.perf_counter()
        for index in range(senders):
            if run.sent[index] < per_sender and due[index] <= now:
                run.send(index)
                due[index] += PACE
        gen.pump(max(0.0, min(due) - time.perf_counter()) if sum(run.sent) < senders * per_sender else 0.05)
    run.result.seconds = time.perf_counter() - begin
    return _finish(gen, run)


def _finish(gen: LoadGen, run: _FanOut) -> FanOutResult:
    gen.on_chat = lambda client, message, now: None
    _raise_errors(gen)
    return run.result


def _raise_errors(gen: LoadGen) -> None:
    if gen.errors:
        raise BenchError(f"{len(gen.errors)} client errors, first: {gen.errors[0]}")


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")
