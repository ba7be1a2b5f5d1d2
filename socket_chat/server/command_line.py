"""The server's command line: ``python server.py``, ``socket-chat-server``
or ``python -m socket_chat.server`` (``--help`` for the options).

It reads the options, the key file, the message of the day, the allow and operators files and the
cluster's address, then runs a ``ChatServer`` (with the operator console
when started in a terminal) until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from socket_chat import cli, protocol, transport
from socket_chat import crypto as crypto_utils
from socket_chat.chat.bans import Bans
from socket_chat.chat.history import HistoryStore
from socket_chat.chat.limits import Limits, Startups, startups_type
from socket_chat.chat.offline import OfflineMessages
from socket_chat.chat.presentation import printable_text
from socket_chat.chat.registrations import DEFAULT_EXPIRY_DAYS, NameRegistry, Registrations
from socket_chat.chat.room import DEFAULT_HISTORY
from socket_chat.chat.rooms import RoomCaps
from socket_chat.crypto import keystore
from socket_chat.protocol.handshake import MAX_EFFORT, MIN_EFFORT
from socket_chat.server import descriptors, store, tickets
from socket_chat.server.allow_file import OPERATORS_FILE, AllowFile, AllowFileError
from socket_chat.server.app import ChatServer
from socket_chat.server.console import COMMANDS as CONSOLE_COMMANDS
from socket_chat.server.console import OperatorConsole, console_wanted, on_terminal, run_console

if TYPE_CHECKING:
    from socket_chat.server.cluster import RedisCluster  # imported only with --cluster: redis is optional

MAX_MOTD_BYTES = 4096  # of UTF-8 in the message of the day
NO_STORE = "none"  # --store none: the history is kept in memory only
DEFAULT_KEEP_DAYS = 30
CLUSTER_NAME_TTL = 15.0  # seconds: cluster.DEFAULT_NAME_TTL (cluster.py is imported only with --cluster)
CLUSTER_PASSWORD_ON_COMMAND_LINE = (
    "Warning: the Redis password in --cluster can be read by every user of this machine (ps, /proc). "
    "Give the address in the CHAT_CLUSTER environment variable instead."
)
EXIT_NO_CLUSTER = 3  # the cluster is unreachable at start: worth trying again later
EXIT_USAGE = 1  # what is wrong is the set-up (a key file, an option, the cluster's rules): trying again will not help
#: The longest chat text an option may allow: a relayed ChatMessage (text,
#: sender's name, field lengths, tag) must still fit in one frame.
MAX_MESSAGE_BYTES_CEILING = protocol.MAX_FRAME_SIZE - 1024
PORT_IN_USE = "Port {port} is already in use on {host}: is another server running? Choose another with --port."

log = logging.getLogger("chat.server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Encrypted terminal group chat: the server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the command lines as they are
        epilog="operator console (when the server runs in a terminal):\n"
        + "\n".join(f"  {line}" for line in CONSOLE_COMMANDS.help_lines()),
    )
    cli.add_version(parser)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4 interfaces)")
    parser.add_argument(
        "--port",
        type=cli.port_number,
        default=cli.DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default: {cli.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        help="the server's RSA identity key, made on first use (default: $XDG_DATA_HOME/socket-chat/server_key.pem)",
    )
    parser.add_argument(
        "--history",
        type=history_size,
        default=DEFAULT_HISTORY,
        metavar="N",
        help=f"recent messages shown to a newcomer, 0 for none (default: {DEFAULT_HISTORY})",
    )
    parser.add_argument(
        "--motd",
        type=Path,
        default=None,
        metavar="FILE",
        help="a file whose text is shown to everyone who joins (message of the day)",
    )
    parser.add_argument(
        "--log-messages",
        action="store_true",
        help="put the text of public lines and actions in the log (default: only who sent one, and its length)",
    )
    parser.add_argument(
        "--guests",
        type=yes_or_no,
        default=None,
        metavar="yes|no",
        help="let in people whose client proves no key (older clients, scripts), shown as guests; "
        "no: only people with a key (default: yes, or no with --allow)",
    )
    parser.add_argument(
        "--allow",
        type=Path,
        default=None,
        metavar="FILE",
        help="a private server: only the keys listed in FILE get in (one a line: a fingerprint or an "
        "ssh-ed25519 public key, then a name kept for it alone, then # a comment); read again on SIGHUP "
        "and the console's /reload. Implies --guests no",
    )
    parser.add_argument(
        "--operators",
        type=Path,
        default=None,
        metavar="FILE",
        help="the keys that may run /kick, /ban, /unban, /bans, /release, /say and /close from their own client "
        "(the allow file's format without the name: a fingerprint or an ssh-ed25519 public key a line, "
        "# a comment); read again on SIGHUP and /reload",
    )
    _add_store_options(parser.add_argument_group("the history on disk"))
    _add_limit_options(parser.add_argument_group("limits"))
    _add_room_options(
        parser.add_argument_group("rooms (besides the lobby: /join #room; with --cluster they span its servers)")
    )
    _add_cluster_options(parser.add_argument_group("cluster (several servers, one chat, over Redis)"))
    args = parser.parse_args(argv)
    if args.allow is not None and args.guests:
        parser.error("--allow admits only the keys in its file: it cannot be used with --guests yes")
    args.guests = Limits().guests if args.guests is None else args.guests
    args.guests = args.guests and args.allow is None
    if args.max_message_bytes > MAX_MESSAGE_BYTES_CEILING:
        parser.error(f"--max-message-bytes can be at most {MAX_MESSAGE_BYTES_CEILING} (one frame)")
    if args.cluster and args.store not in (None, NO_STORE):
        parser.error("--store: with --cluster, the cluster's Redis stream keeps the history, not a file")
    if args.cluster:
        from socket_chat.server import cluster  # only now: without --cluster, redis is never imported

        try:
            cluster.check_url(args.cluster)
        except ValueError as exc:
            parser.error(f"--cluster: {exc}")
        if args.cluster != os.environ.get("CHAT_CLUSTER") and cluster.redacted(args.cluster) != args.cluster:
            print(CLUSTER_PASSWORD_ON_COMMAND_LINE, file=sys.stderr)
    return args


def _add_store_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--store",
        default=None,
        metavar="FILE",
        help="the SQLite file the history is kept in, to outlive a restart, with its full-text index for /search "
        "and the private messages waiting for someone offline; 'none' keeps nothing on disk (no /search then) "
        "(default: $XDG_DATA_HOME/socket-chat/history.sqlite3; none with --cluster or --history 0)",
    )
    group.add_argument(
        "--keep-days",
        type=count_type("--keep-days"),
        default=DEFAULT_KEEP_DAYS,
        metavar="N",
        help="drop stored lines, and private messages still waiting, older than N days (with --cluster: a key's "
        f"waiting messages N days after the last came); 0: keep them for ever (default: {DEFAULT_KEEP_DAYS})",
    )
    group.add_argument(
        "--name-expiry",
        type=count_type("--name-expiry"),
        default=DEFAULT_EXPIRY_DAYS,
        metavar="DAYS",
        help="a registered name not used for DAYS is free again; 0: never (default: "
        f"{DEFAULT_EXPIRY_DAYS}). Names are kept in the store's file; in memory only with --store none "
        "or --history 0; in the cluster's Redis with --cluster",
    )
    group.add_argument(
        "--keep-messages",
        type=cli.positive(int, "--keep-messages"),
        default=None,
        metavar="N",
        help="keep only the last N stored lines, of the lobby and of each room (default: no limit)",
    )


def open_store(args: argparse.Namespace) -> store.SqliteStore | None:
    """The history store the options ask for, open, or None for none.

    Raises:
        store.StoreError: it cannot be used (the message says why).
    """
    if args.store == NO_STORE or args.cluster or args.history == 0:
        return None
    path = Path(args.store) if args.store is not None else store.default_path()
    retention = store.Retention(days=args.keep_days or None, messages=args.keep_messages)
    opened = store.SqliteStore.open(path, retention, history=args.history)
    kept = f"{args.keep_days} days" if args.keep_days else "for ever"
    if args.keep_messages:
        kept += f", the last {args.keep_messages} lines at most"
    log.info("History kept in %s (%s; --store none keeps nothing)", path, kept)
    return opened


def registrations_from(
    args: argparse.Namespace, opened: store.SqliteStore | None, room_cluster: RedisCluster | None = None
) -> NameRegistry:
    """The registered names: kept in the store's file, or in memory only
    without one; with --cluster, in the cluster's Redis (every server agrees)."""
    if room_cluster is not None:
        from socket_chat.server.cluster_names import RedisRegistrations  # as cluster: only with --cluster

        return RedisRegistrations(room_cluster, expiry_days=args.name_expiry)
    return Registrations(opened, expiry_days=args.name_expiry)


