"""One address flooding a server with handshakes (issue 13, section 2).

The attacker of the issue connects, reads the hello, and sends a
KeyExchange made of a fixed X25519 share and 384 random bytes for the
wrapped secret: no cryptography of its own, while the server spends an
RSA-3072 decryption on each (the secret does not unwrap, so the server goes
on with a random one and answers ``HI``: PROTOCOL.md section 2). A
connection counts as *forced* when the server answered its KeyExchange.

It runs against a ``chat`` server with the per-address limits off (as
before issue 13) and with server.py's defaults (``--admission``), from
127.0.0.1, a few threads at once, for a fixed time.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from bench.scenarios import cpu_seconds

#: The RFC 7748 section 6.1 test vector's public key: a valid share that
#: costs the attacker nothing to send again and again.
FIXED_SHARE = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
WRAPPED_BYTES = 384  # one RSA-3072 block
THREADS = 8  # connections in flight at once
MOST_CONNECTIONS = 200_000  # per run: bounded in count as well as time
HELLO, REFUSAL = 0x01, 0x03
SETUPS = (("limits off (before)", False), ("server.py's defaults (after)", True))


@dataclass
class FloodRun:
    setup: str
    seconds: float
    connections: int  # attempted
    forced: int  # KeyExchanges the server answered: RSA decryptions
    refused: int  # turned away before the handshake
    server_cpu: float  # CPU seconds the server used during the run

    @property
    def forced_per_second(self) -> float:
        return self.forced / self.seconds

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.seconds


def key_exchange() -> bytes:
    """The attacker's KeyExchange frame: random bytes around a fixed share."""
    body = bytes([0x02, 0x01]) + os.urandom(32) + FIXED_SHARE + struct.pack("!H", WRAPPED_BYTES)
    body += os.urandom(WRAPPED_BYTES)
    return struct.pack("!I", len(body)) + body


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def attack_once(address) -> str:
    """One connection: "forced", "refused" or "failed"."""
    try:
        with socket.create_connection(address, timeout=2.0) as sock:
            (length,) = struct.unpack("!I", recv_exactly(sock, 4))
            kind = recv_exactly(sock, min(length, 65536))[0]
            if kind == REFUSAL:
                return "refused"
            if kind != HELLO:
                return "failed"
            sock.sendall(key_exchange())
            return "forced" if sock.recv(1) else "failed"  # the server's HI record
    except OSError:
        return "failed"


def flood(address, seconds: float, server_pid: int, setup: str) -> FloodRun:
    counts = {"forced": 0, "refused": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker() -> None:
        for _ in range(MOST_CONNECTIONS // THREADS):
            if time.monotonic() >= deadline:
                return
            outcome = attack_once(address)
            with lock:
                counts[outcome] += 1

    cpu_before, begin = cpu_seconds(server_pid), time.monotonic()
    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    elapsed = time.monotonic() - begin
    return FloodRun(
        setup=setup,
        seconds=elapsed,
        connections=sum(counts.values()),
        forced=counts["forced"],
        refused=counts["refused"],
        server_cpu=cpu_seconds(server_pid) - cpu_before,
    )


def table(runs: list[FloodRun]) -> list[str]:
    rows = ["| server | seconds | connections | refused | handshakes forced | forced/s | server CPU (cores) |"]
    rows.append("|---|---|---|---|---|---|---|")
    rows += [
        f"| {r.setup} | {r.seconds:.1f} | {r.connections} | {r.refused} | {r.forced} | "
        f"{r.forced_per_second:.1f} | {r.server_cores:.2f} |"
        for r in runs
    ]
    return rows


def markdown(runs: list[FloodRun]) -> list[str]:
    """The report's section."""
    lines = [
        "## Handshake flood from one address",
        "",
        "One attacker on 127.0.0.1, "
        f"{THREADS} connections at once: each reads the hello and sends a KeyExchange of a fixed "
        "X25519 share and 384 random bytes (no cryptography of its own), and the server spends an "
        "RSA decryption on it. *Forced*: KeyExchanges the server answered. Against a server with "
        "the per-address limits off (before issue 13), then with server.py's defaults "
        "(`--max-per-address 10`, `--handshake-rate 1`, `--max-startups 20:30:100`).",
        "",
        *table(runs),
        "",
    ]
    if len(runs) == 2 and runs[1].forced_per_second:
        before, after = runs
        lines += [
            f"One address forced {before.forced_per_second:.0f} handshakes a second before and "
            f"{after.forced_per_second:.1f} after ({before.forced_per_second / after.forced_per_second:.0f} "
            "times fewer), the rest refused before any cryptography.",
            "",
        ]
    return lines


def as_json(runs: list[FloodRun]) -> list[dict]:
    return [
        dict(
            setup=r.setup,
            seconds=r.seconds,
            connections=r.connections,
            refused=r.refused,
            forced=r.forced,
            forced_per_second=r.forced_per_second,
            server_cpu_s=r.server_cpu,
        )
        for r in runs
    ]
