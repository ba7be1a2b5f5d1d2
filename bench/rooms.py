"""Rooms under load (issue 21, part 4): ``python -m bench.rooms``.

Against one chat server process, with one load generator, in one run:

- **joins**: ``people`` clients connect (not measured), then every one of
  them asks at once to join ``rooms_each`` of ``rooms`` rooms (1,000 people,
  5 rooms each of 100: 50 members a room): until every ``Joined`` is in,
  joins a second, the server's CPU per join, how long a join waited, and
  how many join lines the members were shown;
- **fan-out in one room of many while other rooms chat**: ``big`` + 1 of
  them join ``#big``; its last member sends, in lockstep (one message in
  flight: the next once every receiver has the one before) and in a burst
  (flat out, ``WINDOW`` in flight). Each is measured *alone* and *with*
  ``chatting`` of the other rooms saying a line every ``pace`` seconds
  each, and the chatting measured on its own too, in ``rounds`` rounds
  whose order turns round each time (as bench/store.py). The target: the
  server's CPU per delivery with the other rooms chatting within 10% of
  the one room's alone, judged on the median of the rounds' ratios.

Server CPU is summed over the server's threads (/proc/PID/task/*/schedstat,
as bench/store.py's ``process_cpu``), over each run's window.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.loadgen import BenchClient, BenchError, LoadGen
from bench.scenarios import JOIN_CONCURRENCY, own_cpu_seconds, percentile
from bench.store import median_spread, process_cpu
from socket_chat import protocol

__all__ = ["FULL_ROOMS", "QUICK_ROOMS", "RoomsPlan", "RoomsResults", "markdown", "measure", "targets", "as_json"]

BIG = "#big"
WINDOW = 64  # burst messages in flight at once (below the server's outbox limit)
WITHIN = 0.10  # the target: CPU per delivery with the other rooms chatting, at most this much more
MODES = ("alone", "with")  # the first round's order; the next turns it round


@dataclass(frozen=True)
class RoomsPlan:
    people: int  # clients connected, each in the lobby
    rooms: int  # rooms they join
    rooms_each: int  # rooms each of them joins, at once
    big: int  # receivers in the big room (its sender aside)
    chatting: int  # of the rooms, how many chat during the fan-out
    pace: float  # seconds between two lines of one chatting room
    lockstep_messages: int  # per run
    burst_messages: int  # per run
    chat_seconds: float  # per run of the chatting alone
    rounds: int
    timeout: float  # per phase


FULL_ROOMS = RoomsPlan(
    people=1000,
    rooms=100,
    rooms_each=5,
    big=500,
    chatting=50,
    pace=1.0,
    lockstep_messages=60,
    burst_messages=200,
    chat_seconds=2.0,
    rounds=8,
    timeout=120.0,
)
QUICK_ROOMS = RoomsPlan(
    people=40,
    rooms=6,
    rooms_each=2,
    big=20,
    chatting=3,
    pace=0.2,
    lockstep_messages=5,
    burst_messages=10,
    chat_seconds=0.5,
    rounds=2,
    timeout=30.0,
)


@dataclass
class JoinRun:
    people: int
    rooms: int
    joins: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    notices: int = 0  # join lines the members were shown
    waits_ms: list[float] = field(default_factory=list, repr=False)  # from asking to Joined

    @property
    def per_second(self) -> float:
        return self.joins / self.seconds if self.seconds else math.nan

    @property
    def cpu_ms_each(self) -> float:
        return 1000 * self.server_cpu / self.joins if self.joins else math.nan


@dataclass
class FanRun:
    """One run: the big room's ``kind`` (lockstep or burst) ``alone`` or
    ``with`` the other rooms chatting, or the chatting on its own (kind
    ``chatting``)."""

    kind: str
    mode: str
    big_deliveries: int = 0
    chat_deliveries: int = 0  # of the other rooms' lines
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # lockstep: to the last receiver

    @property
    def deliveries(self) -> int:
        return self.big_deliveries + self.chat_deliveries

    @property
    def cpu_us(self) -> float:
        """Server CPU µs per delivery, every room's deliveries counted."""
        return 1e6 * self.server_cpu / self.deliveries if self.deliveries else math.nan