def _add_room_options(group: argparse._ArgumentGroup) -> None:
    caps = RoomCaps()
    group.add_argument(
        "--max-rooms",
        type=cli.positive(int, "--max-rooms"),
        default=caps.max_rooms,
        metavar="N",
        help=f"rooms this server (with --cluster: the cluster) holds at once; a /join that would make one more "
        f"is refused "
        f"(default: {caps.max_rooms})",
    )
    group.add_argument(
        "--rooms-per-person",
        type=cli.positive(int, "--rooms-per-person"),
        default=caps.per_person,
        metavar="N",
        help=f"rooms one person may be in at once, the lobby aside (default: {caps.per_person})",
    )
    group.add_argument(
        "--room-size",
        type=cli.positive(int, "--room-size"),
        default=caps.room_size,
        metavar="N",
        help=f"people one room holds at most; the lobby has --max-clients (default: {caps.room_size})",
    )


def _add_cluster_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--cluster",
        default=os.environ.get("CHAT_CLUSTER") or None,
        metavar="redis://HOST:PORT/DB",
        help="share the chat with every server given the same Redis (default: $CHAT_CLUSTER; "
        "none: this server alone). An address with a password belongs in $CHAT_CLUSTER: a command line "
        "is visible to everyone on the machine (ps). Needs: pip install -r requirements-cluster.txt",
    )
    group.add_argument(
        "--cluster-name-ttl",
        type=cli.positive(float, "--cluster-name-ttl"),
        default=CLUSTER_NAME_TTL,
        metavar="SECONDS",
        help=f"how long the names of a server that stopped answering stay taken (default: {CLUSTER_NAME_TTL:g})",
    )


