"""The chat client: its socket, its threads and its command line.

Run ``python client.py --help`` for the options. The main thread reads what
the person types and sends it; a receiver thread reads the socket and prints.
What a typed line means is client_ui.py's business, the printing
terminal.py's, the check of the server's key keystore.py's. Everything that
came over the network passes ``presentation.printable_text`` before it
reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from socket_chat import cli, protocol, transport
from socket_chat import crypto as crypto_utils
from socket_chat.chat.limits import Pacer
from socket_chat.chat.presentation import printable_text
from socket_chat.client import config as client_config
from socket_chat.client import ui as client_ui
from socket_chat.client.ui import Session, Style
from socket_chat.crypto import keystore
from socket_chat.protocol import (
    ActionLine,
    ChatLine,
    ClientConnection,
    ConnectionClosed,
    EchoOwnLines,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    HistoryMessage,
    Motd,
    NickRequest,
    PrivateLine,
    ProtocolError,
    RateLimit,
    RemoteProtocolError,
    ServerHello,
    ServerRefused,
    UserList,
    UserListRequest,
    Username,
    UsernameDeadline,
    UsernameRequest,
    Welcome,
)
from socket_chat.tty import Display, Terminal

DEFAULT_HOST = "127.0.0.1"
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
HELLO_TIMEOUT = 5.0  # a chat server greets at once: this long in silence, and it is not one
CLOSE_GRACE = 2.0  # seconds to wait for the server to see our goodbye
CHAT_PROMPT = "> "
USERNAME_PROMPT = "Username: "
CONNECTION_LOST = "Connection to server lost."
SERVER_SHUTTING_DOWN = "Server is shutting down."  # server.SHUTTING_DOWN: it may be back soon
RECONNECTING = "Reconnecting (Ctrl-C or /quit to leave)..."
RECONNECT = -1  # converse(): the server went away; come back
RECONNECT_FIRST = 1.0  # seconds before the first try, then twice as long each time...
RECONNECT_LONGEST = 30.0  # ...up to this; each wait is spread by +-50 % (jitter)
NAME_RETRY = 60.0  # seconds to try for one's name again: the server may hold it for a dead connection
RECORDS_USED_UP = (
    "This connection has carried as many messages as its keys may protect (2^24): leaving. "
    "Connect again to go on, with new keys."
)
# How the receiver wakes the main thread from input(). Not SIGINT: a job
# started in the background by a script has SIGINT ignored from the start.
WAKE_SIGNAL = signal.SIGUSR1
WAKE_REPEAT = 0.1  # seconds between wake-ups until the main thread has one


class ClientError(Exception):
    """Ends the client with a message for the person and a non-zero status."""


class ServerEnded(Exception):
    """Raised in the main thread when the receiver finds the session over."""


# --- the connection ----------------------------------------------------------


class ServerLink:
    """The socket and the protocol state, with one lock for sending."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = ClientConnection()
        self._send_lock = threading.Lock()
        self._pacer: Pacer | None = None
        self.rate_limit: RateLimit | None = None
        self.on_hold: Callable[[], None] | None = None  # a line must wait for the rate limit
        #: The server told its username deadline: it is of a version that
        #: echoes a member's own lines on request (PROTOCOL.md, 0x20 on).
        self.server_echoes_on_request = False

    def next_event(self) -> protocol.Event:
        """The next event, reading as needed. What the handshake writes by
        itself is sent before waiting for more. The server's rate limit is
        kept here, not returned."""
        while True:
            while (event := self.conn.next_event()) is protocol.NEED_DATA:
                self.flush()
                self.conn.receive_data(self.sock.recv(transport.RECV_SIZE))
            self.flush()
            if not isinstance(event, RateLimit):
                return event
            self._pacer = Pacer(event)
            self.rate_limit = event

    def send_paced(self, message: protocol.Message) -> None:
        """Send a message the server counts against its rate limit, first
        waiting as long as the limit asks (``on_hold()`` is called before a
        wait)."""
        if self._pacer is not None:
            delay = self._pacer.delay()
            if delay and self.on_hold is not None:
                self.on_hold()
            time.sleep(delay)
        self.send(message)

    def flush(self) -> None:
        with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                self.sock.sendall(data)

    def send(self, message: protocol.Message) -> None:
        with self._send_lock:
            self.conn.send(message)
            self.sock.sendall(self.conn.data_to_send())