@dataclass
class RoomsResults:
    joins: JoinRun | None = None
    runs: list[FanRun] = field(default_factory=list)
    big: int = 0
    chatting: int = 0
    chat_members: int = 0  # in each chatting room
    chat_lines_per_second: float = 0.0

    def of(self, kind: str, mode: str) -> list[FanRun]:
        return [run for run in self.runs if run.kind == kind and run.mode == mode]

    def cpu_us(self, kind: str, mode: str) -> float:
        runs = self.of(kind, mode)
        deliveries = sum(run.deliveries for run in runs)
        return 1e6 * sum(run.server_cpu for run in runs) / deliveries if deliveries else math.nan

    def rounds(self, kind: str) -> list[tuple[FanRun, FanRun, FanRun]]:
        """(with, alone, the chatting alone) of each round; a round cut short is left out."""
        return list(zip(self.of(kind, "with"), self.of(kind, "alone"), self.of("chatting", "alone"), strict=False))

    def round_ratios(self, kind: str) -> list[float]:
        """Each round's CPU with the others chatting ÷ what the same
        deliveries cost apart (``apart_cpu``)."""
        return [w.server_cpu / apart_cpu(w, a, c) for w, a, c in self.rounds(kind) if apart_cpu(w, a, c) > 0]

    def lost(self) -> int:
        return sum(run.lost + run.duplicated for run in self.runs)

    def big_per_second(self, kind: str, mode: str) -> float:
        """The big room's deliveries a second over every run of ``kind`` and ``mode``."""
        runs = self.of(kind, mode)
        seconds = sum(run.seconds for run in runs)
        return sum(run.big_deliveries for run in runs) / seconds if seconds else math.nan


def apart_cpu(run: FanRun, alone: FanRun, chatting: FanRun) -> float:
    """What ``run``'s deliveries would cost the server apart: the big
    room's at its CPU per delivery alone, the chatting rooms' at theirs when
    they chat alone, both in the same round. (A line to a room of 50 costs
    more a delivery than one to 500: reading, opening and handing it out is
    shared by fewer; so the mix of rooms is weighed as it was.)"""
    big = run.big_deliveries * alone.server_cpu / alone.deliveries if alone.deliveries else math.nan
    chat = run.chat_deliveries * chatting.server_cpu / chatting.deliveries if chatting.deliveries else 0.0
    return big + chat


# --- who is where ---------------------------------------------------------------------------


def room_name(index: int) -> str:
    return f"#room{index}"


def rooms_of(person: int, plan: RoomsPlan) -> list[int]:
    """The rooms person ``person`` joins: spread so that each room gets
    ``people * rooms_each / rooms`` members; person ``r`` is in room ``r``."""
    step = plan.rooms // plan.rooms_each
    return sorted({(person + k * step) % plan.rooms for k in range(plan.rooms_each)})


def members_of(room: int, plan: RoomsPlan) -> int:
    return sum(room in rooms_of(person, plan) for person in range(plan.people))


# --- the traffic, counted -------------------------------------------------------------------


class Traffic:
    """Every room message the clients are given, counted: the big room's by
    its sequence number, the chatting rooms' by (room, number)."""

    def __init__(self, big_receivers: int, chat_receivers: dict[str, int]) -> None:
        self.big_receivers, self.chat_receivers = big_receivers, chat_receivers
        self.big: Counter[int] = Counter()  # deliveries of each big-room message
        self.big_seen: set[tuple[str, int]] = set()
        self.chat: Counter[tuple[str, int]] = Counter()
        self.chat_sent: list[tuple[str, int]] = []
        self.duplicated = 0
        self.latencies_ms: list[float] = []
        self.joined: Counter[str] = Counter()  # Joined given, by client
        self.notices = 0

    def on_room(self, client: BenchClient, event, now: float) -> None:
        if isinstance(event, protocol.RoomMessage):
            parts = event.text.split(" ")
            if event.room == BIG:
                self._big_line(client.name, int(parts[0]), int(parts[1]), now)
            else:
                self.chat[(event.room, int(parts[0]))] += 1
        elif isinstance(event, protocol.Joined):
            self.joined[client.name] += 1
        elif isinstance(event, protocol.RoomNotice):
            self.notices += 1

    def _big_line(self, name: str, seq: int, sent_ns: int, now: float) -> None:
        if (name, seq) in self.big_seen:
            self.duplicated += 1
            return
        self.big_seen.add((name, seq))
        self.big[seq] += 1
        if self.big[seq] == self.big_receivers:
            self.latencies_ms.append((now - sent_ns / 1e9) * 1000)

    def big_done(self, seq: int) -> bool:
        return self.big[seq] >= self.big_receivers

    def chat_done(self) -> bool:
        return all(self.chat[key] >= self.chat_receivers[key[0]] for key in self.chat_sent)

    def reset(self) -> None:
        self.big.clear()
        self.big_seen.clear()
        self.chat.clear()
        self.chat_sent.clear()
        self.duplicated = 0
        self.latencies_ms = []


