"""What resumption saves (issue 22, part 1): ``python -m bench.resume``.

Against one chat server process (bench/servers.py, its ticket keys in a
file, as server.py keeps them), with the same load generator as the rest
of the benchmark, in one run:

- **connects**: ``count`` full connections one at a time (TCP connect to
  Welcome), each asking for a ticket, then ``count`` resumed ones with those
  tickets: connect-to-ready p50 and p99 of each, and the server's CPU per
  connection (whole connections: handshake, join, leave), as a ratio;
- **reconnect storm**: ``storm`` clients joined with tickets, the server
  restarted (a new process, the same ticket key file), and all of them
  back as fast as they can (``STORM_IN_FLIGHT`` handshakes at a time): how
  long until everyone is in, and the server's CPU; once offering the
  tickets, once not (a full handshake each), the same run.

The storm is scaled to a few hundred clients (300 by default), not the
issue's 1,000, to keep the run short on a shared two-core machine; the
ratios are what is compared.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import findings
from bench.loadgen import BenchClient, BenchError, LoadGen
from bench.runner import ServerProcess
from bench.scenarios import JOIN_CONCURRENCY, cpu_seconds, own_cpu_seconds, percentile
from bench.servers import TEST_KEY
from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.server.tickets import TicketService

__all__ = ["ConnectRun", "StormRun", "measure", "main"]


@dataclass
class ConnectRun:
    """``count`` connections one at a time, full or resumed."""

    resumed: bool
    count: int
    server_cpu: float  # seconds, for all of them
    times_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def cpu_ms_each(self) -> float:
        return 1000 * self.server_cpu / self.count if self.count else math.nan

    def p(self, fraction: float) -> float:
        return percentile(self.times_ms, fraction)


@dataclass
class StormRun:
    """``clients`` all reconnecting at once to a restarted server."""

    with_tickets: bool
    clients: int
    seconds: float  # until the last is in
    server_cpu: float
    resumed: int  # how many resumed (the rest did a full handshake)
    loadgen_cpu: float = 0.0  # the load generator's CPU meanwhile (it plays every client)


def _connect_one(
    gen: LoadGen, name: str, ticket: protocol.ClientTicket | None, deadline: float
) -> tuple[BenchClient, float]:
    client = gen.connect(name, ticket=ticket, want_ticket=True)
    gen.run_until(lambda: client.ready_at is not None and client.new_ticket is not None, deadline, f"{name} ready")
    assert client.ready_at is not None
    return client, 1000 * (client.ready_at - client.started)


def measure_connects(server: ServerProcess, count: int, timeout: float) -> tuple[ConnectRun, ConnectRun]:
    """Full connections, then resumed ones with the tickets they got."""
    gen = LoadGen(server.address)
    deadline = time.monotonic() + timeout
    held: list[protocol.ClientTicket] = []
    runs = []
    try:
        for resumed in (False, True):
            run = ConnectRun(resumed, count, 0.0)
            cpu = cpu_seconds(server.proc.pid)
            for index in range(count):
                client, ms = _connect_one(gen, f"c{int(resumed)}-{index}", held[index] if resumed else None, deadline)
                if client.resumed != resumed:
                    raise BenchError(f"connection {index}: resumed is {client.resumed}, expected {resumed}")
                assert client.new_ticket is not None
                if resumed:
                    held[index] = client.new_ticket
                else:
                    held.append(client.new_ticket)
                run.times_ms.append(ms)
                gen.close(client)
            run.server_cpu = cpu_seconds(server.proc.pid) - cpu
            runs.append(run)
    finally:
        gen.close_all()
    return runs[0], runs[1]


#: Connections of the storm in their handshake at once: all of them would
#: overflow the listen backlog (128) and wait out TCP's 1 s SYN retry, which
#: would measure the kernel, not the server (real clients spread their
#: returns with jitter too: client/session.py).
STORM_IN_FLIGHT = 64


def _join_all(gen: LoadGen, clients: int, tickets: list[protocol.ClientTicket | None], deadline: float) -> None:
    for index in range(clients):
        while sum(c.ready_at is None for c in gen.clients) >= STORM_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise BenchError("timed out: the storm")
            gen.pump(0.01)
        gen.connect(f"s{index}", ticket=tickets[index], want_ticket=True)
    gen.run_until(lambda: all(c.ready_at is not None for c in gen.clients), deadline, "everyone back")


def measure_storm(ticket_keys: Path, clients: int, with_tickets: bool, timeout: float) -> StormRun:
    """``clients`` join (in batches, as a room fills), the server restarts,
    and all come back at once, offering their tickets if ``with_tickets``."""
    deadline = time.monotonic() + timeout
    with ServerProcess("chat", "--ticket-keys", str(ticket_keys), "--handshake-timeout", "120") as before:
        gen = LoadGen(before.address)
        try:
            for index in range(clients):
                gen.connect(f"s{index}", want_ticket=True)
                while sum(c.ready_at is None for c in gen.clients) >= JOIN_CONCURRENCY:
                    if time.monotonic() > deadline:
                        raise BenchError("timed out: joining")
                    gen.pump(0.05)
            gen.run_until(lambda: all(c.new_ticket is not None for c in gen.clients), deadline, "everyone joined")
            tickets = [c.new_ticket if with_tickets else None for c in gen.clients]
        finally:
            gen.close_all()
    with ServerProcess("chat", "--ticket-keys", str(ticket_keys), "--handshake-timeout", "120") as after:
        gen = LoadGen(after.address)
        cpu, own = cpu_seconds(after.proc.pid), own_cpu_seconds()
        begin = time.perf_counter()
        try:
            _join_all(gen, clients, tickets, deadline)
            seconds = time.perf_counter() - begin
            resumed = sum(c.resumed for c in gen.clients)
        finally:
            gen.close_all()
        server_cpu = cpu_seconds(after.proc.pid) - cpu
        return StormRun(with_tickets, clients, seconds, server_cpu, resumed, own_cpu_seconds() - own)


def server_handshake_us(repeat: int = 100) -> tuple[float, float]:
    """The server's side of the handshake alone, in this process, in µs: a
    full one (its RSA unwrap included), and a resumed one (the ticket
    opened, its binder checked, a new ticket sealed); only the server's
    calls are timed, the client's are not."""
    key = crypto_utils.import_private_key(TEST_KEY.read_bytes())
    identity = protocol.ServerIdentity.of(key)
    service = TicketService(identity)
    spent = {False: 0.0, True: 0.0}
    ticket: protocol.ClientTicket | None = None
    for _ in range(repeat):
        for resumed in (False, True):
            client = protocol.ClientConnection(ticket=ticket if resumed else None)
            begin = time.perf_counter()
            server = protocol.ServerConnection(identity)
            hello = server.data_to_send()
            spent[resumed] += time.perf_counter() - begin
            client.receive_data(hello)
            client.next_event()
            client.accept_server_key()
            first = client.data_to_send()
            begin = time.perf_counter()
            server.receive_data(first)
            event = server.next_event()
            if isinstance(event, protocol.ResumptionOffered):
                contents = service.redeem(server, event.ticket)
                assert contents is not None
                server.resume(contents.secret)
            hi = server.data_to_send()
            spent[resumed] += time.perf_counter() - begin
            client.receive_data(hi)
            client.next_event()
            answer = client.data_to_send()
            begin = time.perf_counter()
            server.receive_data(answer)
            server.next_event()
            new = service.issue(server.resumption_secret, None)
            spent[resumed] += time.perf_counter() - begin
            client.receive_data(server.data_to_send())
            client.next_event()
            ticket = protocol.ClientTicket(new.ticket, client.resumption_secret, client.server_fingerprint)
    return 1e6 * spent[False] / repeat, 1e6 * spent[True] / repeat