def connect(host: str, port: int) -> ServerLink:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ClientError(
            f"Could not connect to {transport.format_address(host, port)}: {exc.strerror or exc}"
        ) from None
    transport.tune(sock)
    return ServerLink(sock)


Trusted = TypeVar("Trusted")


def establish(link: ServerLink, trust: Callable[[ServerHello], Trusted], server: str = "The server") -> Trusted:
    """Run the handshake with ``server`` (``HOST:PORT``, for messages).

    ``trust(ServerHello)`` checks the key before anything is sent, and
    raises to refuse it. What it returns is returned once the handshake is
    complete: only then has the server proved it holds the key (key
    confirmation), so only then may a new key be recorded.

    Raises:
        ClientError: the server turned the connection away, or is not a chat
            server at all (it said nothing, or something else).
        RemoteProtocolError: the handshake failed.
    """
    hello = read_hello(link, server)
    if isinstance(hello, ServerRefused):
        raise ClientError(refusal_text(hello.reason))
    if not isinstance(hello, ServerHello):
        raise RemoteProtocolError("expected the server's hello, but the connection was closed")
    trusted = trust(hello)
    link.conn.accept_server_key()
    link.flush()
    event = link.next_event()
    if not isinstance(event, HandshakeComplete):
        raise RemoteProtocolError(f"handshake ended with {event}")
    link.sock.settimeout(None)
    return trusted


def read_hello(link: ServerLink, server: str) -> protocol.Event:
    """The server's first event: its hello, a refusal, or the end.

    A chat server sends its hello the moment it accepts, and it is the first
    thing on the wire; so silence for ``HELLO_TIMEOUT``, or first bytes that
    cannot begin a hello, mean this is some other program (a web server
    waits for the client to speak first). Say so at once, with what it sent.
    """
    link.sock.settimeout(HELLO_TIMEOUT)
    first = b""
    try:
        while (event := link.conn.next_event()) is protocol.NEED_DATA:
            data = link.sock.recv(transport.RECV_SIZE)
            first = first or data
            link.conn.receive_data(data)
            link.sock.settimeout(HANDSHAKE_TIMEOUT)
    except TimeoutError:
        if first:
            raise
        raise ClientError(
            f"{server} accepted the connection but said nothing for {HELLO_TIMEOUT:g} s, "
            "while a chat server greets at once: it is not a chat server (or it is overloaded)."
        ) from None
    except RemoteProtocolError:
        if protocol.may_be_server_greeting(first):
            raise  # a chat server, of a version or form this client cannot read
        raise ClientError(f"{server} is not a chat server (it answered with {quote_bytes(first)}).") from None
    link.sock.settimeout(HANDSHAKE_TIMEOUT)
    return event


def quote_bytes(data: bytes, length: int = 60) -> str:
    """The start of what a program sent, quoted and printable: ``"HTTP/1.1 400 Bad Request\\r\\n"``."""
    shown = repr(data[:length])[2:-1].replace('"', '\\"')
    return f'"{shown}..."' if len(data) > length else f'"{shown}"'


#: How much of a refusal's reason is shown: it is not authenticated.
MAX_REFUSAL_SHOWN = 80


def refusal_text(reason: str) -> str:
    """What the person is told when the server turns the connection away.

    The refusal comes before any key, so anyone on the path could have
    written it: the client says what happened in its own words, and shows
    at most the start of the reason, labelled as the server's and
    unverified, so that a forged one cannot pass for advice from the client.
    """
    words = " ".join(printable_text(reason).split())
    if len(words) > MAX_REFUSAL_SHOWN:
        words = words[: MAX_REFUSAL_SHOWN - 1] + "\N{HORIZONTAL ELLIPSIS}"
    text = (
        "The server turned the connection away before the handshake (it does so when it is full or busy,"
        " or when too many connections come from one address). Try again later."
    )
    return f"{text}\n(The server's words, unverified: {words})" if words else text