class Chatter:
    """The chatting rooms: each one's speaker says a line every ``pace``
    seconds, the rooms spread evenly over it."""

    def __init__(self, gen: LoadGen, traffic: Traffic, speakers: list[tuple[BenchClient, str]], pace: float) -> None:
        self.gen, self.traffic, self.speakers, self.pace = gen, traffic, speakers, pace
        begin = time.perf_counter()
        self.due = [begin + index * pace / len(speakers) for index in range(len(speakers))]
        self.said = 0

    def say_what_is_due(self) -> float:
        """Send the lines due; seconds until the next."""
        now = time.perf_counter()
        for index, (speaker, room) in enumerate(self.speakers):
            if self.due[index] <= now:
                self.said += 1
                self.traffic.chat_sent.append((room, self.said))
                say(self.gen, speaker, room, f"{self.said} chat")
                self.due[index] += self.pace
        return max(0.0, min(self.due) - time.perf_counter())


def say(gen: LoadGen, client: BenchClient, room: str, text: str) -> None:
    gen.send(client, protocol.RoomLine(room, "chat", text))


def pump_until(gen: LoadGen, done, deadline: float, what: str, chatter: Chatter | None) -> None:
    """Pump until ``done()``, the chatting rooms saying their lines meanwhile."""
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out: {what}")
        pump_once(gen, chatter)


def pump_once(gen: LoadGen, chatter: Chatter | None) -> None:
    """One round of the load generator, the chatting rooms' lines due said first."""
    gen.pump(min(0.05, chatter.say_what_is_due()) if chatter else 0.05)


# --- the measurements -----------------------------------------------------------------------


def connect_all(gen: LoadGen, people: int, deadline: float) -> list[BenchClient]:
    """``people`` clients, in the lobby, taking part in rooms."""
    clients = []
    for index in range(people):
        clients.append(gen.connect(f"p{index}", rooms=True))
        pump_until(
            gen,
            lambda: sum(c.ready_at is None for c in clients) < JOIN_CONCURRENCY,
            deadline,
            "connecting",
            None,
        )
    pump_until(gen, lambda: all(c.ready_at is not None for c in clients), deadline, "everyone connected", None)
    return clients


def join(gen: LoadGen, client: BenchClient, room: str) -> None:
    gen.send(client, protocol.RoomRequest("join", room, ""))


def measure_joins(plan: RoomsPlan, gen: LoadGen, pid: int, clients: list[BenchClient], traffic: Traffic) -> JoinRun:
    """Every client asks for its rooms at once."""
    run = JoinRun(len(clients), plan.rooms)
    asked_at: dict[str, float] = {}
    waits: dict[str, list[float]] = {c.name: [] for c in clients}

    def on_room(client: BenchClient, event, now: float) -> None:
        traffic.on_room(client, event, now)
        if isinstance(event, protocol.Joined):
            waits[client.name].append(1000 * (now - asked_at[client.name]))

    gen.on_room = on_room
    wanted = {c.name: len(rooms_of(index, plan)) for index, c in enumerate(clients)}
    cpu = process_cpu(pid)
    begin = time.perf_counter()
    for index, client in enumerate(clients):
        asked_at[client.name] = time.perf_counter()
        for room in rooms_of(index, plan):
            join(gen, client, room_name(room))
    pump_until(
        gen,
        lambda: all(traffic.joined[name] >= count for name, count in wanted.items()),
        time.monotonic() + plan.timeout,
        "every join",
        None,
    )
    run.seconds = time.perf_counter() - begin
    gen.settle(0.3, time.monotonic() + 5)  # the last join lines
    run.server_cpu = process_cpu(pid) - cpu
    run.joins = sum(wanted.values())
    run.notices = traffic.notices
    run.waits_ms = [ms for each in waits.values() for ms in each]
    gen.on_room = traffic.on_room
    return run


