"""The chat server: its sockets, its threads and its command line.

Run ``python server.py --help`` for the options. Each connection gets a
reader thread (handshake, username, then the messages it sends). What the
room puts in a client's bounded outbox is sealed and sent by the server's
one sender thread (sender.py). The room (room.py) knows nothing of sockets;
the limits are in limits.py, the operator console in console.py, the key
file in keystore.py.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from socket_chat import cli, protocol, transport
from socket_chat import crypto as crypto_utils
from socket_chat.chat import names
from socket_chat.chat.limits import Limits, Outbox, Startups, TokenBucket, startups_type
from socket_chat.chat.presentation import excerpt, printable_text
from socket_chat.chat.room import DEFAULT_HISTORY, Cluster, Membership, Room, user_list_messages
from socket_chat.crypto import keystore
from socket_chat.protocol import (
    ActionLine,
    ActionMessage,
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    Encoded,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    MalformedMessage,
    Message,
    NickRequest,
    Notice,
    PrivateLine,
    ProtocolError,
    ServerConnection,
    ServerIdentity,
    UserListRequest,
    Username,
    UsernameRequest,
    encode,
)
from socket_chat.server import admission, descriptors
from socket_chat.server.console import COMMANDS as CONSOLE_COMMANDS
from socket_chat.server.console import OperatorConsole, console_wanted, on_terminal, run_console
from socket_chat.server.sender import Outlet, Sender

if TYPE_CHECKING:
    from socket_chat.server.cluster import RedisCluster  # imported only with --cluster: redis is optional

SHUTDOWN_GRACE = 2.0  # seconds to let goodbyes go out on shutdown
MAX_MOTD_BYTES = 4096  # of UTF-8 in the message of the day
CLUSTER_NAME_TTL = 15.0  # seconds: cluster.DEFAULT_NAME_TTL (cluster.py is imported only with --cluster)
CLUSTER_PASSWORD_ON_COMMAND_LINE = (
    "Warning: the Redis password in --cluster can be read by every user of this machine (ps, /proc). "
    "Give the address in the CHAT_CLUSTER environment variable instead."
)
EXIT_NO_CLUSTER = 3  # the cluster is unreachable at start: worth trying again later
#: The longest chat text an option may allow: a relayed ChatMessage (text,
#: sender's name, field lengths, tag) must still fit in one frame.
MAX_MESSAGE_BYTES_CEILING = protocol.MAX_FRAME_SIZE - 1024

ASK_USERNAME = "Please enter a username."
USERNAME_TAKEN = "That username is taken. Please enter another username."
#: ``reason``: a ``names.NameRefused`` reason, "mixes Cyrillic and Latin letters".
USERNAME_INVALID = "That is not a valid username: it {reason}. Please enter another username."
USERNAME_LOOKS_TAKEN = "That username looks the same as {holder}, who is online. Please enter another username."
SHUTTING_DOWN = "Server is shutting down."
SERVER_FULL = "The server is full ({places}). Try again later."
RECORDS_USED_UP = (
    "This connection has carried as many messages as its keys may protect (2^24). Reconnect to go on, with new keys."
)
#: Refusals before the handshake (admission.py), short: the client shows
#: them as an unauthenticated reason.
REFUSALS = {
    admission.Why.SOURCE_CONNECTIONS: "Too many connections from your address ({max_per_address}).",
    admission.Why.SOURCE_RATE: "Too many new connections from your address. Try again in {retry_after:.0f} s.",
    admission.Why.STARTUPS: "The server is busy with new connections. Try again in a few seconds.",
}
#: Username attempts one connection may make before it is closed (each may
#: be a Redis call in a cluster).
MAX_USERNAME_ATTEMPTS = 10
TOO_MANY_USERNAMES = f"Too many username attempts ({MAX_USERNAME_ATTEMPTS})."
PORT_IN_USE = "Port {port} is already in use on {host}: is another server running? Choose another with --port."
MAX_AWAY_LENGTH = 200  # characters of an away message (IRC servers allow about as many)

log = logging.getLogger("chat.server")


def server_full(max_clients: int) -> str:
    """The refusal of a connection over ``--max-clients``."""
    places = "1 person" if max_clients == 1 else f"{max_clients:,} people"
    return SERVER_FULL.format(places=places)


# --- one connection ----------------------------------------------------------


class ClientHandler:
    """One client: its socket, protocol state, outbox and reader thread. A
    room ``Member``.

    The reader thread runs ``handle()``. After the handshake it hands the
    client's ``Outlet`` to the server's sender, the only thread that sends
    to it from then on: the reader drives the receiving half of ``conn`` and
    the sender its sending half, as ``protocol`` allows once the handshake
    is done.
    """

    def __init__(
        self,
        server: ChatServer,
        sock: socket.socket,
        address: tuple[str, int],
        ticket: admission.Ticket | None = None,
    ) -> None:
        self.server = server
        self.ticket = ticket  # its admission: given back when it ends
        self.room = server.room
        self.limits: Limits = server.limits
        self.sock = sock
        self.peer = transport.format_address(*address[:2])
        self.membership: Membership | None = None
        self.outbox = Outbox(self.limits.sendq_bytes, on_ready=self._wake_sender)
        self.conn = ServerConnection(server.identity)
        self.flood_control = TokenBucket(self.limits.rate, self.limits.burst)
        self.outlet = Outlet(sock, self.conn, self.outbox, used_up=Goodbye(RECORDS_USED_UP))
        self._sending = False  # the sender has the outlet: from the end of the handshake
        self._readable = select.poll()  # poll() rather than select(): no limit on descriptor numbers
        self._readable.register(sock, select.POLLIN)
        self._closing = False  # a plain flag: an Event costs an idle client a Condition
        self._parting = ""  # the line given with /quit, for the others
        self._frame_began: float | None = None
        self._echo = False  # the client asked for its own lines back (EchoOwnLines)
        self._gate: contextlib.AbstractContextManager[object] = contextlib.nullcontext()  # see _handshake

    # What the room calls (room.Member).

    def deliver(self, item: Encoded) -> bool:
        return self.outbox.put(item)

    def send_queue_overflowed(self) -> None:
        # IRC's "SendQ exceeded": it does not read, and the others must not
        # wait for it. A goodbye could not reach it either.
        log.warning(
            "%s: send queue over %d bytes: disconnecting a client that does not read",
            self.peer,
            self.limits.sendq_bytes,
        )
        self.abort()

    def close(self, reason: str) -> None:
        """Say goodbye and close (from another thread, for example on shutdown)."""
        self._closing = True
        if not self._sending:
            self.abort()  # no keys yet: nothing can be said
        else:
            self.outbox.close(last=encode(Goodbye(reason)))

    def abort(self) -> None:
        """Cut the connection now; the reader thread wakes up and cleans up."""
        self._closing = True
        self.outbox.close()
        self.outlet.cut()
        with contextlib.suppress(OSError):  # already closed by the peer or by us
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._sending:
            self.server.sender.wake(self.outlet)  # to let go of the socket

    def _wake_sender(self) -> None:
        self.server.sender.wake(self.outlet)

    # The reader thread.

    def handle(self) -> None:
        """The reader thread: handshake, username, then chat, until the end."""
        try:
            self._handshake()
            self._sending = True
            self.server.sender.add(self.outlet)
            self._take_place()
            membership = self._choose_username()
            self._chat(membership)
        except _ClientLeft:
            pass
        except _TurnedAway as exc:
            log.info("%s: %s", self.peer, exc.reason)
            self.close(exc.reason)
        except _DeadlinePassed as exc:
            log.info("%s: timed out %s", self.peer, exc.waiting_for)
            self.close(f"Timed out {exc.waiting_for}.")
        except ProtocolError as exc:
            log.warning("%s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            if not self._closing:
                log.info("%s: connection error: %s", self.peer, exc)
        finally:
            self._finish()

    def _handshake(self) -> None:
        try:
            deadline = _Deadline(self.limits.handshake_timeout, "waiting for the handshake")
            self._gate = self.server.handshaking  # around its cryptography, one handshake at a time
            self.sock.sendall(self.conn.data_to_send())
            event = self._next_event(deadline, flush=True)
            if isinstance(event, ConnectionClosed):
                log.info("%s: closed during the handshake", self.peer)
                raise _ClientLeft()
            if not isinstance(event, HandshakeComplete):
                raise protocol.RemoteProtocolError(f"handshake ended with {event}")
            self._gate = contextlib.nullcontext()
        except (_ClientLeft, _DeadlinePassed, ProtocolError):
            # sshd's PerSourcePenalties: a handshake not finished costs its
            # address more (the server may have spent an RSA decryption).
            if self.ticket is not None:
                self.server.admission.penalize(self.ticket)
            raise
        log.info("%s: handshake complete", self.peer)

    def _take_place(self) -> None:
        """Hold one of the ``max_clients`` places, now that the handshake
        is done (the places are for people, never for connections still in
        their handshake)."""
        if self.ticket is not None and not self.server.admission.establish(self.ticket):
            raise _TurnedAway(server_full(self.limits.max_clients))

    def _choose_username(self) -> Membership:
        deadline = _Deadline(self.limits.username_timeout, "waiting for a username")
        self._tell(self.limits.rate_limit_message())
        self._tell(protocol.UsernameDeadline(min(math.ceil(self.limits.username_timeout), 0xFFFFFFFF)))
        self._tell(UsernameRequest(ASK_USERNAME))
        attempts = 0
        while self.membership is None:
            event = self._next_event(deadline)
            if isinstance(event, Username):
                # Capped: in a cluster each attempt may be a Redis call.
                attempts += 1
                self.membership = self._try_username(event.name, ask_again=attempts < MAX_USERNAME_ATTEMPTS)
                if self.membership is None and attempts >= MAX_USERNAME_ATTEMPTS:
                    raise _TurnedAway(TOO_MANY_USERNAMES)
            elif not self._handle_common(event) and self._within_rate("it was not answered"):
                self._tell(ErrorNotice("Choose a username first."))
        return self.membership

    def _try_username(self, requested: str, ask_again: bool = True) -> Membership | None:
        try:
            name = names.accept(requested)
        except names.NameRefused as refused:
            if ask_again:
                self._tell(UsernameRequest(USERNAME_INVALID.format(reason=refused.reason)))
            return None
        membership = self.room.join(self, name)
        if membership is None:
            if ask_again:
                holder = self._look_alike_holder(name)
                self._tell(UsernameRequest(USERNAME_LOOKS_TAKEN.format(holder=holder) if holder else USERNAME_TAKEN))
        else:
            log.info("%s joined from %s", name, self.peer)
        return membership

    def _chat(self, me: Membership) -> None:
        while True:
            event = self._next_event(deadline=None)
            if isinstance(event, ChatLine):
                self._relay(me, event)
            elif isinstance(event, ActionLine):
                self._relay_action(me, event)
            elif isinstance(event, PrivateLine):
                self._relay_private(me, event)
            elif isinstance(event, NickRequest):
                self._rename(me, event)
            elif isinstance(event, UserListRequest):
                self._list_users()
            elif isinstance(event, Away):
                self._set_away(me, event.message)
            elif isinstance(event, Back):
                self._come_back(me, asked=True)
            elif isinstance(event, Goodbye) and event.reason:
                self._part(event.reason)
            elif not self._handle_common(event) and self._within_rate("it was not answered"):
                self._tell(ErrorNotice(f"{type(event).__name__} is not expected now."))

    def _relay(self, me: Membership, line: ChatLine) -> None:
        self._relay_public(me, ChatMessage(me.name, line.text), "%s: %s", "%s said a line (%d characters)")

    def _relay_action(self, me: Membership, line: ActionLine) -> None:
        self._relay_public(me, ActionMessage(me.name, line.text), "* %s %s", "%s did an action (%d characters)")

    def _relay_public(self, me: Membership, message: ChatMessage | ActionMessage, said: str, counted: str) -> None:
        """A line or action to everyone, if admitted; its text is logged
        only with --log-messages (``said``), else its length (``counted``)."""
        if not self._admit(message.text):
            return
        if self.server.log_messages:
            log.info(said, me.name, printable_text(message.text))
        else:
            log.info(counted, me.name, len(message.text))
        self._come_back(me)
        self.room.publish(message, sender=self._echo_excluded(me))

    def _echo_excluded(self, me: Membership) -> Membership | None:
        """Whom the room leaves out of my line: me, unless I asked for my
        lines back (EchoOwnLines), and then no one, so that my copy comes in
        the room's order."""
        return None if self._echo else me

    def _relay_private(self, me: Membership, line: PrivateLine) -> None:
        if not self._admit(line.text):
            return
        recipient = recipient_name(line.recipient)
        if recipient is None or not self.room.send_private(me, recipient, line.text):
            self._tell(
                ErrorNotice(f"No one called {excerpt(line.recipient, 40)} is online; the private message was not sent.")
            )
            return
        # The text of private lines stays out of the log (the operator could
        # still read it: the server decrypts everything).
        log.info("%s sent a private message to %s", me.name, printable_text(line.recipient))
        away = self.room.away_message(recipient)
        if away is not None and away[0] != me.name:
            self._tell(AwayReply(*away))  # as IRC's RPL_AWAY

    def _rename(self, me: Membership, request: NickRequest) -> None:
        if not self._within_rate("the name was not changed"):
            return
        try:
            name = names.accept(request.name)
        except names.NameRefused as refused:
            self._tell(ErrorNotice(f"That is not a valid username: it {refused.reason}. The name was not changed."))
            return
        if name == me.name:
            self._tell(Notice(f"You are already called {name}."))  # nobody else is told
        elif self.room.rename(me, name):
            log.info("%s: now known as %s", self.peer, name)
        elif holder := self._look_alike_holder(name):
            self._tell(ErrorNotice(f"The username {name} looks the same as {holder}, who is online."))
        else:
            self._tell(ErrorNotice(f"The username {name} is taken."))

    def _look_alike_holder(self, name: str) -> str | None:
        """Who holds a name that looks the same as ``name`` (not merely the
        same in another case), to say so in the refusal."""
        holder = self.room.holder(name)
        return holder if holder is not None and holder.casefold() != name.casefold() else None

    def _list_users(self) -> None:
        # Counted by flood control like every request: building the list
        # costs (a Redis SCAN in a cluster). The client's own request on
        # joining comes with a full bucket.
        if not self._within_rate("the user list was not sent"):
            return
        for message in user_list_messages(self.room.who(), self.room.away_messages()):
            self._tell(message)

    def _set_away(self, me: Membership, message: str) -> None:
        """``/away [MESSAGE]``: shown in /users, and to whoever writes to
        the member privately, until /back or their next line to everyone."""
        if not self._within_rate("you were not marked as away"):
            return
        message = " ".join(message.split())  # one line: no tab or newline in a UserList entry
        if len(message) > MAX_AWAY_LENGTH:
            self._tell(
                ErrorNotice(
                    f"An away message may be {MAX_AWAY_LENGTH} characters long at most; you were not marked as away."
                )
            )
            return
        self.room.set_away(me, message)
        self._tell(Notice(f"You are marked as away: {message}" if message else "You are marked as away."))

    def _come_back(self, me: Membership, asked: bool = False) -> None:
        """``/back``, or (not ``asked``) a line to everyone from someone away."""
        if asked and not self._within_rate("you are still marked as away"):
            return
        if me.away is None:
            if asked:
                self._tell(Notice("You are not marked as away."))
            return
        self.room.set_away(me, None)
        self._tell(Notice("You are back: no longer marked as away."))

    def _part(self, parting: str) -> None:
        """The member leaves with a parting line (sent if it passes the checks)."""
        if self._admit(parting):
            self._parting = parting
        raise _ClientLeft()

    def _admit(self, text: str) -> bool:
        """Whether a line of text from the person may go out; if not, they are
        told why, so that nothing is dropped in silence."""
        if not text.strip():
            self._tell(ErrorNotice("An empty message was not sent."))
            return False
        size = len(text.encode("utf-8"))
        if size > self.limits.max_message_bytes:
            self._tell(
                ErrorNotice(
                    f"The message was not sent: it is {size} bytes long, and the limit is "
                    f"{self.limits.max_message_bytes}."
                )
            )
            return False
        return self._within_rate(f'"{excerpt(text)}" was not sent')

    def _within_rate(self, refused: str) -> bool:
        """Flood control, for every message a client sends after the
        handshake: True if it may be acted on; if not, the member is told (``refused``
        says what did not happen)."""
        wait = self.flood_control.take()
        if wait:
            self._tell(
                ErrorNotice(
                    f"Slow down: {refused}. You can send {self.limits.burst} "
                    f"messages at once, then {self.limits.rate:g} a second; wait {wait:.1f} s."
                )
            )
            return False
        return True

    def _handle_common(self, event: protocol.Event) -> bool:
        """Events with the same meaning at every stage. True if handled."""
        if isinstance(event, (Goodbye, ConnectionClosed)):
            raise _ClientLeft()
        if isinstance(event, MalformedMessage):
            if self._within_rate("it was not answered"):  # reading it cost as much as a line
                self._tell(ErrorNotice(f"Message not understood: {event.reason}."))
            return True
        if isinstance(event, protocol.EchoOwnLines):
            self._echo = True
            self._tell(event)  # the answer: from now on
            return True
        return False

    def _tell(self, message: Message) -> None:
        """Queue a message for this client alone (from its reader thread)."""
        if not self.outbox.put(encode(message)):
            self.send_queue_overflowed()

    def _next_event(self, deadline: _Deadline | None, flush: bool = False) -> protocol.Event:
        """The next event, reading the socket as needed (until ``deadline``,
        and within ``frame_timeout`` of a frame's first byte)."""
        while True:
            with self._gate:
                event = self.conn.next_event()
            if flush:
                self.sock.sendall(self.conn.data_to_send())
            if event is not protocol.NEED_DATA:
                self._frame_began = None
                return event
            self._wait_readable(self._earliest(deadline))
            try:
                data = self.sock.recv(transport.RECV_SIZE)
            except BlockingIOError:
                continue  # the sender made the socket non-blocking; poll() again
            self.conn.receive_data(data)

    def _earliest(self, deadline: _Deadline | None) -> _Deadline | None:
        """The deadline for the next read: the stage's, or the frame's once
        a frame has begun, whichever comes first."""
        if not self.conn.buffered_bytes:
            self._frame_began = None
            return deadline
        if self._frame_began is None:
            self._frame_began = time.monotonic()
        frame = _Deadline(self.limits.frame_timeout, "in the middle of a message", start=self._frame_began)
        return frame if deadline is None or frame.at < deadline.at else deadline

    def _wait_readable(self, deadline: _Deadline | None) -> None:
        """Wait in poll(), not in recv(): an idle reader then holds no receive
        buffer (recv allocates RECV_SIZE before it waits)."""
        timeout = None if deadline is None else max(0.0, deadline.at - time.monotonic()) * 1000
        if not self._readable.poll(timeout) and deadline is not None:
            raise _DeadlinePassed(deadline.waiting_for)

    def _finish(self) -> None:
        if self.membership is not None:
            self.room.leave(self.membership, self._parting)
            log.info("%s left", self.membership.name)
        if self._sending:
            self.outbox.close()  # what is queued still goes out, then the sender lets go
            if not self.outlet.finished.wait(SHUTDOWN_GRACE):
                self.abort()
                self.outlet.finished.wait(SHUTDOWN_GRACE)
            failure = self.outlet.failure
            if isinstance(failure, protocol.RecordLimitError):
                log.info("%s: record limit reached: closing the connection", self.peer)
            elif failure is not None and not self._closing:
                log.info("%s: send failed: %s", self.peer, failure)
        self.abort()
        self.sock.close()  # only now: the sender has let go of it
        self.server.forget(self)


