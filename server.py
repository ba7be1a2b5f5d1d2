"""The chat server: sockets, threads and the room. The protocol is in protocol.py.

Run ``python server.py --help`` for the options. Each connection gets a
reader thread (handshake, username, then the messages it sends) and, once the
handshake is done, a writer thread that seals and sends what the room puts in
its bounded outbox. The room itself knows nothing of sockets.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import crypto_utils
import protocol
from protocol import (
    ActionLine,
    ActionMessage,
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    HistoryMessage,
    MalformedMessage,
    Message,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    ProtocolError,
    RateLimit,
    ServerConnection,
    UserJoined,
    UserLeft,
    UserList,
    UserListRequest,
    Username,
    UsernameRequest,
    UserParted,
    Welcome,
)

DEFAULT_PORT = 8756
SHUTDOWN_GRACE = 2.0  # seconds to let goodbyes go out on shutdown
DEFAULT_HISTORY = 20  # chat lines and actions a newcomer is shown
MAX_MOTD_BYTES = 4096  # of UTF-8 in the message of the day
RECV_SIZE = 65536
CLUSTER_NAME_TTL = 15.0  # seconds: cluster.DEFAULT_NAME_TTL (cluster.py is imported only with --cluster)
EXIT_NO_CLUSTER = 3  # the cluster is unreachable at start: worth trying again later
#: The longest chat text an option may allow: a relayed ChatMessage (text,
#: sender's name, field lengths, tag) must still fit in one frame.
MAX_MESSAGE_BYTES_CEILING = protocol.MAX_FRAME_SIZE - 1024

ASK_USERNAME = "Please enter a username."
USERNAME_TAKEN = "That username is taken. Please enter another username."
USERNAME_INVALID = (
    f"Please enter a valid username. A username is 1 to {protocol.MAX_USERNAME_LENGTH}"
    " printable characters."
)
SHUTTING_DOWN = "Server is shutting down."
SERVER_FULL = "The server is full ({max_clients} people). Try again later."

#: TCP keepalive: find peers that vanished without a word (power cut, lost
#: network) within about two minutes instead of the kernel's two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6

log = logging.getLogger("chat.server")

# One writer seals at a time. pycryptodomex lets go of the GIL around each of
# its C calls (a dozen or more per record), so with a writer per client sealing
# at once, each call hands the GIL to another writer, and the readers that feed
# them wait behind every one. Writers waiting here sleep instead, and batch up
# what arrives meanwhile (measured in docs/benchmarks.md).
_SEALING = threading.Lock()


# --- the identity key --------------------------------------------------------


def data_dir() -> Path:
    """Where the chat keeps its files: ``$XDG_DATA_HOME/socket-chat``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "socket-chat"


class KeyFileError(Exception):
    """The identity key file cannot be used; the message says why and what to do."""


def load_or_create_identity_key(path: Path):
    """The server's long-term RSA key: read from ``path``, or made and saved
    there (mode 0600) on first run.

    Raises:
        KeyFileError: cannot be read or written, not a key, or readable by others.
    """
    try:
        if path.exists():
            return _read_identity_key(path)
        log.info("Making a new %d-bit server key (first run; this takes a few seconds)", crypto_utils.RSA_KEY_BITS)
        key = crypto_utils.generate_rsa_keypair()
        _write_private_file(path, crypto_utils.export_private_key(key))
        log.info("Created a new server key at %s", path)
        return key
    except OSError as exc:
        raise KeyFileError(f"Cannot use the server key file {path}: {exc.strerror or exc}") from None


def _read_identity_key(path: Path):
    if not path.is_file():
        raise KeyFileError(f"The server key {path} is not a file.")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"Permissions {stat.S_IMODE(mode):04o} for {path} are too open: "
            f"the key must be readable by its owner only. Run: chmod 600 {path}"
        )
    try:
        return crypto_utils.import_private_key(path.read_bytes())
    except crypto_utils.KeyFormatError as exc:
        raise KeyFileError(f"Cannot read the server key {path}: {exc}") from None