def measure_fan(
    kind: str,
    mode: str,
    plan: RoomsPlan,
    gen: LoadGen,
    pid: int,
    sender: BenchClient,
    chatter: Chatter | None,
    traffic: Traffic,
) -> FanRun:
    """One run: the big room's lockstep or burst, the other rooms chatting
    if ``chatter``; or (kind ``chatting``) the chatting alone for
    ``plan.chat_seconds``."""
    traffic.reset()
    run = FanRun(kind, mode)
    deadline = time.monotonic() + plan.timeout
    cpu, own = process_cpu(pid), own_cpu_seconds()
    begin = time.perf_counter()
    if kind == "lockstep":
        for seq in range(plan.lockstep_messages):
            say(gen, sender, BIG, f"{seq} {time.perf_counter_ns()}")
            pump_until(gen, functools.partial(traffic.big_done, seq), deadline, f"lockstep message {seq}", chatter)
    elif kind == "burst":
        burst(plan, gen, sender, chatter, traffic, deadline)
    else:
        until = time.monotonic() + plan.chat_seconds
        pump_until(gen, lambda: time.monotonic() >= until, deadline, "the chatting", chatter)
    pump_until(gen, traffic.chat_done, deadline, "the chatting rooms' last lines", None)
    run.seconds = time.perf_counter() - begin
    run.server_cpu = process_cpu(pid) - cpu
    run.loadgen_cpu = own_cpu_seconds() - own
    run.big_deliveries = sum(traffic.big.values())
    run.chat_deliveries = sum(traffic.chat.values())
    expected_big = traffic.big_receivers * (plan.lockstep_messages if kind == "lockstep" else plan.burst_messages)
    expected_chat = sum(traffic.chat_receivers[room] for room, _ in traffic.chat_sent)
    expected = (expected_big if kind != "chatting" else 0) + expected_chat
    run.duplicated = traffic.duplicated + sum(
        max(0, n - traffic.chat_receivers[key[0]]) for key, n in traffic.chat.items()
    )
    run.lost = expected - (run.deliveries - run.duplicated)
    run.latencies_ms = traffic.latencies_ms
    if gen.errors:
        raise BenchError(f"{len(gen.errors)} client errors, first: {gen.errors[0]}")
    return run


def burst(
    plan: RoomsPlan, gen: LoadGen, sender: BenchClient, chatter: Chatter | None, traffic: Traffic, deadline: float
) -> None:
    """The big room's sender sends flat out, ``WINDOW`` messages at most
    not yet delivered to every receiver (a room delivers in order)."""
    sent = delivered = 0
    while delivered < plan.burst_messages:
        while delivered < sent and traffic.big_done(delivered):
            delivered += 1
        while sent < plan.burst_messages and sent - delivered < WINDOW:
            say(gen, sender, BIG, f"{sent} {time.perf_counter_ns()}")
            sent += 1
        if time.monotonic() > deadline:
            raise BenchError(f"timed out: the burst, {delivered} of {plan.burst_messages} delivered")
        pump_once(gen, chatter)


def fill_big_room(plan: RoomsPlan, gen: LoadGen, members: list[BenchClient], traffic: Traffic) -> None:
    """``members`` join the big room (its history and join lines settled)."""
    wanted = {c.name: traffic.joined[c.name] + 1 for c in members}
    for client in members:
        join(gen, client, BIG)
    deadline = time.monotonic() + plan.timeout
    pump_until(gen, lambda: all(traffic.joined[n] >= count for n, count in wanted.items()), deadline, f"{BIG}", None)
    gen.settle(0.5, deadline)


