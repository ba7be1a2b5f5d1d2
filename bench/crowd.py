"""The crowd: rooms of thousands, filled, heard and refilled, by a load
generator in several processes.

One ``LoadGen`` process decrypts for every client it holds, so at a few
thousand clients it, not the server, would be what is measured. Here the
clients are dealt to worker processes (``python -m bench.crowd worker``), one
for every ``CLIENTS_PER_PROCESS`` clients and no more than this machine has
CPUs. The parent (``Crowd``) tells every worker the same thing at once, one
JSON line on its stdin, and reads one JSON line back from each; between
commands a worker keeps reading its sockets, as people's clients would.

For each room size of the plan, on a fresh server:

- **fill**: every client joins, ``JOIN_CONCURRENCY`` handshakes in flight in
  all; how long until the last is in, the server's CPU, and how many join
  and leave lines each member was shown meanwhile (chat/presence.py sums them up
  in a busy room; one line per joiner would be N²/2 deliveries in all);
- **heard**: one member says ``messages`` lines, paced; every other member
  must get each once, in order (lost, duplicated, out of order, latency);
- **reconnect storm** (for the room of ``storm`` members): every client
  drops its connection at once and comes straight back, retrying its name
  while the server has not yet seen it leave, as a client would after a
  restart; how long until all are back, and what it cost the server.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import scenarios
from bench.loadgen import BenchClient, BenchError, LoadGen
from socket_chat.protocol import Notice, UserJoined, UserLeft, Username, UsernameRequest, UserParted, Welcome

CLIENTS_PER_PROCESS = 1000
JOIN_CONCURRENCY = 16  # handshakes in flight while a room fills, in all workers together
RETRY_PAUSE = 0.05  # seconds before asking again for a name the server still holds
SERVER_OPTIONS = ("--handshake-timeout", "120")  # a storm's last handshake waits for the others


@dataclass(frozen=True)
class CrowdPlan:
    sizes: tuple[int, ...]  # rooms to fill, each on a fresh server
    storm: int  # the room size whose members all reconnect at once
    messages: int  # lines said to the full room
    pace: float  # seconds between them
    timeout: float  # per phase, plus a share per client


FULL_CROWD = CrowdPlan(sizes=(1000, 5000), storm=1000, messages=10, pace=0.5, timeout=60.0)
NO_CROWD = CrowdPlan(sizes=(), storm=0, messages=0, pace=0.0, timeout=0.0)
QUICK_CROWD = CrowdPlan(sizes=(60,), storm=60, messages=3, pace=0.1, timeout=30.0)


@dataclass
class Fill:
    """One room filled (or refilled, in a storm)."""

    members: int
    processes: int
    seconds: float
    server_cpu: float
    ready_p50_ms: float  # connect-to-ready, over every client of the phase
    ready_p99_ms: float
    presence_lines: int  # join/leave lines all members were shown in the phase
    rss_kib_per_client: float = 0.0

    @property
    def presence_per_member(self) -> float:
        return self.presence_lines / self.members if self.members else 0.0


@dataclass
class Heard:
    """Lines said to a full room: did everyone get each once, in order?"""

    members: int
    messages: int
    expected: int
    received: int
    duplicated: int
    reordered: int
    server_cpu: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def lost(self) -> int:
        return self.expected - (self.received - self.duplicated)


@dataclass
class CrowdResults:
    fills: list[Fill] = field(default_factory=list)
    storms: list[Fill] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)


def processes_for(clients: int) -> int:
    """Worker processes for ``clients``: one per CLIENTS_PER_PROCESS, at most one per CPU."""
    return max(1, min(os.cpu_count() or 1, math.ceil(clients / CLIENTS_PER_PROCESS)))


# --- the parent ---------------------------------------------------------------


class Crowd:
    """``members`` clients of the server at ``address``, dealt to worker
    processes; each command goes to all of them at once."""

    def __init__(self, address, members: int, prefix: str) -> None:
        self.members = members
        count = processes_for(members)
        shares = [members // count + (index < members % count) for index in range(count)]
        self.workers: list[subprocess.Popen] = []
        first = 0
        for share in shares:
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.crowd",
                        "worker",
                        address[0],
                        str(address[1]),
                        prefix,
                        str(first),
                        str(share),
                    ],
                    cwd=Path(__file__).resolve().parent.parent,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            first += share

    def ask(self, command: dict, timeout: float, workers: list[subprocess.Popen] | None = None) -> list[dict]:
        """Send ``command`` to every worker (or to ``workers``) and gather
        their answers; BenchError on a timeout or a worker's error."""
        chosen = self.workers if workers is None else workers
        for worker in chosen:
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(command) + "\n")
            worker.stdin.flush()
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for index, worker in enumerate(chosen):
                assert worker.stdout is not None  # a pipe
                selector.register(worker.stdout, selectors.EVENT_READ, index)
            while len(answers) < len(chosen):
                left = deadline - time.monotonic()
                ready = selector.select(left) if left > 0 else []
                if not ready:
                    raise BenchError(f"crowd: {command['do']} timed out ({len(answers)} of {len(chosen)} answered)")
                for key, _ in ready:
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if not line:
                        raise BenchError(f"crowd: a worker ended during {command['do']}")
                    answers[key.data] = json.loads(line)
                    selector.unregister(key.fileobj)
        replies = [answers[index] for index in range(len(chosen))]
        for reply in replies:
            if reply.get("error"):
                raise BenchError(f"crowd: {reply['error']}")
        return replies

    def close(self) -> None:
        for worker in self.workers:
            try:
                assert worker.stdin is not None
                worker.stdin.close()
                worker.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                worker.kill()
                worker.wait(5)
            if worker.stdout is not None:
                worker.stdout.close()

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def measure(plan: CrowdPlan, results: CrowdResults, server_process, progress, errors: list[str]) -> None:
    """Every phase of the plan; ``server_process(*options)`` starts a chat
    server (runner.ServerProcess for the chat kind). A failed size is
    recorded in ``errors`` and the next goes on."""
    for members in plan.sizes:
        progress(f"  crowd: room of {members:,} ({processes_for(members)} load generator processes)")
        try:
            with server_process(*SERVER_OPTIONS) as server:
                _measure_room(plan, members, server, results, progress)
        except (BenchError, OSError) as exc:
            errors.append(f"crowd, room of {members}: {exc}")
            progress(f"  FAILED: {exc}")


