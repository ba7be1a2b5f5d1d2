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
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cli
import client_ui
import crypto_utils
import keystore
import protocol
import transport
from client_ui import Session, Style
from limits import Pacer
from presentation import printable_text
from protocol import (
    ActionLine,
    ChatLine,
    ClientConnection,
    ConnectionClosed,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
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
    UsernameRequest,
    Welcome,
)
from terminal import Display, Terminal

DEFAULT_HOST = "127.0.0.1"
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
HELLO_TIMEOUT = 5.0  # a chat server greets at once: this long in silence, and it is not one
CLOSE_GRACE = 2.0  # seconds to wait for the server to see our goodbye
CHAT_PROMPT = "> "
USERNAME_PROMPT = "Username: "
CONNECTION_LOST = "Connection to server lost."
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

    def send_paced(self, message: protocol.Message) -> None:
        """Send a message the server counts against its rate limit, first
        waiting as long as the limit asks."""
        if self._pacer is not None:
            time.sleep(self._pacer.delay())
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
    text = "The server turned the connection away before the handshake (it does so when it is full). Try again later."
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
            answer = terminal.read_line(prompt).strip().rstrip(".")
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

    ``preset`` (from --name) is tried first. On a terminal a refused name is
    asked for again; on a pipe, a refusal ends the client, so that a script
    never has a chat line taken for a username. None if input ended first.
    """
    terminal = display.terminal
    attempts = 0
    while True:
        event = link.next_event()
        if isinstance(event, Welcome):
            return event.name
        if isinstance(event, Goodbye):
            raise ClientError(printable_text(event.reason) or CONNECTION_LOST)
        if isinstance(event, ConnectionClosed):
            raise ClientError(CONNECTION_LOST)
        if not isinstance(event, UsernameRequest):
            display.show_event(event)
            continue
        prompt = printable_text(event.prompt)
        if attempts and not terminal.interactive:
            raise ClientError(f"{prompt}\nThe username was refused and input is not a terminal: giving up.")
        terminal.show(prompt)
        if attempts == 0 and preset is not None:
            name = preset
        else:
            try:
                name = terminal.read_line(USERNAME_PROMPT)
            except EOFError:
                return None
        attempts += 1
        link.send(Username(name))


class Receiver(threading.Thread):
    """Reads the socket and prints what arrives, until the connection ends.

    If the server ends the session (Goodbye, EOF, or an error) while the
    person has not asked to leave, it says so and wakes the main thread,
    which is waiting for input, with ServerEnded.
    """

    def __init__(self, link: ServerLink, display: Display) -> None:
        super().__init__(name="receiver", daemon=True)
        self.link = link
        self.display = display
        self.terminal = display.terminal
        self._end_lock = threading.Lock()
        self._leaving = False
        self.ended_by_server = False
        self.reading_done = threading.Event()  # the main thread reads no more
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
        self._server_ended(reason)

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
        self.terminal.error(reason)
        # CPython's readline acts on a signal only if it interrupts its wait
        # for a key; one that lands while it handles a key is noted and then
        # forgotten. So repeat it until the main thread has stopped reading.
        while True:
            signal.pthread_kill(self._main_thread, WAKE_SIGNAL)
            if self.reading_done.wait(WAKE_REPEAT):
                return


def converse(link: ServerLink, display: Display) -> int:
    """The chat itself: the main thread reads and sends, a Receiver prints."""
    terminal = display.terminal
    receiver = Receiver(link, display)
    wakeable = threading.Event()  # set while the main thread may be woken

    def wake(signum, frame) -> None:
        # Raised on every repeat until the main thread stops listening: one
        # raised inside a readline hook (prompt drawing, Tab) is swallowed
        # by readline, and the next one must still get through.
        if wakeable.is_set():
            raise ServerEnded

    signal.signal(WAKE_SIGNAL, wake)
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
        receiver.join(CLOSE_GRACE)  # it saw the failure too: let it report it
    if not receiver.leave():
        return 1  # the server ended the session, and the receiver said so
    if parting is None:
        terminal.error(CONNECTION_LOST)
        return 1
    say_goodbye(link, parting)
    receiver.join(CLOSE_GRACE)
    return 0


def send_typed_lines(link: ServerLink, display: Display) -> str | None:
    """Act on each line typed (client_ui.run_line) until the person leaves
    (the parting line, "" for none) or sending fails (None). The receiver
    ends it with ServerEnded when the server is gone."""
    context = client_ui.Context(
        session=display.session,
        send=lambda message: send_message(link, display, message),
        show=display.show,
        error=display.error,
    )
    try:
        while True:
            client_ui.run_line(display.terminal.read_line(CHAT_PROMPT), context)
    except client_ui.QuitRequested as request:
        return request.message
    except protocol.RecordLimitError:
        display.terminal.error(RECORDS_USED_UP)
        return ""  # the last record this direction may carry is the Goodbye
    except (EOFError, KeyboardInterrupt):
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--no-color", action="store_true", help="no colours (also when NO_COLOR is set, or output is not a terminal)"
    )
    parser.add_argument("--timestamps", action="store_true", help="start each line shown with the time, HH:MM")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the command lines as they are
    parser.epilog = "commands in the chat:\n" + "\n".join(f"  {line}" for line in client_ui.help_lines())
    cli.add_version(parser)
    return parser.parse_args(argv)


def make_display(args: argparse.Namespace, terminal: Terminal) -> Display:
    colour = client_ui.colour_wanted(args.no_color, os.environ, sys.stdout.isatty())
    return Display(terminal, Session(), Style(colour), timestamps=args.timestamps)


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
    return converse(link, display)


def start_session(link: ServerLink, display: Display, name: str) -> None:
    """Joined as ``name``: learn (quietly) who is online before the first
    line is read, so that ``/msg`` knows names with spaces and tab completes
    them. What comes first (message of the day, history) is shown."""
    display.session.observe(Welcome(name))
    display.session.user_list_requested(show=False)
    link.send(UserListRequest())
    while not isinstance(event := link.next_event(), UserList):
        if isinstance(event, Goodbye):
            raise ClientError(printable_text(event.reason) or CONNECTION_LOST)
        if isinstance(event, ConnectionClosed):
            raise ClientError(CONNECTION_LOST)
        display.show_event(event)
        if isinstance(event, ErrorNotice):
            break  # a server without user lists: chat without completion
    else:
        display.show_event(event)  # not shown: it only fills the session
    display.terminal.enable_completion(display.session.names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminal = Terminal(interactive=sys.stdin.isatty())
    try:
        return run(args, terminal)
    except (ClientError, keystore.KeyStoreError) as exc:
        terminal.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the chat began: leave quietly


if __name__ == "__main__":
    sys.exit(main())