def measure(plan: RoomsPlan, results: RoomsResults, start_server, progress=print) -> None:
    """Both parts on one server; ``start_server()`` starts a chat server
    process (bench.runner's ``ServerProcess`` for the kind ``chat``)."""
    with start_server() as server:
        pid = server.proc.pid
        gen = LoadGen(server.address)
        try:
            progress(f"  {plan.people:,} people connect")
            clients = connect_all(gen, plan.people, time.monotonic() + plan.timeout + plan.people * 0.05)
            chat_members = {room_name(r): members_of(r, plan) for r in range(plan.chatting)}
            traffic = Traffic(plan.big, {room: members - 1 for room, members in chat_members.items()})
            gen.on_room = traffic.on_room
            progress(f"  they join {plan.rooms_each} rooms each of {plan.rooms}, at once")
            results.joins = measure_joins(plan, gen, pid, clients, traffic)
            fill_big_room(plan, gen, clients[: plan.big + 1], traffic)
            results.big, results.chatting = plan.big, plan.chatting
            results.chat_members = round(sum(chat_members.values()) / len(chat_members))
            results.chat_lines_per_second = plan.chatting / plan.pace
            speakers = [(clients[r], room_name(r)) for r in range(plan.chatting)]
            sender = clients[plan.big]
            for index in range(plan.rounds):
                order = MODES if index % 2 == 0 else MODES[::-1]
                progress(f"  round {index + 1} of {plan.rounds}: {order[0]}, then {order[1]}")
                for kind in ("lockstep", "burst"):
                    for mode in order:
                        chatter = Chatter(gen, traffic, speakers, plan.pace) if mode == "with" else None
                        results.runs.append(measure_fan(kind, mode, plan, gen, pid, sender, chatter, traffic))
                chatter = Chatter(gen, traffic, speakers, plan.pace)
                results.runs.append(measure_fan("chatting", "alone", plan, gen, pid, sender, chatter, traffic))
        finally:
            gen.close_all()


# --- the report -----------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _median(ratios: list[float]) -> tuple[float, str]:
    median, lower, upper, least, greatest = median_spread(ratios)
    return median, f"{_f(median, 3)} ({_f(lower, 2)}–{_f(upper, 2)}; {_f(least, 2)}–{_f(greatest, 2)})"


KINDS = (("lockstep", "lockstep (one message in flight)"), ("burst", f"burst ({WINDOW} in flight)"))