def measure(count: int = 200, storm: int = 300, timeout: float = 120.0) -> tuple[list[ConnectRun], list[StormRun]]:
    """Both scenarios; the ticket keys in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as folder:
        keys = Path(folder) / "server_key.tickets"
        with ServerProcess("chat", "--ticket-keys", str(keys)) as server:
            full, resumed = measure_connects(server, count, timeout)
        storms = [measure_storm(keys, storm, with_tickets, timeout) for with_tickets in (False, True)]
    return [full, resumed], storms


def table(connects: list[ConnectRun], storms: list[StormRun]) -> str:
    """The figures, as Markdown."""
    full, resumed = connects
    lines = [
        "| connections one at a time | count | connect to ready p50 | p99 | server CPU per connection |",
        "|---|---|---|---|---|",
    ]
    for run in connects:
        lines.append(
            f"| {'resumed (ticket)' if run.resumed else 'full (RSA)'} | {run.count} | {run.p(0.5):.2f} ms"
            f" | {run.p(0.99):.2f} ms | {run.cpu_ms_each:.2f} ms |"
        )
    lines += [
        "",
        f"Resumed / full: server CPU {resumed.cpu_ms_each / full.cpu_ms_each:.2f} x, "
        f"connect-to-ready p50 {resumed.p(0.5) / full.p(0.5):.2f} x.",
        "",
        "| reconnect storm after a restart | clients | resumed | all back in | server CPU | load generator CPU |",
        "|---|---|---|---|---|---|",
    ]
    for storm in storms:
        lines.append(
            f"| {'with tickets' if storm.with_tickets else 'without tickets'} | {storm.clients} | {storm.resumed}"
            f" | {storm.seconds:.2f} s | {storm.server_cpu:.2f} s | {storm.loadgen_cpu:.2f} s |"
        )
    without, with_ = storms
    lines += [
        "",
        f"With tickets: back {without.seconds / with_.seconds:.1f} x sooner, at "
        f"{with_.server_cpu / without.server_cpu:.2f} x the server CPU.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resume", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="connections of each kind, one at a time")
    parser.add_argument("--storm", type=int, default=300, help="clients in the reconnect storm")
    args = parser.parse_args(argv)
    full_us, resumed_us = server_handshake_us()
    print(
        f"The server's side of a handshake, in process: full {full_us:.0f} us, resumed {resumed_us:.0f} us"
        f" ({resumed_us / full_us:.2f} x).\n"
    )
    connects, storms = measure(args.count, args.storm)
    print(table(connects, storms))
    print("\n" + findings.RESUME_FINDING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