def recipient_name(raw: str) -> str | None:
    """A private line's recipient, to be looked up by its names.key, or
    None if it cannot be a username. Its length is checked first: no longer
    text is normalized, nor made a key to look up (in a cluster, a Redis
    key)."""
    if len(raw) > 4 * protocol.MAX_USERNAME_LENGTH:  # room for what NFC joins
        return None
    name = raw.strip()
    return name if name and name.isprintable() else None


class _ClientLeft(Exception):
    """The client said goodbye or closed the connection: a normal end."""


class _TurnedAway(Exception):
    """The connection is ended by a limit; ``reason`` is its goodbye."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Deadline:
    """A moment by which something must have arrived, and what it is."""

    def __init__(self, seconds: float, waiting_for: str, start: float | None = None) -> None:
        self.at = (time.monotonic() if start is None else start) + seconds
        self.waiting_for = waiting_for


class _DeadlinePassed(Exception):
    def __init__(self, waiting_for: str) -> None:
        super().__init__(waiting_for)
        self.waiting_for = waiting_for


# --- the server --------------------------------------------------------------


class ChatServer:
    """Listens for clients and runs a ``ClientHandler`` thread for each.

    Methods for the caller:
        serve_forever(): accept connections until ``shutdown()``.
        shutdown(): from another thread; returns once the loop has stopped.
        server_close(): tell every client the server is shutting down, close
            the connections and wait for their threads. ``with`` calls it.
        kick(name, reason), notify_all(text): the operator's actions.

    Attributes:
        handler_class: what serves one connection (as socketserver's
            RequestHandlerClass).
        sender_class: the thread that seals and sends for every client
            (sender.py); the benchmark swaps in one that seals a record per
            message, as before batching.
        log_messages: log the text of public lines (off: metadata only).
        handshaking: held by a reader while its connection works out a
            handshake's cryptography (never while it waits for the
            network). One at a time: pycryptodomex lets go of the GIL
            around each of its C calls, so a thousand clients reconnecting
            at once would otherwise run a thousand RSA unwraps side by
            side, all of them slow, handing the GIL round at every call;
            one at a time, each is done in a few milliseconds and the first
            are back in at once (the reconnect storm in docs/benchmarks.md).
    """

    handler_class: type[ClientHandler] = ClientHandler
    sender_class: type[Sender] = Sender
    #: Put the text of public lines and actions in the log (--log-messages);
    #: otherwise only who sent one, and its length.
    log_messages: bool = False

    def __init__(
        self,
        identity_key: crypto_utils.RSA.RsaKey,
        host: str = "0.0.0.0",
        port: int = cli.DEFAULT_PORT,
        limits: Limits = Limits(),
        history: int = DEFAULT_HISTORY,
        motd: str = "",
        cluster: Cluster | None = None,
    ) -> None:
        self.identity = ServerIdentity.of(identity_key)
        self.limits = limits
        self.handshaking: contextlib.AbstractContextManager[object] = threading.Lock()
        self.room = Room(history_size=history, motd=motd, cluster=cluster)
        self.admission = admission.Admission(
            limits.max_clients, limits.max_per_address, limits.handshake_rate, startups=limits.max_startups
        )
        self._refusals = admission.RefusalLog()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._handlers: dict[ClientHandler, threading.Thread] = {}
        self._handlers_lock = threading.Lock()
        self._shutdown_request = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.sender = self.sender_class()
        self.sender.start()
        self.room.cluster.start()

    @property
    def fingerprint(self) -> str:
        """The server key's fingerprint, as clients are shown it."""
        return self.identity.fingerprint

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
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
        self.sender.stop()
        self.room.cluster.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def forget(self, handler: ClientHandler) -> None:
        """Called by a handler's reader thread as its last act."""
        if handler.ticket is not None:  # first: once it is out of the table, its place is free
            self.admission.release(handler.ticket)
        with self._handlers_lock:
            self._handlers.pop(handler, None)

    def connection_count(self) -> int:
        with self._handlers_lock:
            return len(self._handlers)

    def kick(self, name: str, reason: str = "") -> bool:
        """Remove the member called ``name`` from this server: the others
        are told, and the member is told why before the connection closes.
        False if no one of that name is here."""
        membership = self.room.find(name)
        if membership is None:
            return False
        because = f": {reason}" if reason else "."
        self.room.leave(membership, kicked=reason)  # one notice for the others, not a leave after it
        log.info("%s kicked by the operator%s", membership.name, because)
        membership.member.close(f"You were kicked by the operator{because}")
        return True

    def notify_all(self, text: str) -> None:
        """A notice from the operator to every member."""
        self.room.publish(Notice(f"Notice from the operator: {text}"))

    def _accept(self) -> None:
        try:
            sock, address = self._listener.accept()
        except OSError as exc:
            # Out of descriptors, most likely: say so, and retry after a pause
            # rather than spinning.
            log.error("accept failed: %s", exc)
            self._shutdown_request.wait(0.1)
            return
        ticket = self.admission.admit(address[0])
        if isinstance(ticket, admission.Refused):
            self._refuse(sock, address, self._refusal_text(ticket), ticket)
            return
        transport.tune(sock, keepalive=True)
        handler = self.handler_class(self, sock, address, ticket)
        thread = threading.Thread(target=handler.handle, name=f"reader {handler.peer}", daemon=True)
        with self._handlers_lock:
            self._handlers[handler] = thread
        log.info("%s: connected", handler.peer)
        thread.start()

    def _refusal_text(self, refused: admission.Refused) -> str:
        if refused.why is admission.Why.FULL:
            return server_full(self.limits.max_clients)
        return REFUSALS[refused.why].format(
            max_per_address=self.limits.max_per_address, retry_after=max(1.0, refused.retry_after)
        )

    def _refuse(
        self, sock: socket.socket, address: tuple[str, int], reason: str, refused: admission.Refused | None = None
    ) -> None:
        """Turn a connection away at once, without a thread or a key: the
        refusal is one small frame that fits any socket buffer. A flood of
        them is logged a line per address and reason every few seconds."""
        count = 1 if refused is None else self._refusals.note(refused)
        if count:
            more = f" ({count} refused since the last line)" if count > 1 else ""
            log.warning("%s: refused: %s%s", transport.format_address(*address[:2]), reason, more)
        try:
            sock.setblocking(False)
            sock.send(protocol.refusal(reason))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # gone already: nothing to tell
        finally:
            sock.close()


