"""The chat server: sockets, threads and the room. The protocol is in protocol.py.

Run ``python server.py --help`` for the options. Each connection gets a
reader thread (handshake, username, then the messages it sends) and, once the
handshake is done, a writer thread that seals and sends what the room puts in
its bounded outbox. The room itself knows nothing of sockets.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections import deque
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
HANDSHAKE_TIMEOUT = 10.0  # seconds from connecting to the end of the handshake
USERNAME_TIMEOUT = 120.0  # seconds to choose a name: a person is typing it
MAX_MESSAGE_BYTES = 4096  # of UTF-8 in one chat line; longer ones are refused
OUTBOX_SIZE = 1024  # messages queued for one slow reader before it is cut off
SHUTDOWN_GRACE = 2.0  # seconds to let goodbyes go out on shutdown
DEFAULT_HISTORY = 20  # chat lines and actions a newcomer is shown
MAX_MOTD_BYTES = 4096  # of UTF-8 in the message of the day
RECV_SIZE = 65536

ASK_USERNAME = "Please enter a username."
USERNAME_TAKEN = "That username is taken. Please enter another username."
USERNAME_INVALID = (
    f"Please enter a valid username. A username is 1 to {protocol.MAX_USERNAME_LENGTH}"
    " printable characters."
)
SHUTTING_DOWN = "Server is shutting down."
KICKED = "You were kicked by the operator."

log = logging.getLogger("chat.server")


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
    except (ValueError, IndexError, TypeError) as exc:
        raise KeyFileError(f"Cannot read the server key {path}: {exc}") from None


def _write_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL with mode 0600: the file is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# --- the room ----------------------------------------------------------------


class Room:
    """Who is in the chat, under one lock, and the one order of its messages.

    Members are objects with a ``name`` attribute and a non-blocking
    ``deliver(message)``; the room calls ``deliver`` under its lock, so every
    member's outbox receives the messages in the same order.

    Args:
        history_size: how many recent chat lines and actions a newcomer gets
            (0: none are kept).
        motd: the message of the day, sent on joining ("" for none).
        clock: wall-clock time (for history); monotonic: for time online.
            Tests pin both.
    """

    def __init__(self, history_size: int = DEFAULT_HISTORY, motd: str = "",
                 clock=time.time, monotonic=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, object] = {}  # casefolded name -> member
        self._joined_at: dict[object, float] = {}
        self._history: deque[HistoryMessage] = deque(maxlen=history_size)
        self._motd = motd
        self._clock, self._monotonic = clock, monotonic

    def join(self, member, name: str) -> bool:
        """Give ``member`` the name if nobody has it (case-insensitively);
        then it is welcomed (with the message of the day and the history)
        and everyone else is told. False if taken."""
        with self._lock:
            if name.casefold() in self._members:
                return False
            member.name = name
            self._members[name.casefold()] = member
            self._joined_at[member] = self._monotonic()
            member.deliver(Welcome(name))
            if self._motd:
                member.deliver(Motd(self._motd))
            for message in self._history:  # under the lock: none missed, none twice
                member.deliver(message)
            self._broadcast(UserJoined(name), sender=member)
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
            self._broadcast(UserParted(name, parting) if parting else UserLeft(name), sender=member)

    def broadcast(self, message: Message, sender=None) -> None:
        """Queue ``message`` for every member but ``sender``."""
        with self._lock:
            self._broadcast(message, sender)

    def post(self, message: ChatMessage | ActionMessage, sender) -> None:
        """Broadcast a member's chat line or action and keep it for newcomers."""
        kind = "action" if isinstance(message, ActionMessage) else "chat"
        with self._lock:
            if self._history.maxlen:
                sent_at = str(int(self._clock()))
                self._history.append(HistoryMessage(message.sender, message.text, sent_at, kind))
            self._broadcast(message, sender)

    def send_private(self, sender, recipient: str, text: str) -> bool:
        """Deliver a private line to the member called ``recipient`` (any
        case) and a copy to ``sender`` as its receipt; nobody else sees it.
        False if no one of that name is here."""
        with self._lock:
            target = self._members.get(recipient.casefold())
            if target is None:
                return False
            message = PrivateMessage(sender.name, target.name, text)
            target.deliver(message)
            if target is not sender:
                sender.deliver(message)
            return True

    def rename(self, member, new_name: str) -> bool:
        """Give ``member`` the new name if no one else has it; everyone, the
        member too, is told. False if taken."""
        with self._lock:
            old_name = member.name
            holder = self._members.get(new_name.casefold())
            if holder is not None and holder is not member:
                return False
            del self._members[old_name.casefold()]
            self._members[new_name.casefold()] = member
            member.name = new_name
            self._broadcast(NickChanged(old_name, new_name), sender=None)
            return True

    def find(self, name: str):
        """The member called ``name`` (any case), or None."""
        with self._lock:
            return self._members.get(name.casefold())

    def who(self) -> list[tuple[str, int]]:
        """(name, whole seconds online) of every member, sorted by name."""
        with self._lock:
            now = self._monotonic()
            members = [(m.name, int(now - self._joined_at[m])) for m in self._members.values()]
        return sorted(members, key=lambda entry: entry[0].casefold())

    def names(self) -> list[str]:
        with self._lock:
            return sorted((m.name for m in self._members.values()), key=str.casefold)

    def _broadcast(self, message: Message, sender) -> None:
        for member in self._members.values():
            if member is not sender:
                member.deliver(message)