def _add_limit_options(group: argparse._ArgumentGroup) -> None:
    default = Limits()

    def limit(flag: str, field: str, parse: Callable[[str], object], metavar: str, help: str) -> None:
        """An option for the ``Limits`` field ``field``, its default from there."""
        value = getattr(default, field)
        shown = f"{value:g}" if isinstance(value, float) else value
        group.add_argument(
            flag, type=parse, default=value, dest=field, metavar=metavar, help=f"{help} (default: {shown})"
        )

    def whole(flag: str) -> Callable[[str], int]:
        return cli.positive(int, flag)

    limit(
        "--max-clients",
        "max_clients",
        whole("--max-clients"),
        "N",
        "people at once (connections that finished the handshake); one more is told the server is full",
    )
    limit(
        "--max-message-bytes",
        "max_message_bytes",
        whole("--max-message-bytes"),
        "BYTES",
        "longest chat line, in bytes of UTF-8 (a multi-line message: all its lines together)",
    )
    limit(
        "--max-lines",
        "max_lines",
        whole("--max-lines"),
        "N",
        "lines one chat message may hold (a paste, or lines joined with Alt-Enter); a longer one is refused, "
        "and flood control counts each line as a message",
    )
    limit(
        "--rate",
        "rate",
        rate_type("--rate"),
        "PER_SECOND",
        "messages a second each person may send, sustained; 0: no limit",
    )
    limit("--burst", "burst", whole("--burst"), "N", "messages a person may send at once, as when pasting")
    limit(
        "--sendq",
        "sendq_bytes",
        whole("--sendq"),
        "BYTES",
        "bytes queued for a client that does not read before it is disconnected",
    )
    limit(
        "--max-per-address",
        "max_per_address",
        count_type("--max-per-address"),
        "N",
        "connections at once from one IP address (IPv6: one /64), handshakes included; 0: no cap",
    )
    limit(
        "--handshake-rate",
        "handshake_rate",
        rate_type("--handshake-rate"),
        "PER_SECOND",
        "new connections a second from one address, after 10 at once; a handshake not finished counts 3; 0: no limit",
    )
    limit(
        "--max-startups",
        "max_startups",
        startups_arg,
        "START:RATE:FULL",
        "connections still in their handshake, as sshd's MaxStartups: from START on, new ones are asked for a "
        "proof of work (--max-work), and all are refused at FULL (with --max-work 0: RATE%% of new ones are refused "
        "from START, rising to all at FULL); N: a hard cap; 0: no cap (these never hold a --max-clients place)",
    )
    limit(
        "--max-work",
        "max_work",
        work_type,
        "EFFORT",
        f"from START of --max-startups on, ask each new connection for a proof of work (leading zero bits of "
        f"SHA-256) instead of refusing some, its effort rising with the load up to EFFORT ({MIN_EFFORT}-{MAX_EFFORT}); "
        "0: none (random early drop, as before)",
    )
    for name, what in (
        ("handshake", "to finish the handshake"),
        ("username", "to choose a username"),
        ("frame", "to finish a message once begun"),
    ):
        flag = f"--{name}-timeout"
        limit(flag, f"{name}_timeout", cli.positive(float, flag), "SECONDS", f"seconds a client has {what}")