def _write_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL with mode 0600: the file is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# --- limits ------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one connection may do and how long it may take; every field is a
    server option (see ``parse_args``), and these are the defaults."""

    max_clients: int = 1000  # connections at once; one more is told the server is full
    max_message_bytes: int = 4096  # of UTF-8 in one chat line; longer ones are refused
    rate: float = 5.0  # messages a second, sustained; 0 turns flood control off
    burst: int = 20  # messages at once, so that a pasted block goes through
    sendq_bytes: int = 256 * 1024  # queued for one client before it is cut off
    handshake_timeout: float = 10.0  # seconds from connecting to keys confirmed
    username_timeout: float = 60.0  # seconds to choose a name: a person types it
    frame_timeout: float = 10.0  # seconds for a frame, once begun (slowloris)

    def rate_limit_message(self) -> RateLimit:
        """The limit as the client is told it, so that it can pace itself."""
        if not self.rate:
            return RateLimit(burst=0, interval_ms=0)
        return RateLimit(burst=self.burst, interval_ms=max(1, round(1000 / self.rate)))


class TokenBucket:
    """Flood control: ``burst`` messages at once, then ``rate`` a second.

    Socket-free and clock-injected, so tests need no waiting.
    """

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float:
        """Spend one message's token: 0.0 if there was one, otherwise the
        seconds until there will be (and nothing is spent)."""
        if not self._rate:
            return 0.0
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class Outbox:
    """One client's messages waiting to be sent, bounded in bytes (IRC's
    SendQ): a client that does not read cannot make the server hold more.

    Any thread may ``put``; the writer thread takes everything queued at once.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._items: collections.deque = collections.deque()
        self._bytes = 0
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def put(self, message: Message) -> bool:
        """Queue ``message``; False if that would pass the limit. Once
        closed, messages are dropped: the client is on its way out."""
        size = message_size(message)
        with self._ready:
            if self._closed:
                return True
            if self._bytes + size > self._limit:
                return False
            self._items.append(message)
            self._bytes += size
            self._ready.notify()
            return True

    def close(self, last: Message | None = None) -> None:
        """Queue nothing more, except ``last`` (a goodbye), which may pass the
        limit; the writer sends what is queued, then stops."""
        with self._ready:
            if last is not None and not self._closed:
                self._items.append(last)
            self._closed = True
            self._ready.notify()

    def take_all(self) -> list[Message]:
        """Wait for messages and take them all, oldest first; an empty list
        means the outbox is closed and empty: the writer's signal to stop."""
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            return items

    @property
    def queued_bytes(self) -> int:
        with self._ready:
            return self._bytes


def message_size(message: Message) -> int:
    """What a queued message counts against the send queue: its size on the
    wire, plus a fixed share for the object. The encoding is cached, so for
    a broadcast it is worked out once, by the first member's outbox, and the
    writers that seal the message later find it done."""
    return 64 + len(protocol.encode_message(message))


# --- the room ----------------------------------------------------------------


