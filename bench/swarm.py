"""A flood of handshakes from 200 addresses while a person connects
(issue 22, part 2: "A flood pays for what it costs").

The attacker, a child process (``python -m bench.swarm HOST PORT SECONDS``)
so that its CPU is its own, keeps ``IN_FLIGHT`` connections going at full
speed from 127.0.0.2 to 127.0.0.201 in turn: each reads the greeting,
proves work when the server asks (with the client's own solver: the same
hashing a person's client does), and sends a KeyExchange of a fixed X25519
share and 384 random bytes, which costs the server an RSA decryption
(bench/flood.py's attacker, paying). A connection counts as *forced* when
the server answered its KeyExchange.

Meanwhile a person connects from 127.0.0.1 every ``PERSON_EVERY`` seconds
with the real client connection (``ClientConnection``), timed from the TCP
connect to the keys confirmed both ways (``HandshakeComplete``, the puzzle
solved if asked). The server has server.py's defaults (``--admission``),
first with the proof of work off (``--max-work 0``: the random early drop),
then on. Bounded in time (``seconds`` a setup) and in count
(``MOST_CONNECTIONS``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from bench.flood import key_exchange, recv_exactly
from bench.scenarios import cpu_seconds
from socket_chat import protocol
from socket_chat.crypto import work
from socket_chat.protocol import ClientConnection, HandshakeComplete, ServerHello
from socket_chat.protocol.handshake import WORK_REFUSAL, read_puzzle, read_refusal

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 202)]  # 200 of them
IN_FLIGHT = 40  # attacker connections at once: twice --max-startups' START (20)
MOST_CONNECTIONS = 100_000  # per run
PERSON_EVERY = 0.6  # seconds: within the person's address's 1 a second after 10 at once
SOCKET_TIMEOUT = 5.0
HELLO, REFUSAL, PUZZLE = 0x01, 0x03, 0x54
#: (setup, --max-work): server.py's defaults, without the puzzle, then with it.
SETUPS = (("no proof of work (--max-work 0)", "0"), ("proof of work (--max-work 16, the default)", "16"))


@dataclass
class SwarmRun:
    setup: str
    seconds: float
    connections: int  # the attacker's, attempted
    forced: int  # KeyExchanges the server answered: RSA decryptions
    refused: int  # turned away before the handshake
    attacker_cpu: float  # CPU seconds of the attacker's process
    server_cpu: float
    highest_effort: int  # the highest the attacker was asked
    person: list[float] = field(default_factory=list)  # seconds to keys confirmed, each connect
    person_failed: int = 0  # refused or failed

    @property
    def attacker_ms_per_forced(self) -> float:
        return 1000 * self.attacker_cpu / self.forced if self.forced else float("inf")

    @property
    def server_ms_per_forced(self) -> float:
        return 1000 * self.server_cpu / self.forced if self.forced else float("inf")

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.seconds

    @property
    def person_tries(self) -> int:
        return len(self.person) + self.person_failed

    def person_quantile(self, q: float) -> float:
        if not self.person:
            return float("inf")
        ordered = sorted(self.person)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _read_frame(sock: socket.socket) -> bytes:
    length = int.from_bytes(recv_exactly(sock, 4), "big")
    return recv_exactly(sock, min(length, 65536))


def attack_once(address, source: str) -> tuple[str, int]:
    """One connection from ``source``: ("forced" | "refused" | "failed", the
    effort asked, once the puzzle was read, whatever came after)."""
    effort = 0  # kept by the except below: a failure after the puzzle still counts its effort
    try:
        with socket.create_connection(address, timeout=SOCKET_TIMEOUT, source_address=(source, 0)) as sock:
            body, prefix = _read_frame(sock), b""
            if _kind(body) == REFUSAL:
                if read_refusal(body) != WORK_REFUSAL:
                    return "refused", 0
                effort = read_puzzle(_read_frame(sock))
                body = _read_frame(sock)
                prefix = protocol.framing.frame(protocol.handshake.proof(work.solve(work.seed_of(body), effort)))
            if _kind(body) != HELLO:
                return "failed", effort
            sock.sendall(prefix + key_exchange())
            return ("forced" if sock.recv(1) else "failed"), effort  # the server's HI record
    except (OSError, protocol.ProtocolError):
        return "failed", effort


def _kind(body: bytes) -> int | None:
    """A frame's type byte; None for an empty body (no IndexError to end an attacker thread)."""
    return body[0] if body else None