def yes_or_no(text: str) -> bool:
    """argparse type for --guests: ``yes`` or ``no``."""
    if text.lower() not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r}: say yes or no")
    return text.lower() == "yes"


def rate_type(option: str) -> Callable[[str], float]:
    """argparse type for a rate (``option``, for its errors): a number a
    second, 0 (no limit) or more."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{option} must be 0 (no limit) or more")
        return value

    return parse


def count_type(option: str):
    """argparse type: a whole number, 0 (off) or more."""

    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{option} must be a whole number, 0 or more")
        return int(text)

    return parse


def work_type(text: str) -> int:
    """argparse type for --max-work: 0 (none), or an effort MIN_EFFORT..MAX_EFFORT."""
    if not text.isdigit() or not (int(text) == 0 or MIN_EFFORT <= int(text) <= MAX_EFFORT):
        raise argparse.ArgumentTypeError(
            f"--max-work: {text!r} is neither 0 nor an effort from {MIN_EFFORT} to {MAX_EFFORT}"
        )
    return int(text)


def startups_arg(text: str) -> Startups:
    """argparse type for --max-startups."""
    try:
        return startups_type(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--max-startups: {exc}") from None


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__})


def history_size(text: str) -> int:
    """argparse type: a number of messages, 0 or more."""
    if not text.isdigit() or int(text) > 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of messages (0 to 100000)")
    return int(text)


class MotdFileError(Exception):
    """The message-of-the-day file cannot be used; the message says why."""


def read_motd(path: Path | None) -> str:
    """The message of the day from ``path`` ("" for none), its lines made
    printable and trailing white space trimmed.

    Raises:
        MotdFileError: cannot be read, is not UTF-8, or is too long.
    """
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MotdFileError(f"Cannot read the message of the day {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MotdFileError(f"The message of the day {path} is not UTF-8 text.") from None
    text = "\n".join(printable_text(line.rstrip()) for line in text.strip().splitlines())
    if len(text.encode("utf-8")) > MAX_MOTD_BYTES:
        raise MotdFileError(f"The message of the day {path} is over the {MAX_MOTD_BYTES}-byte limit.")
    return text


class ClusterError(Exception):
    """The cluster given with --cluster cannot be joined; the message says
    why, and ``exit_code`` whether trying again later may help."""

    def __init__(self, message: str, exit_code: int = EXIT_NO_CLUSTER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def join_cluster(args: argparse.Namespace) -> RedisCluster | None:
    """The Redis cluster given with --cluster, connected, or None if none was.

    Raises:
        ClusterError: Redis does not answer, the redis package is missing,
            or the cluster's servers compare names by other rules.
    """
    if not args.cluster:
        return None
    from socket_chat.server import cluster

    try:
        return cluster.RedisCluster.connect(args.cluster, name_ttl=args.cluster_name_ttl)
    except cluster.ClusterIncompatible as exc:
        raise ClusterError(str(exc), exit_code=EXIT_USAGE) from None
    except cluster.ClusterUnavailable as exc:
        raise ClusterError(str(exc)) from None


def kept_by_key(room_cluster: RedisCluster) -> HistoryStore:
    """What the room keeps by a person's key in a cluster (when they left,
    their away state): in its Redis, for every server to read."""
    from socket_chat.server.cluster_history import ClusterHistory  # as cluster: only with --cluster

    return ClusterHistory(room_cluster)


def waiting_in(room_cluster: RedisCluster, keep_days: float) -> OfflineMessages:
    """The private lines waiting for someone offline, in a cluster: in its
    Redis, for them to get on whichever server they come back to."""
    from socket_chat.server.cluster_history import ClusterOffline  # as cluster: only with --cluster

    return ClusterOffline(room_cluster, keep_days=keep_days)


def shared_bans(room_cluster: RedisCluster) -> Bans:
    """The bans of a cluster: in its Redis, for every server to hold."""
    from socket_chat.server import cluster

    return cluster.ClusterBans(room_cluster)


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line for the operator on why the server cannot listen. Python's
    own text for a busy port names the address as a tuple and 'while
    attempting to bind'."""
    if exc.errno == errno.EADDRINUSE:
        return PORT_IN_USE.format(port=port, host=host)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"Cannot listen at {transport.format_address(host, port)}: {reason}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _reload_in_background(server: ChatServer) -> None:
    """SIGHUP: read the allow and operators files again, in a thread of its own (a signal
    handler runs in the middle of the main thread's work; the reload logs
    what happened)."""
    threading.Thread(target=server.reload_allow_list, name="reload", daemon=True).start()