def rows(results: RoomsResults) -> list[str]:
    if not results.runs:
        return ["Not measured in this run (see the errors, if any)."]
    lines = [
        f"| {results.big} receivers in one room | alone: server CPU µs per delivery | with {results.chatting} "
        "other rooms chatting (every delivery) | with ÷ alone | with ÷ apart, a round: median (middle half; "
        "all) | big-room deliveries/s alone / with | target (on the median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, name in KINDS:
        alone, with_ = results.cpu_us(kind, "alone"), results.cpu_us(kind, "with")
        median, spread = _median(results.round_ratios(kind))
        met = "met" if median <= 1 + WITHIN else "MISSED"
        rates = [results.big_per_second(kind, mode) for mode in MODES]
        lines.append(
            f"| {name} | {_f(alone)} | {_f(with_)} | {_f(with_ / alone, 3)} | {spread} | "
            f"{_f(rates[0], 0)} / {_f(rates[1], 0)} | ≤ {1 + WITHIN:.2f} ({met}) |"
        )
    chatting = results.of("chatting", "alone")
    lockstep = (
        [r.latencies_ms for r in results.of("lockstep", "alone")],
        [r.latencies_ms for r in results.of("lockstep", "with")],
    )
    p99 = [percentile([ms for run in runs for ms in run], 0.99) for runs in lockstep]
    lines += [
        "",
        f"The chatting rooms: {results.chatting} rooms of {results.chat_members}, each saying a line every "
        f"{1 / (results.chat_lines_per_second / results.chatting):g} s ({results.chat_lines_per_second:g} lines a "
        f"second in all); on their own, {_f(results.cpu_us('chatting', 'alone'))} µs of server CPU per delivery "
        f"({sum(r.chat_deliveries for r in chatting):,} deliveries). Lockstep p99 to the last of the "
        f"{results.big}: {_f(p99[0], 2)} ms alone, {_f(p99[1], 2)} ms with the chatting. Lost or duplicated "
        f"deliveries in these runs: {results.lost()}.",
    ]
    joins = results.joins
    if joins is not None:
        shown = joins.notices / joins.joins if joins.joins else math.nan
        lines += [
            "",
            "| joins | people | rooms | seconds | joins/s | server CPU ms per join | wait p50 ms | p99 ms | "
            "join lines shown, per join |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {joins.joins:,} at once | {joins.people:,} | {joins.rooms} | {_f(joins.seconds, 2)} | "
            f"{_f(joins.per_second, 0)} | {_f(joins.cpu_ms_each, 2)} | {_f(percentile(joins.waits_ms, 0.5))} | "
            f"{_f(percentile(joins.waits_ms, 0.99))} | {_f(shown)} |",
        ]
    return lines


def markdown(results: RoomsResults) -> list[str]:
    """The report's section, its title included."""
    plan = FULL_ROOMS
    return [
        "## Rooms",
        "",
        f"One chat server; {plan.people:,} clients of one load generator connect, then all ask at once to join "
        f"{plan.rooms_each} rooms each of {plan.rooms} (their members told of each join), then {plan.big + 1} of "
        f"them join `{BIG}` (full run; bench/rooms.py). Its last member sends to the other {plan.big}, in "
        "lockstep and in a burst, each run once *alone* and once *with* "
        f"{plan.chatting} of the other rooms chatting, and the chatting run on its own, in "
        f"{plan.rounds} rounds whose order turns round each time (as the store's). *Server CPU per "
        "delivery* is the server's CPU over a run (every thread's, from /proc) over every delivery in it, "
        "the chatting rooms' included. A line to a room of 50 costs more a delivery than one to 500 "
        "(reading, opening and handing it out is shared by fewer), so *with ÷ alone* weighs the mix of "
        "rooms as well as what the rooms cost each other. The target is judged on *with ÷ apart*: the "
        "server's CPU in a run with the others chatting over what the same deliveries cost apart, the big "
        "room's at its cost alone and the chatting rooms' at theirs when they chat alone, both in the "
        "same round; above 1, rooms that chat at once cost more than they do apart. Its median over the "
        "rounds is the figure.",
        "",
        *rows(results),
        "",
    ]


def targets(results: RoomsResults) -> list[tuple[str, str, str]]:
    rows_ = []
    for kind, name in KINDS:
        if results.of(kind, "alone") and results.of(kind, "with"):
            median, _ = _median(results.round_ratios(kind))
            rows_.append(
                (
                    f"{name}, one room of {results.big} while {results.chatting} other rooms chat: "
                    f"server CPU per delivery ≤ {1 + WITHIN:.1f} × the room alone",
                    f"{_f(results.cpu_us(kind, 'with'))} / {_f(results.cpu_us(kind, 'alone'))} µs a delivery; "
                    f"against apart, median of the rounds {_f(median, 2)}",
                    "yes" if median <= 1 + WITHIN else "**no**",
                )
            )
    return rows_


def as_json(results: RoomsResults) -> dict:
    joins = results.joins
    return dict(
        cpu_us_per_delivery={f"{k}/{m}": results.cpu_us(k, m) for k, _ in KINDS for m in MODES},
        chatting_cpu_us_per_delivery=results.cpu_us("chatting", "alone"),
        round_ratios={k: results.round_ratios(k) for k, _ in KINDS},
        lost_or_duplicated=results.lost(),
        joins=None
        if joins is None
        else dict(
            joins=joins.joins,
            seconds=joins.seconds,
            server_cpu_ms_each=joins.cpu_ms_each,
            wait_p50_ms=percentile(joins.waits_ms, 0.5),
            wait_p99_ms=percentile(joins.waits_ms, 0.99),
            notices=joins.notices,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    from bench.runner import CHAT, ServerProcess  # not at import: the runner imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.rooms", description="Rooms under load, measured.")
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    args = parser.parse_args(argv)
    results = RoomsResults()
    try:
        measure(
            QUICK_ROOMS if args.quick else FULL_ROOMS,
            results,
            lambda: ServerProcess(CHAT),
            lambda text: print(text, file=sys.stderr, flush=True),
        )
    except (BenchError, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(markdown(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