def attack(address, seconds: float) -> dict:
    """``IN_FLIGHT`` threads at full speed for ``seconds``: the counts and this process's CPU."""
    counts: dict[str, float] = {"forced": 0, "refused": 0, "failed": 0, "highest_effort": 0}
    lock, turn = threading.Lock(), iter(range(MOST_CONNECTIONS))
    deadline = time.monotonic() + seconds

    def attacker() -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(turn, None)
            if n is None:
                return
            outcome, effort = attack_once(address, ADDRESSES[n % len(ADDRESSES)])
            with lock:
                counts[outcome] += 1
                counts["highest_effort"] = max(counts["highest_effort"], effort)

    before = os.times()
    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 2 * SOCKET_TIMEOUT)
    after = os.times()
    counts["cpu"] = (after.user - before.user) + (after.system - before.system)
    return counts


def connect_once(address) -> float | None:
    """A person's connection from 127.0.0.1: seconds to keys confirmed, or None."""
    begin = time.perf_counter()
    try:
        with socket.create_connection(address, timeout=SOCKET_TIMEOUT, source_address=("127.0.0.1", 0)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = ClientConnection()
            while True:
                event = conn.next_event()
                sock.sendall(conn.data_to_send())  # the handshake's answers, written as it reads
                if event is protocol.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                elif isinstance(event, ServerHello):
                    conn.accept_server_key()  # solves the puzzle, if asked
                    sock.sendall(conn.data_to_send())
                elif isinstance(event, HandshakeComplete):
                    return time.perf_counter() - begin
                else:
                    return None  # refused, or closed
    except (OSError, protocol.ProtocolError):
        return None


def swarm(address, seconds: float, server_pid: int, setup: str) -> SwarmRun:
    """The attacker's child process and the person, for ``seconds``."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.swarm", address[0], str(address[1]), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    server_before, begin = cpu_seconds(server_pid), time.monotonic()
    person: list[float] = []
    failed = 0
    time.sleep(min(1.0, seconds / 4))  # the flood first, then the person comes
    while time.monotonic() - begin < seconds - PERSON_EVERY:
        took = connect_once(address)
        if took is None:
            failed += 1
        else:
            person.append(took)
        time.sleep(max(0.0, PERSON_EVERY - (took or 0.0)))
    out, _ = child.communicate(timeout=seconds + 4 * SOCKET_TIMEOUT)
    elapsed = time.monotonic() - begin
    counts = json.loads(out.strip().splitlines()[-1])
    return SwarmRun(
        setup=setup,
        seconds=elapsed,
        connections=counts["forced"] + counts["refused"] + counts["failed"],
        forced=counts["forced"],
        refused=counts["refused"],
        attacker_cpu=counts["cpu"],
        server_cpu=cpu_seconds(server_pid) - server_before,
        highest_effort=counts["highest_effort"],
        person=person,
        person_failed=failed,
    )


def table(runs: list[SwarmRun]) -> list[str]:
    rows = [
        "| server | seconds | attacker's connections | refused | forced | attacker CPU / forced | "
        "server CPU / forced | server CPU (cores) | highest effort | person's connects: p50 / p99 (failed) |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    rows += [
        f"| {r.setup} | {r.seconds:.1f} | {r.connections} | {r.refused} | {r.forced} | "
        f"{r.attacker_ms_per_forced:.1f} ms | {r.server_ms_per_forced:.1f} ms | {r.server_cores:.2f} | "
        f"{r.highest_effort or '-'} | {1000 * r.person_quantile(0.5):.0f} / {1000 * r.person_quantile(0.99):.0f} ms "
        f"({r.person_failed} of {len(r.person) + r.person_failed}) |"
        for r in runs
    ]
    return rows


def markdown(runs: list[SwarmRun]) -> list[str]:
    """The report's section."""
    return [
        "## Handshake flood from 200 addresses, and a person",
        "",
        f"An attacker process keeps {IN_FLIGHT} connections going at full speed from 127.0.0.2 to "
        "127.0.0.201 in turn; each proves work when asked (with the client's own solver) and sends "
        "a KeyExchange that costs the server an RSA decryption (*forced*: the server answered it). "
        f"A person connects from 127.0.0.1 every {PERSON_EVERY:g} s, timed to the keys confirmed. "
        "The server has server.py's defaults, first with the proof of work off (`--max-work 0`), "
        "then on. Targets (issue 22): the person's p99 at most 1 s; the attacker's CPU per forced "
        "decryption at least the server's; the server's CPU bounded.",
        "",
        *table(runs),
        "",
    ]


#: Issue 22's "the server's CPU bounded", as a ratio within one run: its
#: CPU under the flood with the puzzle, against without.
SERVER_CPU_BOUND = 0.5


def targets(runs: list[SwarmRun]) -> list[tuple[str, str, str]]:
    """(target, measured, met) for issue 22, part 2, from both setups."""
    if len(runs) != 2:
        return []
    before, after = runs
    yes = {True: "yes", False: "**no**"}
    p99 = after.person_quantile(0.99)
    bound = after.server_cores / before.server_cores if before.server_cores else float("inf")
    return [
        (
            "flood from 200 addresses: the person's connect p99 ≤ 1 s, none refused",
            f"{1000 * p99:.0f} ms, {after.person_failed} of {after.person_tries} refused or failed "
            f"(without the puzzle: {1000 * before.person_quantile(0.99):.0f} ms, {before.person_failed} refused)",
            yes[p99 <= 1.0 and not after.person_failed],
        ),
        (
            "the attacker's CPU per forced RSA decryption ≥ the server's",
            f"{after.attacker_ms_per_forced:.1f} / {after.server_ms_per_forced:.1f} ms "
            f"(without the puzzle: {before.attacker_ms_per_forced:.1f} / {before.server_ms_per_forced:.1f} ms)",
            yes[after.attacker_ms_per_forced >= after.server_ms_per_forced],
        ),
        (
            f"the server's CPU under that flood ≤ {SERVER_CPU_BOUND:g} × without the puzzle",
            f"{after.server_cores:.2f} / {before.server_cores:.2f} cores = {bound:.2f}",
            yes[bound <= SERVER_CPU_BOUND],
        ),
    ]


def as_json(runs: list[SwarmRun]) -> list[dict]:
    return [
        dict(
            setup=r.setup,
            seconds=r.seconds,
            connections=r.connections,
            refused=r.refused,
            forced=r.forced,
            attacker_ms_per_forced=r.attacker_ms_per_forced,
            server_ms_per_forced=r.server_ms_per_forced,
            server_cores=r.server_cores,
            highest_effort=r.highest_effort,
            person_p50_s=r.person_quantile(0.5),
            person_p99_s=r.person_quantile(0.99),
            person_connects=len(r.person),
            person_failed=r.person_failed,
        )
        for r in runs
    ]


def measure(seconds: float) -> list[SwarmRun]:
    """Both setups, each against a server process of its own."""
    from bench import runner  # here: the runner imports this module

    runs = []
    for setup, max_work in SETUPS:
        with runner.ServerProcess(runner.CHAT, "--admission", "--max-work", max_work) as server:
            runs.append(swarm(server.address, seconds, server.proc.pid, setup))
    return runs


def main(argv: list[str]) -> int:
    """``python -m bench.swarm [SECONDS]``: the scenario alone, its table
    printed (10 s a setup by default). ``HOST PORT SECONDS``: the attacker's
    process, which prints its counts as JSON."""
    if len(argv) == 3:
        host, port, seconds = argv
        print(json.dumps(attack((host, int(port)), float(seconds))), flush=True)
        return 0
    print("\n".join(markdown(measure(float(argv[0]) if argv else 10.0))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
