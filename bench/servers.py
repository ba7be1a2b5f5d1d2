"""The child process that runs one server for the benchmark.

    python -m bench.servers KIND [--stack-size BYTES] [--cluster redis://HOST:PORT/DB] [--admission]
                                 [--store FILE] [--max-work EFFORT]

KIND is ``chat`` (socket_chat.server's ``ChatServer`` as it is),
``chat-unbatched`` (the same with a sender that seals one record per message, as before issue 5)
or ``plain`` (the plaintext floor). With ``--cluster`` a chat server joins the cluster on that
Redis, as ``server.py --cluster`` does; with ``--store FILE`` it keeps its history in that
SQLite file, as ``server.py --store FILE`` does (bench/store.py). It prints ``PORT <n>`` once listening, and
runs until SIGTERM or until its standard input closes (with a store, ``PORT <n> WRITER <tid>``:
the store's writer thread, whose CPU time bench/store.py reads from /proc; then, for a chat server,
``HANDSHAKES <tid>``: its handshake thread, whose CPU bench/runner.py reads). It uses the test-only
key from tests/keys (making a 3,072-bit key takes seconds): never a real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from bench.plain import PlainServer
from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.chat import limits
from socket_chat.server import app as chat_server
from socket_chat.server import descriptors, sender, store, tickets

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = ROOT / "tests" / "keys" / "test-only-server-key.pem"
KINDS = ("chat", "chat-unbatched", "plain")


#: The server's limits for a benchmark: the load generator is no person. It
#: sends faster than flood control allows one, a room may hold 5,000
#: (bench/crowd.py), and all of them come from 127.0.0.1 (so no
#: per-address limits either).
BENCH_LIMITS = limits.Limits(
    max_clients=6000, rate=0, max_per_address=0, handshake_rate=0, max_startups=limits.UNCAPPED
)
#: With --admission: the per-address limits as server.py has them by default.
ADMISSION_LIMITS = limits.Limits(max_clients=2000, rate=0)


class UnbatchedSender(sender.Sender):
    """The sender, sealing as before issue 5: one record per message (then
    one send for all of them)."""

    def _seal(self, conn: protocol.ServerConnection, items: list[protocol.Encoded]) -> None:
        for item in items:
            conn.send_batch([item])


class UnbatchedServer(chat_server.ChatServer):
    sender_class = UnbatchedSender


def make_server(
    kind: str,
    cluster_url: str | None = None,
    bench_limits: limits.Limits = BENCH_LIMITS,
    store_path: str | None = None,
    ticket_keys: Path | None = None,
):
    if kind == "plain":
        return PlainServer("127.0.0.1", 0)
    key = crypto_utils.import_private_key(TEST_KEY.read_bytes())
    server_class = UnbatchedServer if kind == "chat-unbatched" else chat_server.ChatServer
    opened = (
        None if store_path is None else store.SqliteStore.open(Path(store_path), history=chat_server.DEFAULT_HISTORY)
    )
    service: tickets.TicketService | bool = True  # ticket keys in memory
    if ticket_keys is not None:  # in a file, as server.py keeps them: they survive a restart
        service = tickets.TicketService(protocol.ServerIdentity.of(key), tickets.FileTicketKeys(ticket_keys))
    return server_class(
        key, "127.0.0.1", 0, bench_limits, cluster=join_cluster(cluster_url), store=opened, tickets=service
    )


def join_cluster(url: str | None):
    """The cluster at ``url``, connected; None for a server alone."""
    if url is None:
        return None
    from socket_chat.server import cluster  # only now: without --cluster, redis is never imported

    return cluster.RedisCluster.connect(url)


def stop_when_stdin_closes(stop) -> None:
    """The parent closes our stdin (or dies): stop then."""
    threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--stack-size", type=int, default=0, help="threading.stack_size for client threads")
    parser.add_argument("--cluster", metavar="redis://HOST:PORT/DB", help="join the cluster on this Redis")
    parser.add_argument("--admission", action="store_true", help="server.py's per-address limits (default: off)")
    parser.add_argument("--handshake-timeout", type=float, help="seconds, for a reconnect storm (bench/crowd.py)")
    parser.add_argument("--store", metavar="FILE", help="keep the history in this SQLite file (default: memory)")
    parser.add_argument("--ticket-keys", type=Path, help="keep the ticket keys in this file (bench/resume.py)")
    parser.add_argument("--max-work", type=int, help="server.py's --max-work (bench/swarm.py)")
    args = parser.parse_args(argv)
    if args.cluster and args.kind == "plain":
        parser.error("--cluster: the plaintext floor has no cluster")
    if args.stack_size:
        threading.stack_size(args.stack_size)
    descriptors.raise_limit(BENCH_LIMITS.max_clients, clustered=bool(args.cluster))  # as the server's main does
    bench_limits = ADMISSION_LIMITS if args.admission else BENCH_LIMITS
    if args.handshake_timeout:
        bench_limits = dataclasses.replace(BENCH_LIMITS, handshake_timeout=args.handshake_timeout)
    if args.max_work is not None:
        bench_limits = dataclasses.replace(bench_limits, max_work=args.max_work)
    server = make_server(args.kind, args.cluster, bench_limits, args.store, args.ticket_keys)
    stop = server.server_close if args.kind == "plain" else server.shutdown
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop, daemon=True).start())
    stop_when_stdin_closes(stop)
    writer = getattr(server.store, "writer_native_id", None) if args.kind != "plain" else None
    handshakes = getattr(getattr(server, "handshakes", None), "native_id", None)
    print(
        f"PORT {server.server_address[1]}"
        + (f" WRITER {writer}" if writer else "")
        + (f" HANDSHAKES {handshakes}" if handshakes else ""),
        flush=True,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