def _measure_room(plan: CrowdPlan, members: int, server, results: CrowdResults, progress) -> None:
    timeout = plan.timeout + 0.05 * members
    pid = server.proc.pid
    idle = server.rss_kib()
    with Crowd(server.address, members, f"c{members}-") as crowd:
        fill = _join(crowd, pid, JOIN_CONCURRENCY, timeout)
        fill.rss_kib_per_client = (server.rss_kib() - idle) / members
        results.fills.append(fill)
        progress(f"    filled in {fill.seconds:.1f} s, {fill.presence_per_member:.1f} join lines per member")
        results.heard.append(_hear(crowd, plan, pid, timeout))
        if members == plan.storm:
            storm = _join(crowd, pid, members, timeout, since_leave=True)
            results.storms.append(storm)
            progress(f"    reconnect storm: all back in {storm.seconds:.1f} s")


def _join(crowd: Crowd, pid: int, concurrency: int, timeout: float, since_leave: bool = False) -> Fill:
    """Everyone (back) in; for a storm, timed from before everyone left."""
    each = max(1, concurrency // len(crowd.workers))
    crowd.ask({"do": "reset"}, timeout)
    cpu_before = scenarios.cpu_seconds(pid)
    begin = time.monotonic()
    if since_leave:
        crowd.ask({"do": "leave"}, timeout)
    joined = crowd.ask({"do": "join", "concurrency": each, "timeout": timeout}, timeout + 10)
    seconds = time.monotonic() - begin
    cpu = scenarios.cpu_seconds(pid) - cpu_before
    # Let the last summaries (one a second at most) arrive before counting them.
    replies = crowd.ask({"do": "settle", "quiet": 1.5, "timeout": timeout}, timeout + 10)
    ready = [ms for reply in joined for ms in reply["ready_ms"]]
    return Fill(
        crowd.members,
        len(crowd.workers),
        seconds,
        cpu,
        scenarios.percentile(ready, 0.5),
        scenarios.percentile(ready, 0.99),
        sum(reply["presence"] for reply in replies),
    )


def _hear(crowd: Crowd, plan: CrowdPlan, pid: int, timeout: float) -> Heard:
    tag = f"h{time.monotonic_ns()}"
    crowd.ask({"do": "reset", "tag": tag}, timeout)
    cpu_before = scenarios.cpu_seconds(pid)
    crowd.ask({"do": "say", "count": plan.messages, "pace": plan.pace, "tag": tag}, timeout, crowd.workers[:1])
    expected = plan.messages * (crowd.members - 1)
    deadline = time.monotonic() + timeout
    while True:
        replies = crowd.ask({"do": "report"}, timeout)
        received = sum(reply["received"] for reply in replies)
        if received >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return Heard(
        crowd.members,
        plan.messages,
        expected,
        received,
        sum(reply["duplicated"] for reply in replies),
        sum(reply["reordered"] for reply in replies),
        scenarios.cpu_seconds(pid) - cpu_before,
        [ms for reply in replies for ms in reply["latencies_ms"]],
    )


# --- a worker process -----------------------------------------------------------


class CrowdGen(LoadGen):
    """A LoadGen whose clients ask again for a name the server still holds
    (its owner's old connection not yet gone), and that counts the join and
    leave lines its clients are shown."""

    def __init__(self, address) -> None:
        super().__init__(address)
        self.presence = 0
        self.retries: list[tuple[float, BenchClient]] = []
        self.newly_ready: list[BenchClient] = []  # welcomed since the last look

    def _handle(self, client: BenchClient, event, now: float) -> None:
        if isinstance(event, UsernameRequest) and client.username_sent:
            self.retries.append((time.monotonic() + RETRY_PAUSE, client))
            return
        if isinstance(event, (UserJoined, UserLeft, UserParted, Notice)):
            self.presence += 1  # the bench's rooms have no other notices
        super()._handle(client, event, now)
        if isinstance(event, Welcome):
            self.newly_ready.append(client)

    def retry_due(self) -> None:
        now = time.monotonic()
        due = [client for when, client in self.retries if when <= now and not client.closed]
        self.retries = [(when, client) for when, client in self.retries if when > now]
        for client in due:
            client.conn.send(Username(client.name))
            self._flush(client)


class Worker:
    """The clients ``prefix+first`` .. ``prefix+first+count-1`` and the
    commands from the parent."""

    def __init__(self, address, prefix: str, first: int, count: int) -> None:
        self.gen = CrowdGen(address)
        self.names = [f"{prefix}{index}" for index in range(first, first + count)]
        self.heard: dict[str, int] = {}  # client name -> next seq expected
        self.received = self.duplicated = self.reordered = 0
        self.latencies_ms: list[float] = []
        self.tag = ""
        self.gen.on_chat = self.on_chat

    def on_chat(self, client: BenchClient, message, now: float) -> None:
        tag, seq_text, sent_ns = message.text.split(" ")
        if tag != self.tag:
            return
        seq = int(seq_text)
        self.received += 1
        self.latencies_ms.append((time.monotonic_ns() - int(sent_ns)) / 1e6)
        expected = self.heard.get(client.name, 0)
        if seq < expected:
            self.duplicated += 1
            return
        if seq > expected:
            self.reordered += 1
        self.heard[client.name] = seq + 1

    def pump(self, timeout: float) -> int:
        read = self.gen.pump(timeout)
        self.gen.retry_due()
        if self.gen.errors:
            raise BenchError(self.gen.errors[0])
        return read

    def do(self, command: dict) -> dict:
        return getattr(self, f"do_{command['do']}")(command)

    def do_reset(self, command: dict) -> dict:
        """Count afresh: the join lines, and the chat lines tagged ``tag``."""
        self.gen.presence = 0
        self.tag, self.heard, self.latencies_ms = command.get("tag", ""), {}, []
        self.received = self.duplicated = self.reordered = 0
        return {}

    def do_join(self, command: dict) -> dict:
        deadline = time.monotonic() + command["timeout"]
        waiting = collections.deque(self.names)
        joining = 0
        ready_ms: list[float] = []
        self.gen.newly_ready.clear()
        while waiting or joining:
            if time.monotonic() > deadline:
                raise BenchError(f"joining timed out: {len(ready_ms)} of {len(self.names)} in")
            while waiting and joining < command["concurrency"]:
                self.gen.connect(waiting.popleft())
                joining += 1
            self.pump(0.02)
            for client in self.gen.newly_ready:  # only those welcomed: not a scan of all
                ready_ms.append((client.ready_at - client.started) * 1000)  # type: ignore[operator]
            joining -= len(self.gen.newly_ready)
            self.gen.newly_ready.clear()
        return {"ready_ms": ready_ms}

    def do_leave(self, command: dict) -> dict:
        for client in self.gen.clients:
            self.gen.close(client)
        self.gen.clients.clear()
        self.gen.retries.clear()
        return {}

    def do_settle(self, command: dict) -> dict:
        last, deadline = time.monotonic(), time.monotonic() + command["timeout"]
        while time.monotonic() - last < command["quiet"] and time.monotonic() < deadline:
            if self.pump(0.05):
                last = time.monotonic()
        return {"presence": self.gen.presence}

    def do_say(self, command: dict) -> dict:
        sender = self.gen.clients[0]
        for seq in range(command["count"]):
            self.gen.send_chat(sender, f"{command['tag']} {seq} {time.monotonic_ns()}")
            until = time.monotonic() + command["pace"]
            while time.monotonic() < until:
                self.pump(max(0.0, until - time.monotonic()))
        return {}

    def do_report(self, command: dict) -> dict:
        return {
            "received": self.received,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "latencies_ms": self.latencies_ms,
        }


def worker_main(host: str, port: int, prefix: str, first: int, count: int) -> int:
    """Serve the parent's commands until its pipe closes, reading the
    clients' sockets in between."""
    worker = Worker((host, port), prefix, first, count)
    stdin = sys.stdin
    with selectors.DefaultSelector() as commands:
        commands.register(stdin, selectors.EVENT_READ)
        while True:
            if commands.select(0):
                line = stdin.readline()
                if not line:
                    break
                command = json.loads(line)
                try:
                    reply = worker.do(command)
                except BenchError as exc:
                    reply = {"error": f"{command['do']}: {exc}"}
                print(json.dumps(reply), flush=True)
            else:
                with contextlib.suppress(BenchError):  # told with the next command's answer
                    worker.pump(0.02)
    worker.gen.close_all()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])))
    sys.exit("usage: python -m bench.crowd worker HOST PORT PREFIX FIRST COUNT (started by the bench)")