def trust_server(link: ServerLink, args: argparse.Namespace, terminal: Terminal) -> None:
    """The handshake, with the server's key checked against the pin or
    known hosts. A key seen for the first time is shown and, on a terminal
    (unless --accept-new), accepted by the person, as ssh does; it is
    recorded only once the handshake has proved the server holds it."""
    known = keystore.KnownHosts(args.known_hosts or keystore.data_dir() / "known_hosts")
    server = transport.format_address(args.host, args.port)

    def check(hello: ServerHello) -> keystore.KeyCheck:
        return keystore.check_server_key(known, server, hello.fingerprint, args.fingerprint)

    checked = establish(link, check, server)
    ask = checked.first_contact and terminal.interactive and not args.accept_new
    if ask:
        confirm_new_key(terminal, checked)
    note = keystore.record_server_key(known, checked, confirmed=ask)
    if note:
        terminal.show(note)


FINGERPRINT_PATTERN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
CONFIRM_PROMPT = "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
CONFIRM_AGAIN = "Please type 'yes', 'no' or the fingerprint: "


def confirm_new_key(terminal: Terminal, checked: keystore.KeyCheck) -> None:
    """Ask the person to accept a key seen for the first time, as ssh does:
    ``yes``, ``no``, or the fingerprint pasted in (compared for them).

    Raises:
        ClientError: not accepted (``no``, another fingerprint, end of input).
    """
    terminal.show(f"The authenticity of {checked.server} can't be established: this is the first connection to it.")
    terminal.show(f"Its key fingerprint is {checked.offered}.")
    terminal.show("Check it with the server's operator (the server prints it when it starts).")
    prompt = CONFIRM_PROMPT
    while True:
        try:
            answer = terminal.read_line(prompt, remember=False).strip().rstrip(".")  # no chat line to recall
        except EOFError:
            answer = "no"
        if answer.lower() == "yes":
            return
        if answer.lower() == "no":
            raise ClientError("Not connected: the server's key was not accepted. Nothing was recorded.")
        if FINGERPRINT_PATTERN.fullmatch(answer):
            if crypto_utils.fingerprints_equal(answer, checked.offered):
                return
            raise ClientError(
                f"Not connected: the fingerprint you gave ({answer}) is not the server's ({checked.offered}).\n"
                "Someone may be intercepting this connection. Nothing was recorded."
            )
        prompt = CONFIRM_AGAIN


def choose_username(link: ServerLink, display: Display, preset: str | None) -> str | None:
    """Answer the server's username requests until one is accepted.

    ``preset`` (from --name) is tried first, without showing the first
    request. On a terminal a refused name is asked for again; on a pipe, a
    refusal ends the client, so that a script never has a chat line taken
    for a username. None if input ended first. If the server tells its
    deadline (UsernameDeadline), a person at the prompt is warned before it
    passes and told at once when it has.
    """
    terminal = display.terminal
    attempts = 0
    deadline: float | None = None
    while True:
        event = link.next_event()
        if isinstance(event, Welcome):
            return event.name
        if isinstance(event, Goodbye):
            raise ClientError(printable_text(event.reason) or CONNECTION_LOST)
        if isinstance(event, ConnectionClosed):
            raise ClientError(CONNECTION_LOST)
        if isinstance(event, UsernameDeadline):
            deadline = time.monotonic() + event.seconds
        if note_server_terms(event, link, display):
            continue
        if not isinstance(event, UsernameRequest):
            display.show_event(event)
            continue
        prompt = printable_text(event.prompt)
        if attempts and not terminal.interactive:
            raise ClientError(f"{prompt}\nThe username was refused and input is not a terminal: giving up.")
        if attempts == 0 and preset is not None:
            name = preset
        else:
            terminal.show(prompt)
            try:
                name = read_username(link, terminal, deadline)
            except EOFError:
                return None
        if attempts == 0 and link.server_echoes_on_request and terminal.interactive:
            link.send(EchoOwnLines())  # show my lines as the others see them
        attempts += 1
        link.send(Username(name))