# --- one connection ----------------------------------------------------------


class _Stop:
    """Put in an outbox: the writer stops after what was queued before it."""


class ClientHandler:
    """One client: its socket, protocol state, outbox and threads.

    The reader thread runs ``handle()``; after the handshake it starts the
    writer thread, the only one that sends from then on.
    """

    def __init__(self, server: "ChatServer", sock: socket.socket, address) -> None:
        self.server = server
        self.sock = sock
        self.peer = _format_address(address)
        self.name: str | None = None
        self.outbox: queue.Queue = queue.Queue(maxsize=OUTBOX_SIZE)
        self.conn = ServerConnection(server.identity_key)
        self._writer: threading.Thread | None = None
        self._closing = threading.Event()
        self._parting = ""  # the line given with /quit, for the others

    # Called by the room, under its lock: must never block.
    def deliver(self, message: Message) -> None:
        if self._closing.is_set():
            return  # on its way out: the writer sends nothing more from the room
        try:
            self.outbox.put_nowait(message)
        except queue.Full:
            log.warning("%s: outbox full, disconnecting a client that does not read", self.peer)
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
        except TimeoutError:
            log.info("%s: timed out", self.peer)
            self.close("Timed out waiting for a username.")
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
            self.abort()
            return
        try:
            self.outbox.put_nowait(Goodbye(reason))
        except queue.Full:
            self.abort()
        self._stop_writer()

    def _stop_writer(self) -> None:
        """The writer sends what is queued, then stops."""
        try:
            self.outbox.put_nowait(_Stop())
        except queue.Full:
            self.abort()

    def abort(self) -> None:
        """Cut the connection now; the reader thread wakes up and cleans up."""
        self._closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer or by us

    # The stages of a connection.

    def _handshake(self) -> None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.sock.sendall(self.conn.data_to_send())
        event = self._next_event(deadline, flush=True)
        if not isinstance(event, HandshakeComplete):
            raise protocol.RemoteProtocolError(f"handshake ended with {event}")
        log.info("%s: handshake complete", self.peer)

    def _choose_username(self) -> None:
        deadline = time.monotonic() + USERNAME_TIMEOUT
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

    def _accept_text(self, text: str) -> bool:
        """The one check of every line of text a member sends to others
        (chat, private, action, parting line): True if it may go out,
        otherwise the member is told why."""
        if not text.strip():
            self.deliver(ErrorNotice("An empty message was not sent."))
            return False
        size = len(text.encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            self.deliver(ErrorNotice(
                f"The message was not sent: it is {size} bytes long, and the limit is {MAX_MESSAGE_BYTES}."
            ))
            return False
        return True

    def _relay(self, line: ChatLine) -> None:
        if not self._accept_text(line.text):
            return
        log.info("%s: %s", self.name, protocol.printable_text(line.text))
        self.server.room.post(ChatMessage(self.name, line.text), sender=self)

    def _relay_action(self, line: ActionLine) -> None:
        if not self._accept_text(line.text):
            return
        log.info("* %s %s", self.name, protocol.printable_text(line.text))
        self.server.room.post(ActionMessage(self.name, line.text), sender=self)

    def _relay_private(self, line: PrivateLine) -> None:
        if not self._accept_text(line.text):
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
        self.deliver(UserList.of(self.server.room.who()))

    def _part(self, parting: str) -> None:
        """The member leaves with a parting line (sent if it passes the checks)."""
        if self._accept_text(parting):
            self._parting = parting
        raise _ClientLeft()

    def kick(self, reason: str) -> None:
        """The operator removes this member: the others are told, and the
        member is told why before the connection closes."""
        because = f": {reason}" if reason else "."
        self.server.room.broadcast(Notice(f"{self.name} was kicked by the operator{because}"), sender=self)
        log.info("%s kicked by the operator%s", self.name, because)
        self.close(f"You were kicked by the operator{because}")

    def _handle_common(self, event) -> bool:
        """Events with the same meaning at every stage. True if handled."""
        if isinstance(event, (Goodbye, ConnectionClosed)):
            raise _ClientLeft()
        if isinstance(event, MalformedMessage):
            self.deliver(ErrorNotice(f"Message not understood: {event.reason}."))
            return True
        return False

    def _next_event(self, deadline: float | None, flush: bool = False):
        """The next event, reading the socket as needed (until ``deadline``)."""
        while True:
            event = self.conn.next_event()
            if flush:
                self.sock.sendall(self.conn.data_to_send())
            if event is not protocol.NEED_DATA:
                return event
            if deadline is not None:
                _wait_readable(self.sock, deadline - time.monotonic())
            self.conn.receive_data(self.sock.recv(RECV_SIZE))

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"writer {self.peer}", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        """The writer thread: seal and send each queued message, in order."""
        try:
            while not isinstance(message := self.outbox.get(), _Stop):
                self.conn.send(message)
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
            if not self._closing.is_set():
                self._stop_writer()
            self._writer.join(SHUTDOWN_GRACE)
        self.abort()
        self.sock.close()
        self.server.forget(self)


class _ClientLeft(Exception):
    """The client said goodbye or closed the connection: a normal end."""


def _wait_readable(sock: socket.socket, timeout: float) -> None:
    # poll() rather than select(): it has no limit on descriptor numbers.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if timeout <= 0 or not poller.poll(timeout * 1000):
        raise TimeoutError


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
                 history: int = DEFAULT_HISTORY, motd: str = "") -> None:
        self.identity_key = identity_key
        self.fingerprint = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
        self.room = Room(history_size=history, motd=motd)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self._listener.getsockname()[:2]
        self._handlers: dict[ClientHandler, threading.Thread] = {}
        self._handlers_lock = threading.Lock()
        self._shutdown_request = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()

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
        # Every sendall is a whole message: don't let Nagle hold it back
        # waiting for an ACK (that costs a delayed-ACK wait, ~40 ms, per turn).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = ClientHandler(self, sock, address)
        thread = threading.Thread(target=handler.handle, name=f"reader {handler.peer}", daemon=True)
        with self._handlers_lock:
            self._handlers[handler] = thread
        log.info("%s: connected", handler.peer)
        thread.start()


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

    def _help(self, argument: str) -> list[str]:
        return [f"{(c.name + ' ' + c.arguments).strip():<22} {c.help}" for c in self.commands.values()]

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
    server.shutdown()


# --- the command line --------------------------------------------------------


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Encrypted terminal group chat: the server.")
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
    return parser.parse_args(argv)


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
        server = ChatServer(key, args.host, args.port, history=args.history, motd=motd)
    except (KeyFileError, MotdFileError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Cannot listen at {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"Listening at {_format_address(server.server_address)}")
    print(f"Server key fingerprint: {server.fingerprint}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.stdin.isatty():
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