# --- the report -----------------------------------------------------------------
# (report.py and tables.py call these; they see only the crowd's own results.)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def fill_rows(results: CrowdResults) -> tuple[tuple[str, ...], list[tuple]]:
    header = (
        "phase",
        "clients",
        "loadgen processes",
        "seconds",
        "joins/s",
        "server CPU s",
        "server CPU ms per join",
        "connect-to-ready p50 ms",
        "p99 ms",
        "join/leave lines per member",
        "RSS KiB per client",
    )
    rows = []
    for phase, fills in (("fill", results.fills), ("reconnect storm", results.storms)):
        for fill in fills:
            rows.append(
                (
                    phase,
                    f"{fill.members:,}",
                    fill.processes,
                    f"{fill.seconds:.1f}",
                    f"{fill.members / fill.seconds:.0f}" if fill.seconds else "",
                    f"{fill.server_cpu:.1f}",
                    f"{1000 * fill.server_cpu / fill.members:.1f}",
                    _ms(fill.ready_p50_ms),
                    _ms(fill.ready_p99_ms),
                    f"{fill.presence_per_member:.1f}",
                    f"{fill.rss_kib_per_client:.0f}" if phase == "fill" else "",
                )
            )
    return header, rows


def heard_rows(results: CrowdResults) -> tuple[tuple[str, ...], list[tuple]]:
    header = (
        "clients",
        "lines said",
        "deliveries",
        "expected",
        "lost",
        "dup",
        "out of order",
        "p50 ms",
        "p99 ms",
        "max ms",
    )
    rows = [
        (
            f"{heard.members:,}",
            heard.messages,
            f"{heard.received:,}",
            f"{heard.expected:,}",
            heard.lost,
            heard.duplicated,
            heard.reordered,
            _ms(scenarios.percentile(heard.latencies_ms, 0.5)),
            _ms(scenarios.percentile(heard.latencies_ms, 0.99)),
            _ms(max(heard.latencies_ms, default=float("nan"))),
        )
        for heard in results.heard
    ]
    return header, rows