def note_server_terms(event: protocol.Event, link: ServerLink, display: Display) -> bool:
    """Keep what the server says of itself before the username: it tells
    its deadline (so it echoes on request), and it agreed to echo. True if
    ``event`` was one of those."""
    if isinstance(event, UsernameDeadline):
        link.server_echoes_on_request = True
        return True
    if isinstance(event, EchoOwnLines):
        display.session.echoed = True
        return True
    return False


class ServerSpoke(Exception):
    """Raised in the main thread, waiting at the username prompt, when the
    server has sent something (it says goodbye: the deadline has passed)."""


def read_username(link: ServerLink, terminal: Terminal, deadline: float | None) -> str:
    """The name typed; meanwhile a watcher warns before ``deadline`` and, if
    the server speaks first, wakes the prompt (ServerSpoke) so that what it
    said is shown at once, not after Enter."""
    if deadline is None or not terminal.interactive:
        return terminal.read_line(USERNAME_PROMPT, remember=False)
    watcher = DeadlineWatcher(link.sock, terminal, deadline)

    def wake(signum, frame) -> None:
        if watcher.listening.is_set():
            raise ServerSpoke

    previous = signal.signal(WAKE_SIGNAL, wake)
    watcher.listening.set()
    watcher.start()
    try:
        try:
            return terminal.read_line(USERNAME_PROMPT, remember=False)  # not a line to recall
        finally:
            watcher.listening.clear()
            watcher.stop()
    except ServerSpoke:
        event = link.next_event()  # what it said: a goodbye, normally
        if isinstance(event, Goodbye):
            raise ClientError(printable_text(event.reason) or CONNECTION_LOST) from None
        raise ClientError(CONNECTION_LOST) from None
    finally:
        signal.signal(WAKE_SIGNAL, previous)


#: Seconds before the username deadline that a person is warned (at most
#: half the time given).
DEADLINE_WARNING = 15.0


class DeadlineWatcher(threading.Thread):
    """While the person types a username: warns ``DEADLINE_WARNING`` seconds
    before the deadline, and wakes the main thread when the socket has
    something to read (the server only speaks then to say goodbye)."""

    def __init__(self, sock: socket.socket, terminal: Terminal, deadline: float) -> None:
        super().__init__(name="username deadline", daemon=True)
        self.sock, self.terminal, self.deadline = sock, terminal, deadline
        self.listening = threading.Event()  # the main thread may be woken
        self._main_thread = threading.get_ident()
        self._stop_reading, self._stop_writing = os.pipe()

    def run(self) -> None:
        left = self.deadline - time.monotonic()
        warn_at = self.deadline - min(DEADLINE_WARNING, left / 2)
        warned = False
        while True:
            wait = None if warned else max(0.0, warn_at - time.monotonic())
            readable, _, _ = select.select([self.sock.fileno(), self._stop_reading], [], [], wait)
            if self._stop_reading in readable:
                return
            if readable:
                self._wake_main_thread()
                return
            if not warned:
                warned = True
                seconds = round(self.deadline - time.monotonic())
                self.terminal.show(f"{seconds} seconds left to choose a username: then the server hangs up.")

    def _wake_main_thread(self) -> None:
        # As the Receiver does: repeat until the main thread stops reading.
        while self.listening.is_set():
            signal.pthread_kill(self._main_thread, WAKE_SIGNAL)
            time.sleep(WAKE_REPEAT)

    def stop(self) -> None:
        os.write(self._stop_writing, b"x")
        self.join()
        os.close(self._stop_reading)
        os.close(self._stop_writing)


