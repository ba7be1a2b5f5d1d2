"""The store under load (issue 20, section 4): 50 senders and 200
receivers on a real server.py process, ``kill -9`` in the middle of the
load, then a restart on the same file: every line a receiver had before
the last second before the kill is in the history, in the room's order,
none twice. The clients are the benchmark's (bench/loadgen.py: protocol
clients on one selector), so 250 of them cost one thread here.

Slow (about 10 s on this machine, most of it the 250 handshakes twice):
``python -m pytest -m slow tests/test_store_load.py``."""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import closing

import pytest

from bench.loadgen import LoadGen
from socket_chat.server.store import COMMIT_INTERVAL
from tests import procs

SENDERS, RECEIVERS = 50, 200
IN_FLIGHT = 2  # lines a sender may have that the first receiver has not seen yet
LOAD_SECONDS = 2.0  # of load before the lines seen so far are taken as acknowledged
PROMISE = 1.0  # a line delivered is on disk within a second (store.py); the load goes on meanwhile
LOAD_OPTIONS = (
    *("--max-per-address", "0", "--handshake-rate", "0", "--max-startups", "0"),
    *("--rate", "0", "--max-clients", "400", "--history", "20"),
)
DEADLINE = 50.0  # seconds for the whole test


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_every_line_seen_before_a_kill_9_under_load_is_stored_once_in_order(tmp_path):
    deadline = time.monotonic() + DEADLINE
    server = procs.start_server(tmp_path, *LOAD_OPTIONS)
    gen = LoadGen(("127.0.0.1", server.port))
    try:
        seen: list[tuple[str, str]] = []  # by the first receiver, in the order it got them
        sent = [0] * SENDERS
        done = [0] * SENDERS
        receivers = [gen.connect(f"r{n}") for n in range(RECEIVERS)]
        senders = [gen.connect(f"s{n}") for n in range(SENDERS)]
        first = receivers[0]

        def on_chat(client, message, now) -> None:
            if client is first:
                seen.append((message.sender, message.text))
                done[int(message.sender[1:])] += 1

        gen.on_chat = on_chat
        gen.run_until(lambda: all(c.ready_at is not None for c in gen.clients), deadline, "250 clients joining")

        def load_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for index, sender in enumerate(senders):
                    while sent[index] - done[index] < IN_FLIGHT:
                        gen.send_chat(sender, f"line {sent[index]} of s{index}")
                        sent[index] += 1
                gen.pump(0.01)

        load_for(LOAD_SECONDS)
        acknowledged = list(seen)
        load_for(PROMISE + COMMIT_INTERVAL)  # the store's promise, under load: then the kill, mid-load
        server.popen.send_signal(signal.SIGKILL)
        assert server.wait() == -signal.SIGKILL
        assert not gen.errors, gen.errors[:3]
        assert len(acknowledged) > SENDERS  # the load was a load
    finally:
        gen.close_all()
        server.kill()

    again = procs.start_server(tmp_path, *LOAD_OPTIONS)  # the same data directory: the same store
    try:
        path = tmp_path / "server-data" / "socket-chat" / "history.sqlite3"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:  # beside the running server
            stored = db.execute("SELECT sender, text FROM messages ORDER BY id").fetchall()
    finally:
        again.kill()
    assert len(set(stored)) == len(stored), "a line stored twice"
    assert stored[: len(acknowledged)] == acknowledged  # every one, in the room's order, nothing between