class Room:
    """Who is in the chat, under one lock, and the one order of its messages.

    Members are objects with a ``name`` attribute and a non-blocking
    ``deliver(message)``; the room calls ``deliver`` under its lock, so every
    member's outbox receives the messages in the same order.

    What the others must hear goes through the room's ``cluster``, which
    gives it one order and hands it back to ``apply``: a ``SingleServer``
    at once, a ``cluster.RedisCluster`` once the Redis stream has it, on
    every server of the cluster alike.

    Args:
        history_size: how many recent chat lines and actions a newcomer gets
            (0: none are kept).
        motd: the message of the day, sent on joining ("" for none).
        clock: wall-clock time (for history); monotonic: for time online.
            Tests pin both.
        cluster: where names are claimed and messages are ordered (default:
            this server alone).
    """

    def __init__(self, history_size: int = DEFAULT_HISTORY, motd: str = "",
                 clock=time.time, monotonic=time.monotonic, cluster=None) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, object] = {}  # casefolded name -> member
        self._joined_at: dict[object, float] = {}
        self._history: collections.deque[HistoryMessage] = collections.deque(maxlen=history_size)
        self._motd = motd
        self._clock, self._monotonic = clock, monotonic
        self._member_ids = itertools.count(1)
        self.cluster = cluster if cluster is not None else SingleServer()
        self.cluster.attach(self)

    def join(self, member, name: str) -> bool:
        """Give ``member`` the name if nobody has it (case-insensitively);
        then it is welcomed (with the message of the day and the history)
        and everyone else is told. False if taken."""
        if not self.cluster.claim(name):
            return False
        with self._lock:
            if name.casefold() in self._members:
                return False
            member.name = name
            member.member_id = f"{self.cluster.server_id}/{next(self._member_ids)}"
            self._members[name.casefold()] = member
            self._joined_at[member] = self._monotonic()
            member.deliver(Welcome(name))
            if self._motd:
                member.deliver(Motd(self._motd))
            for message in self._history:  # under the lock: none missed, none twice
                member.deliver(message)
        self.cluster.publish(UserJoined(name), sender=member)
        return True

    def leave(self, member, parting: str = "") -> None:
        """Take ``member`` out (if it was in) and tell everyone else, with
        its parting line if it gave one."""
        with self._lock:
            name = getattr(member, "name", None)
            if name is None or self._members.get(name.casefold()) is not member:
                return
            del self._members[name.casefold()]
            del self._joined_at[member]
        self.cluster.publish(UserParted(name, parting) if parting else UserLeft(name), sender=member)
        self.cluster.release(name)

    def broadcast(self, message: Message, sender=None) -> None:
        """Send ``message`` to every member but ``sender``; chat lines and
        actions are kept for newcomers too."""
        self.cluster.publish(message, sender)

    def send_private(self, sender, recipient: str, text: str) -> bool:
        """Deliver a private line to the member called ``recipient`` (any
        case) and a copy to ``sender`` as its receipt; nobody else sees it.
        False if no one of that name is online."""
        with self._lock:
            target = self._members.get(recipient.casefold())
            if target is not None:
                message = PrivateMessage(sender.name, target.name, text)
                target.deliver(message)
                if target is not sender:
                    sender.deliver(message)
                return True
        elsewhere = self.cluster.locate(recipient)  # on another server of the cluster?
        if elsewhere is None:
            return False
        message = PrivateMessage(sender.name, elsewhere, text)
        sender.deliver(message)
        self.cluster.publish(message, sender)
        return True

    def rename(self, member, new_name: str) -> bool:
        """Give ``member`` the new name if no one else has it; everyone, the
        member too, is told. False if taken."""
        old_name = member.name
        new_name_is_new = new_name.casefold() != old_name.casefold()
        if new_name_is_new and not self.cluster.claim(new_name):
            return False
        with self._lock:
            holder = self._members.get(new_name.casefold())
            if holder is not None and holder is not member:
                return False
            del self._members[old_name.casefold()]
            self._members[new_name.casefold()] = member
            member.name = new_name
        if new_name_is_new:
            self.cluster.release(old_name)
        self.cluster.publish(NickChanged(old_name, new_name), sender=None)
        return True

    def find(self, name: str):
        """The member called ``name`` (any case) on this server, or None."""
        with self._lock:
            return self._members.get(name.casefold())

    def who(self) -> list[tuple[str, int]]:
        """(name, whole seconds online) of everyone online, sorted by name:
        on every server of the cluster, or on this one if it cannot say."""
        members = self.cluster.members()
        if members is None:
            members = self.local_members()
        return sorted(members, key=lambda entry: entry[0].casefold())

    def local_members(self) -> list[tuple[str, int]]:
        """(name, whole seconds online) of the members on this server."""
        with self._lock:
            now = self._monotonic()
            return [(m.name, int(now - self._joined_at[m])) for m in self._members.values()]

    def names(self) -> list[str]:
        """The names of the members on this server."""
        with self._lock:
            return sorted((m.name for m in self._members.values()), key=str.casefold)

    # Called by the cluster.

    def apply(self, message: Message, sender_id: str | None, sent_at: float | None = None) -> None:
        """Deliver a message in its place in the one order: to every member
        but its sender, or a private one to its recipient only. Chat lines
        and actions are kept for newcomers (``sent_at``: when, if not now)."""
        with self._lock:
            if isinstance(message, PrivateMessage):
                target = self._members.get(message.recipient.casefold())
                if target is not None and target.member_id != sender_id:
                    target.deliver(message)
                return
            self._remember(message, sent_at)
            for member in self._members.values():
                if member.member_id != sender_id:
                    member.deliver(message)

    def remember(self, message: Message, sent_at: float) -> None:
        """Keep a chat line or action sent before this server started."""
        with self._lock:
            self._remember(message, sent_at)

    def tell_everyone_here(self, message: Message) -> None:
        """Deliver ``message`` to the members on this server only."""
        with self._lock:
            for member in self._members.values():
                member.deliver(message)

    def _remember(self, message: Message, sent_at: float | None) -> None:
        if self._history.maxlen and isinstance(message, (ChatMessage, ActionMessage)):
            kind = "action" if isinstance(message, ActionMessage) else "chat"
            when = self._clock() if sent_at is None else sent_at
            self._history.append(HistoryMessage(message.sender, message.text, int(when), kind))


class SingleServer:
    """The cluster of one: names are this server's, and a message is in its
    place as soon as it is published."""

    server_id = "local"

    def attach(self, room: Room) -> None:
        self._room = room

    def claim(self, name: str) -> bool:
        return True  # the room's own check is the whole check

    def release(self, name: str) -> None:
        pass

    def publish(self, message: Message, sender=None) -> None:
        self._room.apply(message, getattr(sender, "member_id", None))

    def locate(self, name: str) -> str | None:
        return None  # no one is anywhere else

    def members(self) -> list[tuple[str, int]] | None:
        return None  # the room knows them all

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- one connection ----------------------------------------------------------