class Receiver(threading.Thread):
    """Reads the socket and prints what arrives, until the connection ends.

    If the server ends the session (Goodbye, EOF, or an error) while the
    person has not asked to leave, it says so and wakes the main thread,
    which is waiting for input, with ServerEnded.
    """

    def __init__(self, link: ServerLink, display: Display, reconnect: bool = False) -> None:
        super().__init__(name="receiver", daemon=True)
        self.reconnect = reconnect
        self.link = link
        self.display = display
        self.terminal = display.terminal
        self._end_lock = threading.Lock()
        self._leaving = False
        self.ended_by_server = False
        self.reading_done = threading.Event()  # the main thread reads no more
        self.reconnectable = False  # the end was the server's, and worth coming back from
        self.typed = ""  # the line being typed when the server ended
        self._end_reason = ""  # what to tell the person, by report_end
        self._reported = False
        self._main_thread = threading.get_ident()  # made by the main thread, which it wakes

    def run(self) -> None:
        try:
            while not isinstance(event := self.link.next_event(), (Goodbye, ConnectionClosed)):
                self.display.show_event(event)
            reason = CONNECTION_LOST
            if isinstance(event, Goodbye) and event.reason:
                reason = printable_text(event.reason)
        except (OSError, ProtocolError):
            reason = CONNECTION_LOST
            event = None
        # The server went away (lost, or restarting): come back on our own,
        # on a terminal. Any other goodbye (a kick) is meant.
        self.reconnectable = self.reconnect and (not isinstance(event, Goodbye) or event.reason == SERVER_SHUTTING_DOWN)
        self._server_ended(f"{reason} {RECONNECTING}" if self.reconnectable else reason)

    def report_end(self) -> None:
        """In the main thread: tell the person the server ended the session
        (once), keeping the line being typed for after a reconnection."""
        with self._end_lock:
            if self._reported or not self.ended_by_server:
                return
            self._reported = True
        self.typed = self.terminal.typed_text()
        self.terminal.error(self._end_reason)

    def leave(self) -> bool:
        """Claim the end for the person. False if the server ended first."""
        with self._end_lock:
            self._leaving = not self.ended_by_server
            return self._leaving

    def _server_ended(self, reason: str) -> None:
        with self._end_lock:
            if self._leaving:
                return
            self.ended_by_server = True
            self._end_reason = reason
        # The main thread says so (report_end), when woken: only the thread
        # in readline may change readline's line (from here, while it
        # handles a pasted key, glibc has aborted the process).
        # CPython's readline acts on a signal only if it interrupts its wait
        # for a key; one that lands while it handles a key is noted and then
        # forgotten. So repeat it until the main thread has stopped reading.
        while True:
            signal.pthread_kill(self._main_thread, WAKE_SIGNAL)
            if self.reading_done.wait(WAKE_REPEAT):
                return