def ticket_keys_path(key_path: Path) -> Path:
    """Where the resumption ticket keys are kept: beside the server's key,
    named after it (``server_key.pem``: ``server_key.tickets``), 0600."""
    return key_path.with_suffix(".tickets")


def ticket_service(
    key: crypto_utils.RSA.RsaKey, keys: tickets.FileTicketKeys | None, room_cluster: RedisCluster | None
) -> tickets.TicketService:
    """The resumption tickets: keys in the file, or shared through the
    cluster's Redis (so that any of its servers takes a ticket)."""
    identity = protocol.ServerIdentity.of(key)
    if room_cluster is not None:
        return tickets.TicketService(identity, tickets.SharedTicketKeys(room_cluster))
    return tickets.TicketService(identity, keys)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print("Server is commencing...", flush=True)
    key_path = args.key or keystore.data_dir() / "server_key.pem"
    try:
        motd = read_motd(args.motd)
        allow = None if args.allow is None else AllowFile(args.allow)
        operators = None if args.operators is None else AllowFile(args.operators, OPERATORS_FILE)
        key = keystore.load_or_create_identity_key(key_path)
        ticket_keys = None if args.cluster else tickets.FileTicketKeys(ticket_keys_path(key_path))
        room_cluster = join_cluster(args)
    except (keystore.KeyFileError, MotdFileError, AllowFileError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ClusterError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    with contextlib.ExitStack() as undo:  # what was opened, closed again if the server does not start
        if room_cluster is not None:
            undo.callback(room_cluster.close)
        try:
            descriptors.raise_limit(
                args.max_clients, clustered=room_cluster is not None, handshakes=args.max_startups.full
            )
            history_store = open_store(args)
            if history_store is not None:
                undo.callback(history_store.close)
            limits = limits_from(args)
            server = ChatServer(
                key,
                args.host,
                args.port,
                limits,
                history=args.history,
                motd=motd,
                cluster=room_cluster,
                store=history_store,
                allow=allow,
                registrations=registrations_from(args, history_store, room_cluster),
                operators=operators,
                bans=None if room_cluster is None else shared_bans(room_cluster),
                tickets=ticket_service(key, ticket_keys, room_cluster),
                kept=None if room_cluster is None else kept_by_key(room_cluster),
                offline=None if room_cluster is None else waiting_in(room_cluster, args.keep_days),
                rooms=RoomCaps(args.max_rooms, args.rooms_per_person, args.room_size),
            )
        except (descriptors.DescriptorLimitError, store.StoreError) as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(cannot_listen(args.host, args.port, exc), file=sys.stderr)
            return EXIT_USAGE
        undo.pop_all()  # the server has them now
    server.log_messages = args.log_messages
    print(f"Listening at {transport.format_address(*server.server_address)}")
    if room_cluster is not None:
        print(f"Cluster: {room_cluster.describe()}")
    if allow is not None or operators is not None:
        # As sshd's: SIGHUP reads the files again (without them it still ends the server, as before).
        signal.signal(signal.SIGHUP, lambda signum, frame: _reload_in_background(server))
    if allow is not None:
        listed = len(allow.current)
        print(f"Admitting only the keys in {args.allow} ({listed} listed; SIGHUP or /reload reads it again)")
    if operators is not None:
        listed = len(operators.current)
        print(f"Operators: the keys in {args.operators} ({listed} listed; SIGHUP or /reload reads it again)")
    print(f"Server key fingerprint: {server.fingerprint}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as console_terminal:
        if console_wanted(sys.stdin):
            signal.signal(signal.SIGTTIN, signal.SIG_IGN)  # if put in the background later: EIO, not a stop
            console = OperatorConsole(server)
            read_line, show = console_terminal.enter_context(on_terminal(console, sys.stdin))
            threading.Thread(target=run_console, args=(console, read_line, show), name="console", daemon=True).start()
        with server:
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the goodbyes short
                log.info("Shutting down")
    return 0