def targets(results: CrowdResults, errors: list[str], busy_from: int, interval: float) -> list[tuple[str, str, str]]:
    """(target, measured, met) for issue 12's item 5."""
    failed = [error for error in errors if error.startswith("crowd")]
    rows = []
    for heard in results.heard:
        if heard.members >= 5000:
            bad = heard.lost + heard.duplicated + heard.reordered
            rows.append(
                (
                    f"{heard.members:,} clients on one server, all receiving, nothing lost",
                    f"{heard.received:,} of {heard.expected:,} deliveries, {bad} lost, duplicated or out of order",
                    _yes(bad == 0 and not failed),
                )
            )
    for fill in results.fills:
        # Told one by one below busy_from members, then one line per interval.
        most = busy_from + fill.seconds / interval + 2
        rows.append(
            (
                f"filling a room of {fill.members:,} costs each member at most one join line a second",
                f"{fill.presence_per_member:.1f} lines per member in {fill.seconds:.1f} s "
                f"(one per joiner: {(fill.members - 1) / 2:,.0f} on average)",
                _yes(fill.presence_per_member <= most),
            )
        )
    for storm in results.storms:
        rows.append(
            (
                f"reconnect storm: all {storm.members:,} leave and come back at once",
                f"all back in {storm.seconds:.1f} s, server CPU {storm.server_cpu:.1f} s "
                f"({1000 * storm.server_cpu / storm.members:.1f} ms a client)",
                _yes(not failed),
            )
        )
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def to_json(results: CrowdResults) -> dict:
    def fill(f: Fill) -> dict:
        return dict(
            members=f.members,
            processes=f.processes,
            seconds=f.seconds,
            server_cpu_s=f.server_cpu,
            ready_p50_ms=f.ready_p50_ms,
            ready_p99_ms=f.ready_p99_ms,
            presence_lines=f.presence_lines,
            rss_kib_per_client=f.rss_kib_per_client,
        )

    return dict(
        fills=[fill(f) for f in results.fills],
        storms=[fill(f) for f in results.storms],
        heard=[
            dict(
                members=h.members,
                messages=h.messages,
                expected=h.expected,
                received=h.received,
                lost=h.lost,
                duplicated=h.duplicated,
                reordered=h.reordered,
                server_cpu_s=h.server_cpu,
                p99_ms=scenarios.percentile(h.latencies_ms, 0.99),
            )
            for h in results.heard
        ],
    )