# --- the command line --------------------------------------------------------


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
    _add_limit_options(parser.add_argument_group("limits"))
    _add_cluster_options(parser.add_argument_group("cluster (several servers, one chat, over Redis)"))
    args = parser.parse_args(argv)
    if args.max_message_bytes > MAX_MESSAGE_BYTES_CEILING:
        parser.error(f"--max-message-bytes can be at most {MAX_MESSAGE_BYTES_CEILING} (one frame)")
    if args.cluster:
        from socket_chat.server import cluster  # only now: without --cluster, redis is never imported

        try:
            cluster.check_url(args.cluster)
        except ValueError as exc:
            parser.error(f"--cluster: {exc}")
        if args.cluster != os.environ.get("CHAT_CLUSTER") and cluster.redacted(args.cluster) != args.cluster:
            print(CLUSTER_PASSWORD_ON_COMMAND_LINE, file=sys.stderr)
    return args


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
    group.add_argument(
        "--max-clients",
        type=cli.positive(int, "--max-clients"),
        default=default.max_clients,
        metavar="N",
        help="people at once (connections that finished the handshake); one more is told the server is full "
        f"(default: {default.max_clients})",
    )
    group.add_argument(
        "--max-message-bytes",
        type=cli.positive(int, "--max-message-bytes"),
        default=default.max_message_bytes,
        metavar="BYTES",
        help=f"longest chat line, in bytes of UTF-8 (default: {default.max_message_bytes})",
    )
    group.add_argument(
        "--rate",
        type=rate_type,
        default=default.rate,
        metavar="PER_SECOND",
        help=f"messages a second each person may send, sustained; 0: no limit (default: {default.rate:g})",
    )
    group.add_argument(
        "--burst",
        type=cli.positive(int, "--burst"),
        default=default.burst,
        metavar="N",
        help=f"messages a person may send at once, as when pasting (default: {default.burst})",
    )
    group.add_argument(
        "--sendq",
        type=cli.positive(int, "--sendq"),
        default=default.sendq_bytes,
        dest="sendq_bytes",
        metavar="BYTES",
        help=f"bytes queued for a client that does not read before it is disconnected (default: {default.sendq_bytes})",
    )
    group.add_argument(
        "--max-per-address",
        type=count_type("--max-per-address"),
        default=default.max_per_address,
        metavar="N",
        help="connections at once from one IP address (IPv6: one /64), handshakes included; "
        f"0: no cap (default: {default.max_per_address})",
    )
    group.add_argument(
        "--handshake-rate",
        type=rate_type,
        default=default.handshake_rate,
        metavar="PER_SECOND",
        help="new connections a second from one address, after 10 at once; a handshake not finished counts 3; "
        f"0: no limit (default: {default.handshake_rate:g})",
    )
    group.add_argument(
        "--max-startups",
        type=startups_arg,
        default=default.max_startups,
        metavar="START:RATE:FULL",
        help="connections still in their handshake, as sshd's MaxStartups: from START on, RATE%% of new ones "
        "are refused, rising to all at FULL; N: a hard cap; 0: no cap (these never hold a --max-clients place) "
        f"(default: {default.max_startups})",
    )
    for name, seconds, what in (
        ("handshake", default.handshake_timeout, "to finish the handshake"),
        ("username", default.username_timeout, "to choose a username"),
        ("frame", default.frame_timeout, "to finish a message once begun"),
    ):
        group.add_argument(
            f"--{name}-timeout",
            type=cli.positive(float, f"--{name}-timeout"),
            default=seconds,
            metavar="SECONDS",
            help=f"seconds a client has {what} (default: {seconds:g})",
        )