def converse(link: ServerLink, display: Display, reconnect: bool = False) -> int:
    """The chat itself: the main thread reads and sends, a Receiver prints.
    RECONNECT if the server went away and ``reconnect`` asks to come back."""
    terminal = display.terminal
    receiver = Receiver(link, display, reconnect)
    wakeable = threading.Event()  # set while the main thread may be woken

    def wake(signum, frame) -> None:
        # Raised on every repeat until the main thread stops listening: one
        # raised inside a readline hook (prompt drawing, Tab) is swallowed
        # by readline, and the next one must still get through.
        if wakeable.is_set():
            receiver.report_end()  # here, between two keys if readline reads
            raise ServerEnded

    signal.signal(WAKE_SIGNAL, wake)
    interrupt = signal.getsignal(signal.SIGINT)
    wakeable.set()
    try:
        try:
            receiver.start()
            parting = send_typed_lines(link, display)
        finally:
            wakeable.clear()  # a wake-up raised before this line is caught below
    except ServerEnded:
        parting = None
    person_left = parting is not None
    # From here on, a late wake-up or Ctrl-C must not become a traceback.
    signal.signal(WAKE_SIGNAL, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    receiver.reading_done.set()
    if not person_left:
        receiver.join(CLOSE_GRACE)  # it saw the failure too: let it note why
    if not receiver.leave():
        # The server ended the session: say so (if the wake-up has not).
        receiver.report_end()
        if receiver.reconnectable and person_left:
            return 0  # they left as it went: nothing to come back to
        if receiver.reconnectable:
            terminal.start_next_line_with(receiver.typed)
            signal.signal(signal.SIGINT, interrupt)  # Ctrl-C leaves at once while it tries
            return RECONNECT
        return 1
    if parting is None:
        terminal.error(CONNECTION_LOST)
        return 1
    say_goodbye(link, parting)
    receiver.join(CLOSE_GRACE)
    return 0


class TypedLines:
    """What the person typed or pasted, a line at a time. While the client
    paces its lines, the rest of a paste is read ahead (the backlog) so that
    the person can be told how many wait, and which were not sent if they
    stop it; it comes before whatever the terminal gives next."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.backlog: deque[str] = deque()
        self.current: str | None = None  # the line being acted on, not yet sent
        self._partial = ""  # read ahead after the last line end: the line being typed
        self._ended = False
        self._announced = False

    def next(self) -> str:
        if self.backlog:
            self.current = self.backlog.popleft()
            return self.current
        self._announced = False
        if self._ended:
            raise EOFError
        if self._partial:
            self.terminal.start_next_line_with(self._partial)
            self._partial = ""
        self.current = self.terminal.read_line(CHAT_PROMPT)
        return self.current

    def read_ahead(self) -> None:
        text, ended = self.terminal.pending_input()
        *lines, self._partial = (self._partial + text).split("\n")
        self.backlog.extend(lines)
        self._ended |= ended

    def held_back(self, display: Display, limit: RateLimit | None) -> None:
        """The line being sent must wait for the server's rate: read the
        paste ahead and say once how many lines wait, and why."""
        self.read_ahead()
        if self.backlog and not self._announced and limit is not None and limit.interval_ms:
            self._announced = True
            waiting = len(self.backlog) + 1
            display.show(
                display.style.notice(
                    f"* Sending {waiting} more lines: the server allows {1000 / limit.interval_ms:g} a second."
                )
            )

    def unsent(self) -> list[str]:
        return ([self.current] if self.current is not None else []) + list(self.backlog)


def report_unsent(display: Display, unsent: list[str], why: str = "") -> None:
    """Say exactly which lines were not sent (a paste stopped by Ctrl-C,
    lines typed while not connected)."""
    if not unsent:
        return
    first, last = (f"\u201c{printable_text(line)}\u201d" for line in (unsent[0], unsent[-1]))
    which = first if len(unsent) == 1 else f"{len(unsent)} lines, from {first} to {last}"
    display.show(display.style.notice(f"* Not sent{f' ({why})' if why else ''}: {which}."))


def send_typed_lines(link: ServerLink, display: Display) -> str | None:
    """Act on each line typed (client_ui.run_line) until the person leaves
    (the parting line, "" for none) or sending fails (None). The receiver
    ends it with ServerEnded when the server is gone."""
    lines = TypedLines(display.terminal)
    link.on_hold = lambda: lines.held_back(display, getattr(link, "rate_limit", None))

    def toggle_bell() -> bool:
        display.bell = not display.bell
        return display.bell

    context = client_ui.Context(
        session=display.session,
        send=lambda message: send_message(link, display, message),
        show=display.show,
        error=display.error,
        toggle_bell=toggle_bell if display.terminal.interactive else None,
    )
    try:
        while True:
            client_ui.run_line(lines.next(), context)
            lines.current = None
    except client_ui.QuitRequested as request:
        return request.message
    except protocol.RecordLimitError:
        display.terminal.error(RECORDS_USED_UP)
        return ""  # the last record this direction may carry is the Goodbye
    except KeyboardInterrupt:
        report_unsent(display, lines.unsent())
        return ""
    except EOFError:
        return ""
    except (OSError, ProtocolError):
        return None


#: What the server's flood control counts (see server.py): these wait for
#: the pacer; the user list does not.
PACED_MESSAGES = (ChatLine, PrivateLine, ActionLine, NickRequest, protocol.Away)


def send_message(link: ServerLink, display: Display, message: protocol.Message) -> None:
    try:
        if isinstance(message, PACED_MESSAGES):
            link.send_paced(message)
        else:
            link.send(message)
    except protocol.RecordLimitError:
        raise  # the connection must end: send_typed_lines ends it
    except protocol.LocalProtocolError as exc:
        # Our own refusal (text that is not valid Unicode, too long for a
        # frame): the connection is fine, the line is not.
        display.terminal.error(f"Not sent: {exc}.")


def say_goodbye(link: ServerLink, parting: str = "") -> None:
    """Leave on purpose: Goodbye (with the parting line, if any), then
    half-close so the server sees it all."""
    try:
        if parting:
            link.send_paced(Goodbye(parting))  # the server's flood control counts a parting line
        else:
            link.send(Goodbye(parting))
        link.sock.shutdown(socket.SHUT_WR)
    except (OSError, ProtocolError):
        pass  # the server is gone already; there is no one to tell


# --- the command line --------------------------------------------------------


def fingerprint_text(text: str) -> str:
    """argparse type: a fingerprint as the server prints it."""
    if not FINGERPRINT_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fingerprint: expected SHA256: and 43 base64 characters, as the server prints it"
        )
    return text


#: The options with a --no- form (the settings file may turn them either way).
ON_OFF_OPTIONS = (
    ("--color", True, "colours on a terminal (--no-color: none; also none when NO_COLOR is set, or off a terminal)"),
    ("--timestamps", False, "start each line shown with the time, HH:MM"),
    ("--bell", None, "ring the bell when you are mentioned or sent a private message (default: on a terminal)"),
    ("--reconnect", True, "on a terminal, when the connection is lost or the server restarts, connect again"),
    ("--history-file", True, "keep the lines typed for the next run, in $XDG_DATA_HOME/socket-chat/history (0600)"),
)


def parse_args(argv: list[str] | None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """The options: client.conf gives the defaults, the command line wins."""
    parser = argparse.ArgumentParser(description="Encrypted terminal group chat: the client.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default: {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=cli.port_number, default=cli.DEFAULT_PORT, help=f"server port (default: {cli.DEFAULT_PORT})"
    )
    parser.add_argument("--name", help="join with this username instead of being asked")
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256:...",
        type=fingerprint_text,
        help="the server key fingerprint to insist on, even on the first connection",
    )
    parser.add_argument(
        "--accept-new",
        action="store_true",
        help="record a server key seen for the first time without asking (as without a terminal)",
    )
    parser.add_argument(
        "--known-hosts",
        type=Path,
        default=None,
        help="file of trusted server keys (default: $XDG_DATA_HOME/socket-chat/known_hosts)",
    )
    for option, default, meaning in ON_OFF_OPTIONS:
        parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default, help=meaning)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the command lines as they are
    path = client_config.config_path(environ)
    parser.epilog = (
        f"settings file: {path} ([client]: host, port, name, color, timestamps, bell, reconnect, history-file)\n"
        "commands in the chat:\n" + "\n".join(f"  {line}" for line in client_ui.help_lines())
    )
    cli.add_version(parser)
    try:
        parser.set_defaults(**client_config.read_config(path))
    except client_config.ConfigError as exc:
        parser.error(str(exc))
    return parser.parse_args(argv)


def make_display(args: argparse.Namespace, terminal: Terminal) -> Display:
    on_terminal = sys.stdout.isatty()
    colour = client_ui.colour_wanted(not args.color, os.environ, on_terminal)
    bell = on_terminal if args.bell is None else args.bell and on_terminal
    return Display(terminal, Session(), Style(colour), timestamps=args.timestamps, bell=bell)


def run(args: argparse.Namespace, terminal: Terminal) -> int:
    terminal.show("Trying to connect server...")
    link = connect(args.host, args.port)
    terminal.show("Connected to server.")
    try:
        trust_server(link, args, terminal)
        terminal.show("Encryption is established.")
        display = make_display(args, terminal)
        name = choose_username(link, display, args.name)
        if name is not None:
            start_session(link, display, name)
    except TimeoutError:
        raise ClientError("The server did not complete the handshake in time.") from None
    except ProtocolError as exc:
        raise ClientError(f"The handshake with the server failed: {exc}") from None
    except OSError:
        raise ClientError(CONNECTION_LOST) from None
    if name is None:
        say_goodbye(link)
        return 0
    comes_back = args.reconnect and terminal.interactive
    status = converse(link, display, comes_back)
    while status == RECONNECT:
        reconnected = reconnect(args, display)
        if reconnected is None:
            return 0  # the person left while it tried
        status = converse(reconnected, display, comes_back)
    return status


def reconnect(args: argparse.Namespace, display: Display) -> ServerLink | None:
    """Connect again, with waits that double (with jitter, so that everyone
    cut off at once does not come back at once), and take back the name;
    show what was said meanwhile. None if the person left meanwhile (/quit,
    end of input). A changed server key ends it, loudly, as on the first
    connection (keystore.ServerKeyRefused)."""
    terminal, name = display.terminal, display.session.own_name
    wait, name_taken_since = RECONNECT_FIRST, None
    while True:
        if wait_or_leave(display, wait * random.uniform(0.5, 1.5)):
            return None
        wait = min(wait * 2, RECONNECT_LONGEST)
        try:
            link = connect(args.host, args.port)
        except ClientError:
            continue  # not back yet
        try:
            trust_server(link, args, terminal)
            if take_back_name(link, display, name):
                start_session(link, display, name, resumed=True)
                display.show(display.style.notice(f"* Reconnected as {name}."))
                return link
            name_taken_since = name_taken_since or time.monotonic()
            if time.monotonic() - name_taken_since > NAME_RETRY:
                raise ClientError(f"Reconnected, but the name {name} stays taken: giving up.")
        except (ClientError, OSError, ProtocolError):
            pass
        with contextlib.suppress(OSError):
            link.sock.close()


def wait_or_leave(display: Display, seconds: float) -> bool:
    """Wait ``seconds`` between tries; True if the person typed /quit (or
    ended input) meanwhile. Other lines typed cannot be sent now: say so."""
    terminal = display.terminal
    if not terminal.interactive:
        time.sleep(seconds)
        return False
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sys.stdin], [], [], left)[0]:
            break
        text, ended = terminal.pending_input()
        *lines, rest = text.split("\n")
        terminal.start_next_line_with(rest)
        if ended or any(line.strip().split(" ")[0] == "/quit" for line in lines):
            return True
        report_unsent(display, [line for line in lines if line.strip()], "not connected")
    return False


def take_back_name(link: ServerLink, display: Display, name: str) -> bool:
    """Join again as ``name``; False if the server has it still taken."""
    asked = False
    while True:
        event = link.next_event()
        if isinstance(event, Welcome):
            return True
        if note_server_terms(event, link, display):
            continue
        if isinstance(event, UsernameRequest):
            if asked:
                return False  # asked again: refused
            if link.server_echoes_on_request:
                link.send(EchoOwnLines())
            asked = True
            link.send(Username(name))
        elif isinstance(event, (Goodbye, ConnectionClosed)):
            raise ClientError(CONNECTION_LOST)


def start_session(link: ServerLink, display: Display, name: str, resumed: bool = False) -> None:
    """Joined as ``name``: learn (quietly) who is online before the first
    line is read, so that ``/msg`` knows names with spaces and tab completes
    them. What comes first (message of the day, history) is shown; when
    ``resumed`` after a reconnection, only the history not seen before."""
    display.session.observe(Welcome(name))
    display.session.user_list_requested(show=False)
    link.send(UserListRequest())
    history: list[HistoryMessage] = []
    while not isinstance(event := link.next_event(), UserList):
        if isinstance(event, Goodbye):
            raise ClientError(printable_text(event.reason) or CONNECTION_LOST)
        if isinstance(event, ConnectionClosed):
            raise ClientError(CONNECTION_LOST)
        if resumed and isinstance(event, HistoryMessage):
            history.append(event)
            continue
        if not (resumed and isinstance(event, Motd)):  # seen on joining first
            display.show_event(event)
        if isinstance(event, ErrorNotice):
            break  # a server without user lists: chat without completion
    else:
        display.show_event(event)  # not shown: it only fills the session
    for missed in display.session.unseen(history):
        display.show_event(missed)
    display.terminal.enable_completion(display.session.names)
    # The server shows my lines as the others see them: the typed one goes.
    display.terminal.erase_entered = display.session.echoed


def _terminated(signum, frame) -> None:
    # kill's SIGTERM: leave through main's ``finally``, which puts the
    # terminal's modes back (its echo is off while readline does not read).
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    terminal = Terminal(interactive=sys.stdin.isatty(), hide_typing=True)
    history = client_config.history_path(keystore.data_dir()) if args.history_file else None
    try:
        terminal.load_history(history)
        return run(args, terminal)
    except (ClientError, keystore.KeyStoreError) as exc:
        terminal.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the chat began: leave quietly
    finally:
        terminal.restore()
        terminal.save_history(history)


if __name__ == "__main__":
    sys.exit(main())