class ClientHandler:
    """One client: its socket, protocol state, outbox and threads.

    The reader thread runs ``handle()``; after the handshake it starts the
    writer thread, the only one that sends from then on.
    """

    def __init__(self, server: "ChatServer", sock: socket.socket, address) -> None:
        self.server = server
        self.limits: Limits = server.limits
        self.sock = sock
        self.peer = _format_address(address)
        self.name: str | None = None
        self.outbox = Outbox(self.limits.sendq_bytes)
        self.conn = ServerConnection(server.identity_key)
        self.flood_control = TokenBucket(self.limits.rate, self.limits.burst)
        self._writer: threading.Thread | None = None
        self._closing = threading.Event()
        self._parting = ""  # the line given with /quit, for the others
        self._frame_began: float | None = None

    # Called by the room, under its lock: must never block.
    def deliver(self, message: Message) -> None:
        if not self.outbox.put(message):
            # IRC's "SendQ exceeded": it does not read, and the others must
            # not wait for it. A goodbye could not reach it either.
            log.warning("%s: send queue over %d bytes: disconnecting a client that does not read",
                        self.peer, self.limits.sendq_bytes)
            self.abort()

    def handle(self) -> None:
        """The reader thread: handshake, username, then chat, until the end."""
        try:
            self._handshake()
            self._start_writer()
            self._choose_username()
            self._chat()
        except _ClientLeft:
            pass
        except _DeadlinePassed as exc:
            log.info("%s: timed out %s", self.peer, exc.waiting_for)
            self.close(f"Timed out {exc.waiting_for}.")
        except ProtocolError as exc:
            log.warning("%s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            if not self._closing.is_set():
                log.info("%s: connection error: %s", self.peer, exc)
        finally:
            self._finish()

    def close(self, reason: str) -> None:
        """Say goodbye and close (from another thread, for example on shutdown)."""
        self._closing.set()
        if self._writer is None:
            self.abort()  # no keys yet: nothing can be said
        else:
            self.outbox.close(last=Goodbye(reason))

    def abort(self) -> None:
        """Cut the connection now; the reader thread wakes up and cleans up."""
        self._closing.set()
        self.outbox.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer or by us

    # The stages of a connection.

    def _handshake(self) -> None:
        deadline = _Deadline(self.limits.handshake_timeout, "waiting for the handshake")
        self.sock.sendall(self.conn.data_to_send())
        event = self._next_event(deadline, flush=True)
        if isinstance(event, ConnectionClosed):
            log.info("%s: closed during the handshake", self.peer)
            raise _ClientLeft()
        if not isinstance(event, HandshakeComplete):
            raise protocol.RemoteProtocolError(f"handshake ended with {event}")
        log.info("%s: handshake complete", self.peer)

    def _choose_username(self) -> None:
        deadline = _Deadline(self.limits.username_timeout, "waiting for a username")
        self.deliver(self.limits.rate_limit_message())
        self.deliver(UsernameRequest(ASK_USERNAME))
        while self.name is None:
            event = self._next_event(deadline)
            if isinstance(event, Username):
                self._try_username(event.name)
            elif not self._handle_common(event):
                self.deliver(ErrorNotice("Choose a username first."))

    def _try_username(self, requested: str) -> None:
        name = protocol.normalize_username(requested)
        if name is None:
            self.deliver(UsernameRequest(USERNAME_INVALID))
        elif not self.server.room.join(self, name):
            self.deliver(UsernameRequest(USERNAME_TAKEN))
        else:
            log.info("%s joined from %s", name, self.peer)

    def _chat(self) -> None:
        handlers = {
            ChatLine: self._relay,
            PrivateLine: self._relay_private,
            ActionLine: self._relay_action,
            NickRequest: self._rename,
            UserListRequest: self._list_users,
        }
        while True:
            event = self._next_event(deadline=None)
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            elif isinstance(event, Goodbye) and event.reason:
                self._part(event.reason)
            elif not self._handle_common(event):
                self.deliver(ErrorNotice(f"{type(event).__name__} is not expected now."))

    def _relay(self, line: ChatLine) -> None:
        if not self._admit(line.text):
            return
        log.info("%s: %s", self.name, protocol.printable_text(line.text))
        self.server.room.broadcast(ChatMessage(self.name, line.text), sender=self)

    def _relay_action(self, line: ActionLine) -> None:
        if not self._admit(line.text):
            return
        log.info("* %s %s", self.name, protocol.printable_text(line.text))
        self.server.room.broadcast(ActionMessage(self.name, line.text), sender=self)

    def _relay_private(self, line: PrivateLine) -> None:
        if not self._admit(line.text):
            return
        if not self.server.room.send_private(self, line.recipient, line.text):
            self.deliver(ErrorNotice(
                f"No one called {line.recipient} is online; the private message was not sent."
            ))
            return
        # The text of private lines stays out of the log (the operator could
        # still read it: the server decrypts everything).
        log.info("%s sent a private message to %s", self.name, protocol.printable_text(line.recipient))

    def _rename(self, request: NickRequest) -> None:
        name = protocol.normalize_username(request.name)
        if not self._within_rate("the name was not changed"):
            return
        if name is None:
            self.deliver(ErrorNotice(
                f"{protocol.printable_text(request.name)!r} is not a valid username: a username is 1 to "
                f"{protocol.MAX_USERNAME_LENGTH} printable characters."
            ))
        elif not self.server.room.rename(self, name):
            self.deliver(ErrorNotice(f"The username {name} is taken."))
        else:
            log.info("%s: now known as %s", self.peer, name)

    def _list_users(self, request: UserListRequest) -> None:
        # Not counted by flood control: the answer goes to the asker alone
        # (whose send queue bounds it), and the client's own startup request
        # must never be refused.
        for message in user_list_messages(self.server.room.who()):
            self.deliver(message)

    def _part(self, parting: str) -> None:
        """The member leaves with a parting line (sent if it passes the checks)."""
        if self._admit(parting):
            self._parting = parting
        raise _ClientLeft()

    def kick(self, reason: str) -> None:
        """The operator removes this member: the others are told, and the
        member is told why before the connection closes."""
        because = f": {reason}" if reason else "."
        self.server.room.broadcast(Notice(f"{self.name} was kicked by the operator{because}"), sender=self)
        log.info("%s kicked by the operator%s", self.name, because)
        self.close(f"You were kicked by the operator{because}")

    def _admit(self, text: str) -> bool:
        """Whether a line of text from the person may go out; if not, they are
        told why, so that nothing is dropped in silence."""
        if not text.strip():
            self.deliver(ErrorNotice("An empty message was not sent."))
            return False
        size = len(text.encode("utf-8"))
        if size > self.limits.max_message_bytes:
            self.deliver(ErrorNotice(
                f"The message was not sent: it is {size} bytes long, and the limit is "
                f"{self.limits.max_message_bytes}."
            ))
            return False
        return self._within_rate(f'"{_excerpt(text)}" was not sent')

    def _within_rate(self, refused: str) -> bool:
        """Flood control, for every message a member sends after joining:
        True if it may be acted on; if not, the member is told (``refused``
        says what did not happen)."""
        wait = self.flood_control.take()
        if wait:
            self.deliver(ErrorNotice(
                f"Slow down: {refused}. You can send {self.limits.burst} "
                f"messages at once, then {self.limits.rate:g} a second; wait {wait:.1f} s."
            ))
            return False
        return True

    def _handle_common(self, event) -> bool:
        """Events with the same meaning at every stage. True if handled."""
        if isinstance(event, (Goodbye, ConnectionClosed)):
            raise _ClientLeft()
        if isinstance(event, MalformedMessage):
            self.deliver(ErrorNotice(f"Message not understood: {event.reason}."))
            return True
        return False

    def _next_event(self, deadline: "_Deadline | None", flush: bool = False):
        """The next event, reading the socket as needed (until ``deadline``,
        and within ``frame_timeout`` of a frame's first byte)."""
        while True:
            event = self.conn.next_event()
            if flush:
                self.sock.sendall(self.conn.data_to_send())
            if event is not protocol.NEED_DATA:
                self._frame_began = None
                return event
            _wait_readable(self.sock, self._earliest(deadline))
            self.conn.receive_data(self.sock.recv(RECV_SIZE))

    def _earliest(self, deadline: "_Deadline | None") -> "_Deadline | None":
        """The deadline for the next read: the stage's, or the frame's once
        a frame has begun, whichever comes first."""
        if not self.conn.buffered_bytes:
            self._frame_began = None
            return deadline
        if self._frame_began is None:
            self._frame_began = time.monotonic()
        frame = _Deadline(self.limits.frame_timeout, "in the middle of a message", start=self._frame_began)
        return frame if deadline is None or frame.at < deadline.at else deadline

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"writer {self.peer}", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        """The writer thread: seal and send the queued messages, in order,
        until the outbox is closed and empty.

        What queued up while it was sending goes out together, in one record
        (a Batch): the cipher setup is paid once per record, not once per
        message, and no message waits for others to arrive. Sealing is under
        ``_SEALING``; the send is not.
        """
        try:
            while messages := self.outbox.take_all():
                with _SEALING:
                    self.conn.send_batch(messages)
                self.sock.sendall(self.conn.data_to_send())
        except (OSError, ProtocolError) as exc:
            if not self._closing.is_set():
                log.info("%s: send failed: %s", self.peer, exc)
        finally:
            self.abort()

    def _finish(self) -> None:
        self.server.room.leave(self, self._parting)
        if self.name is not None:
            log.info("%s left", self.name)
        if self._writer is not None:
            self.outbox.close()  # what is queued still goes out, then the writer stops
            self._writer.join(SHUTDOWN_GRACE)
        self.abort()
        self.sock.close()
        self.server.forget(self)


#: Bytes of names one UserList may carry: it is one field of one frame. A
#: thousand long names of 4-byte characters would not fit.
USER_LIST_BYTES = 60_000


def user_list_messages(members: list[tuple[str, int]]) -> list[Message]:
    """The answer to /users: a UserList of as many members as fit in one
    message, and a Notice counting the rest if some do not."""
    listed, size = [], 0
    for name, seconds in members:
        size += len(name.encode("utf-8")) + len(str(seconds)) + 2  # a tab and a newline
        if size > USER_LIST_BYTES:
            break
        listed.append((name, seconds))
    messages: list[Message] = [UserList.of(listed)]
    if len(listed) < len(members):
        messages.append(Notice(f"...and {len(members) - len(listed)} more: too many to list."))
    return messages


class _ClientLeft(Exception):
    """The client said goodbye or closed the connection: a normal end."""


class _Deadline:
    """A moment by which something must have arrived, and what it is."""

    def __init__(self, seconds: float, waiting_for: str, start: float | None = None) -> None:
        self.at = (time.monotonic() if start is None else start) + seconds
        self.waiting_for = waiting_for


class _DeadlinePassed(Exception):
    def __init__(self, waiting_for: str) -> None:
        super().__init__(waiting_for)
        self.waiting_for = waiting_for


def _wait_readable(sock: socket.socket, deadline: _Deadline | None) -> None:
    if deadline is None:
        return  # recv() blocks as long as it takes
    # poll() rather than select(): it has no limit on descriptor numbers.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    timeout = deadline.at - time.monotonic()
    if timeout <= 0 or not poller.poll(timeout * 1000):
        raise _DeadlinePassed(deadline.waiting_for)


def _excerpt(text: str, length: int = 30) -> str:
    """The start of a line, to tell the person which one is meant."""
    text = protocol.printable_text(text)
    return text if len(text) <= length else text[:length - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _format_address(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the server --------------------------------------------------------------


class ChatServer:
    """Listens for clients and runs a ``ClientHandler`` thread for each.

    Methods for the caller:
        serve_forever(): accept connections until ``shutdown()``.
        shutdown(): from another thread; returns once the loop has stopped.
        server_close(): tell every client the server is shutting down, close
            the connections and wait for their threads. ``with`` calls it.
    """

    def __init__(self, identity_key, host: str = "0.0.0.0", port: int = DEFAULT_PORT,
                 limits: Limits = Limits(), history: int = DEFAULT_HISTORY, motd: str = "",
                 cluster=None) -> None:
        self.identity_key = identity_key
        self.limits = limits
        self.fingerprint = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
        self.room = Room(history_size=history, motd=motd, cluster=cluster)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self._listener.getsockname()[:2]
        self._handlers: dict[ClientHandler, threading.Thread] = {}
        self._handlers_lock = threading.Lock()
        self._shutdown_request = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.room.cluster.start()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.server_close()

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            poller = select.poll()
            poller.register(self._listener, select.POLLIN)
            poller.register(self._wake_reader, select.POLLIN)
            while not self._shutdown_request.is_set():
                if any(fd == self._listener.fileno() for fd, _ in poller.poll()):
                    self._accept()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._shutdown_request.set()
        self._wake_writer.send(b"\0")
        if self._serving.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self._listener.close()
        with self._handlers_lock:
            handlers = dict(self._handlers)
        for handler in handlers:
            handler.close(SHUTTING_DOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for handler, thread in handlers.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                handler.abort()
                thread.join(SHUTDOWN_GRACE)
        self.room.cluster.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def forget(self, handler: ClientHandler) -> None:
        """Called by a handler's reader thread as its last act."""
        with self._handlers_lock:
            self._handlers.pop(handler, None)

    def connection_count(self) -> int:
        with self._handlers_lock:
            return len(self._handlers)

    def kick(self, name: str, reason: str = "") -> bool:
        """Remove the member called ``name``, telling it ``reason``. False
        if no one of that name is here."""
        member = self.room.find(name)
        if member is None:
            return False
        member.kick(reason)
        return True

    def notify_all(self, text: str) -> None:
        """A notice from the operator to every member."""
        self.room.broadcast(Notice(f"Notice from the operator: {text}"))

    def _accept(self) -> None:
        try:
            sock, address = self._listener.accept()
        except OSError as exc:
            # Out of descriptors, most likely: say so, and retry after a pause
            # rather than spinning.
            log.error("accept failed: %s", exc)
            self._shutdown_request.wait(0.1)
            return
        if self.connection_count() >= self.limits.max_clients:
            self._refuse(sock, address, SERVER_FULL.format(max_clients=self.limits.max_clients))
            return
        _tune(sock)
        handler = ClientHandler(self, sock, address)
        thread = threading.Thread(target=handler.handle, name=f"reader {handler.peer}", daemon=True)
        with self._handlers_lock:
            self._handlers[handler] = thread
        log.info("%s: connected", handler.peer)
        thread.start()

    def _refuse(self, sock: socket.socket, address, reason: str) -> None:
        """Turn a connection away at once, without a thread or a key: the
        refusal is one small frame that fits any socket buffer."""
        log.warning("%s: refused: %s", _format_address(address), reason)
        try:
            sock.setblocking(False)
            sock.send(protocol.refusal(reason))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # gone already: nothing to tell
        finally:
            sock.close()


def _tune(sock: socket.socket) -> None:
    # Every sendall is a whole message: don't let Nagle hold it back waiting
    # for an ACK (that costs a delayed-ACK wait, ~40 ms, per turn).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, option):  # Linux and most others; if not, the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


# --- the operator console ----------------------------------------------------


class OperatorCommand:
    """One line of the console's table: ``/help`` is made from it."""

    def __init__(self, name: str, arguments: str, help: str, run) -> None:
        self.name, self.arguments, self.help, self.run = name, arguments, help, run


class ConsoleQuit(Exception):
    """The operator typed /quit."""


class OperatorConsole:
    """Commands typed by the person who runs the server (when its input is a
    terminal). ``execute(line)`` returns the lines to show; it knows no
    terminal, so tests drive it directly."""

    def __init__(self, server: "ChatServer") -> None:
        self.server = server
        self.commands = {c.name: c for c in [
            OperatorCommand("/help", "", "list these commands", self._help),
            OperatorCommand("/users", "", "who is online, and for how long", self._users),
            OperatorCommand("/kick", "NAME [REASON]", "disconnect NAME, telling them why", self._kick),
            OperatorCommand("/say", "TEXT", "send a notice to everyone", self._say),
            OperatorCommand("/quit", "", "stop the server (everyone is told)", self._quit),
        ]}

    def execute(self, line: str) -> list[str]:
        """Run one typed line; the lines to show the operator.

        Raises:
            ConsoleQuit: the operator asked to stop the server.
        """
        line = line.strip()
        if not line:
            return []
        name, _, argument = line.partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            return [f"Unknown command {name}. Type /help for the commands."]
        return command.run(argument.strip())

    def help_lines(self) -> list[str]:
        """One line per command, from the table (``/help`` and ``--help``)."""
        return [f"{(c.name + ' ' + c.arguments).strip():<22} {c.help}" for c in self.commands.values()]

    def _help(self, argument: str) -> list[str]:
        return self.help_lines()

    def _users(self, argument: str) -> list[str]:
        members = self.server.room.who()
        if not members:
            return ["No one is online."]
        return [f"{len(members)} online:"] + [
            f"  {protocol.printable_text(name)} ({protocol.format_duration(seconds)})" for name, seconds in members
        ]

    def _kick(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /kick NAME [REASON]"]
        name, reason = protocol.split_name(argument, self.server.room.names())
        if not self.server.kick(name, reason):
            if self.server.room.cluster.locate(name) is not None:
                return [f"{protocol.printable_text(name)} is on another server of the cluster: kick them there."]
            return [f"No one called {protocol.printable_text(name)} is online."]
        return [f"Kicked {protocol.printable_text(name)}."]

    def _say(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /say TEXT"]
        self.server.notify_all(argument)
        return ["Notice sent."]

    def _quit(self, argument: str) -> list[str]:
        raise ConsoleQuit()


def run_console(console: OperatorConsole, server: "ChatServer", read_line=input) -> None:
    """The console thread: run typed lines until /quit or the end of input,
    then stop the server (the main thread then says goodbye to everyone)."""
    print("Operator console: type /help for the commands.", flush=True)
    try:
        while True:
            for line in console.execute(read_line()):
                print(line, flush=True)
    except (ConsoleQuit, EOFError):
        pass
    except OSError as exc:
        # EIO: the server was put in the background (SIGTTIN is ignored).
        # The console ends; the server goes on.
        log.info("Operator console closed: %s", exc.strerror or exc)
        return
    server.shutdown()


def console_wanted(stdin) -> bool:
    """Run the console if stdin is a terminal and the server is not a
    background job of it (reading would stop the whole server with SIGTTIN)."""
    if not stdin.isatty():
        return False
    try:
        return os.tcgetpgrp(stdin.fileno()) == os.getpgrp()
    except OSError:
        return True  # a terminal, but not ours to control: no job control applies


# --- the command line --------------------------------------------------------


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def positive(kind, name: str):
    """argparse type: a number of ``kind`` above zero."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be more than 0")
        return value
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Encrypted terminal group chat: the server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the command lines as they are
        epilog="operator console (when the server runs in a terminal):\n"
               + "\n".join(f"  {line}" for line in OperatorConsole(server=None).help_lines()),
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4 interfaces)")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--key", type=Path, default=None,
        help="the server's RSA identity key, made on first use "
             "(default: $XDG_DATA_HOME/socket-chat/server_key.pem)",
    )
    parser.add_argument(
        "--history", type=history_size, default=DEFAULT_HISTORY, metavar="N",
        help=f"recent messages shown to a newcomer, 0 for none (default: {DEFAULT_HISTORY})",
    )
    parser.add_argument("--motd", type=Path, default=None, metavar="FILE",
                        help="a file whose text is shown to everyone who joins (message of the day)")
    _add_limit_options(parser.add_argument_group("limits"))
    _add_cluster_options(parser.add_argument_group("cluster (several servers, one chat, over Redis)"))
    args = parser.parse_args(argv)
    if args.max_message_bytes > MAX_MESSAGE_BYTES_CEILING:
        parser.error(f"--max-message-bytes can be at most {MAX_MESSAGE_BYTES_CEILING} (one frame)")
    if args.cluster:
        import cluster  # only now: without --cluster, redis is never imported
        try:
            cluster.check_url(args.cluster)
        except ValueError as exc:
            parser.error(f"--cluster: {exc}")
    return args


def _add_cluster_options(group) -> None:
    group.add_argument(
        "--cluster", default=os.environ.get("CHAT_CLUSTER") or None, metavar="redis://HOST:PORT/DB",
        help="share the chat with every server given the same Redis (default: $CHAT_CLUSTER; "
             "none: this server alone). Needs: pip install -r requirements-cluster.txt",
    )
    group.add_argument(
        "--cluster-name-ttl", type=positive(float, "--cluster-name-ttl"), default=CLUSTER_NAME_TTL,
        metavar="SECONDS",
        help="how long the names of a server that stopped answering stay taken "
             f"(default: {CLUSTER_NAME_TTL:g})",
    )


def _add_limit_options(group) -> None:
    default = Limits()
    group.add_argument("--max-clients", type=positive(int, "--max-clients"), default=default.max_clients, metavar="N",
                       help=f"connections at once; one more is told the server is full (default: {default.max_clients})")
    group.add_argument("--max-message-bytes", type=positive(int, "--max-message-bytes"),
                       default=default.max_message_bytes, metavar="BYTES",
                       help=f"longest chat line, in bytes of UTF-8 (default: {default.max_message_bytes})")
    group.add_argument("--rate", type=rate_type, default=default.rate, metavar="PER_SECOND",
                       help=f"messages a second each person may send, sustained; 0: no limit (default: {default.rate:g})")
    group.add_argument("--burst", type=positive(int, "--burst"), default=default.burst, metavar="N",
                       help=f"messages a person may send at once, as when pasting (default: {default.burst})")
    group.add_argument("--sendq", type=positive(int, "--sendq"), default=default.sendq_bytes, dest="sendq_bytes",
                       metavar="BYTES",
                       help="bytes queued for a client that does not read before it is disconnected "
                            f"(default: {default.sendq_bytes})")
    for name, seconds, what in (("handshake", default.handshake_timeout, "to finish the handshake"),
                                ("username", default.username_timeout, "to choose a username"),
                                ("frame", default.frame_timeout, "to finish a message once begun")):
        group.add_argument(f"--{name}-timeout", type=positive(float, f"--{name}-timeout"), default=seconds,
                           metavar="SECONDS", help=f"seconds a client has {what} (default: {seconds:g})")


def rate_type(text: str) -> float:
    """argparse type for --rate: a number of messages a second, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("--rate must be 0 (no limit) or more")
    return value


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
    text = "\n".join(protocol.printable_text(line.rstrip()) for line in text.strip().splitlines())
    if len(text.encode("utf-8")) > MAX_MOTD_BYTES:
        raise MotdFileError(f"The message of the day {path} is over the {MAX_MOTD_BYTES}-byte limit.")
    return text


class ClusterError(Exception):
    """The cluster given with --cluster cannot be joined; the message says why."""


def join_cluster(args: argparse.Namespace):
    """The Redis cluster given with --cluster, connected, or None if none was.

    Raises:
        ClusterError: Redis does not answer, or the redis package is missing.
    """
    if not args.cluster:
        return None
    import cluster
    try:
        return cluster.RedisCluster.connect(args.cluster, name_ttl=args.cluster_name_ttl)
    except cluster.ClusterUnavailable as exc:
        raise ClusterError(str(exc)) from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print("Server is commencing...", flush=True)
    key_path = args.key or data_dir() / "server_key.pem"
    try:
        motd = read_motd(args.motd)
        key = load_or_create_identity_key(key_path)
        room_cluster = join_cluster(args)
    except (KeyFileError, MotdFileError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NO_CLUSTER
    try:
        server = ChatServer(key, args.host, args.port, limits_from(args), history=args.history, motd=motd,
                            cluster=room_cluster)
    except OSError as exc:
        print(f"Cannot listen at {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        if room_cluster is not None:
            room_cluster.close()
        return 1
    print(f"Listening at {_format_address(server.server_address)}")
    if room_cluster is not None:
        print(f"Cluster: {room_cluster.describe()}")
    print(f"Server key fingerprint: {server.fingerprint}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    if console_wanted(sys.stdin):
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)  # if put in the background later: EIO, not a stop
        console = OperatorConsole(server)
        threading.Thread(target=run_console, args=(console, server), name="console", daemon=True).start()
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the goodbyes short
            log.info("Shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