def rate_type(text: str) -> float:
    """argparse type for --rate: a number of messages a second, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("--rate must be 0 (no limit) or more")
    return value


def count_type(option: str):
    """argparse type: a whole number, 0 (off) or more."""

    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{option} must be a whole number, 0 or more")
        return int(text)

    return parse


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
    """The cluster given with --cluster cannot be joined; the message says why."""


def join_cluster(args: argparse.Namespace) -> RedisCluster | None:
    """The Redis cluster given with --cluster, connected, or None if none was.

    Raises:
        ClusterError: Redis does not answer, or the redis package is missing.
    """
    if not args.cluster:
        return None
    from socket_chat.server import cluster

    try:
        return cluster.RedisCluster.connect(args.cluster, name_ttl=args.cluster_name_ttl)
    except cluster.ClusterUnavailable as exc:
        raise ClusterError(str(exc)) from None


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print("Server is commencing...", flush=True)
    key_path = args.key or keystore.data_dir() / "server_key.pem"
    try:
        motd = read_motd(args.motd)
        key = keystore.load_or_create_identity_key(key_path)
        room_cluster = join_cluster(args)
    except (keystore.KeyFileError, MotdFileError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NO_CLUSTER
    try:
        descriptors.raise_limit(args.max_clients, clustered=room_cluster is not None, handshakes=args.max_startups.full)
    except descriptors.DescriptorLimitError as exc:
        print(exc, file=sys.stderr)
        if room_cluster is not None:
            room_cluster.close()
        return 1
    try:
        server = ChatServer(
            key, args.host, args.port, limits_from(args), history=args.history, motd=motd, cluster=room_cluster
        )
    except OSError as exc:
        print(cannot_listen(args.host, args.port, exc), file=sys.stderr)
        if room_cluster is not None:
            room_cluster.close()
        return 1
    server.log_messages = args.log_messages
    print(f"Listening at {transport.format_address(*server.server_address)}")
    if room_cluster is not None:
        print(f"Cluster: {room_cluster.describe()}")
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


if __name__ == "__main__":
    sys.exit(main())
