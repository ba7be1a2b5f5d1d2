"""The chat client: the socket, the terminal, and the check of the server's key.

Run ``python client.py --help`` for the options. The main thread reads what
the person types and sends it; a receiver thread reads the socket and prints.
Everything that came over the network passes ``protocol.printable_text``
before it reaches the terminal.
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
from pathlib import Path

import client_ui
import crypto_utils
import protocol
from client_ui import Session, Style
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
    ServerHello,
    ServerRefused,
    UserList,
    UserListRequest,
    Username,
    UsernameRequest,
    Welcome,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8756
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
CLOSE_GRACE = 2.0  # seconds to wait for the server to see our goodbye
RECV_SIZE = 65536
CHAT_PROMPT = "> "
USERNAME_PROMPT = "Username: "
CONNECTION_LOST = "Connection to server lost."
# How the receiver wakes the main thread from input(). Not SIGINT: a job
# started in the background by a script has SIGINT ignored from the start.
WAKE_SIGNAL = signal.SIGUSR1
WAKE_REPEAT = 0.1  # seconds between wake-ups until the main thread has one
PROMPT_DRAW_WAIT = 0.5  # seconds a line waits for readline to draw its prompt, at most


class ClientError(Exception):
    """Ends the client with a message for the person and a non-zero status."""


class ServerEnded(Exception):
    """Raised in the main thread when the receiver finds the session over."""


# --- known hosts: trust on first use, as ssh does ----------------------------


def data_dir() -> Path:
    """Where the chat keeps its files: ``$XDG_DATA_HOME/socket-chat``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "socket-chat"


class KnownHosts:
    """The file of servers seen before: one ``HOST:PORT SHA256:...`` a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, host_id: str) -> str | None:
        for line_host, fingerprint in self._entries():
            if line_host == host_id:
                return fingerprint
        return None

    def remember(self, host_id: str, fingerprint: str) -> None:
        """Record (or replace) the fingerprint for ``host_id``."""
        kept = [f"{h} {f}\n" for h, f in self._entries() if h != host_id]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines(kept + [f"{host_id} {fingerprint}\n"])
        os.replace(temporary, self.path)

    def _entries(self) -> list[tuple[str, str]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"Cannot read the known hosts file {self.path}: {exc}") from None
        return [tuple(line.split()) for line in lines if len(line.split()) == 2]


def host_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_server_key(known: KnownHosts, server: str, offered: str, pinned: str | None) -> str | None:
    """Decide whether to trust the key the server offered.

    Returns a line to show the person (or None), or raises ClientError with
    the reason for refusing. A pin (``--fingerprint``) wins over the file,
    and a key that matches the pin is recorded in the file.
    """
    if pinned is not None:
        if not crypto_utils.fingerprints_equal(pinned, offered):
            raise ClientError(_mismatch_warning(server, pinned, offered, "--fingerprint"))
        if known.lookup(server) != offered:
            known.remember(server, offered)
        return None
    recorded = known.lookup(server)
    if recorded is None:
        known.remember(server, offered)
        return (f"The server's key fingerprint is {offered}.\n"
                f"Check it with the server's operator. It is now recorded in {known.path}.")
    if not crypto_utils.fingerprints_equal(recorded, offered):
        raise ClientError(_mismatch_warning(server, recorded, offered, str(known.path)))
    return None


def _mismatch_warning(server: str, expected: str, offered: str, source: str) -> str:
    bar = "@" * 62
    return "\n".join([
        bar,
        "@    WARNING: THE SERVER'S IDENTITY KEY HAS CHANGED!          @",
        bar,
        "Someone may be intercepting this connection (a man-in-the-middle attack),",
        "or the server's operator may have replaced its key.",
        f"Server:               {server}",
        f"Expected fingerprint: {expected} (from {source})",
        f"Offered fingerprint:  {offered}",
        "The connection was refused; nothing was sent.",
        "Ask the server's operator for the fingerprint it prints when it starts.",
        "If it is the offered one, connect once with --fingerprint followed by it",
        "to record it in place of the old one.",
    ])


# --- the terminal ------------------------------------------------------------


class Terminal:
    """All printing. On a terminal, a line that arrives while the person is
    typing is printed above the prompt, and the half-typed line is redrawn.
    Off a terminal (a pipe), no prompt and no escape codes are written."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self._lock = threading.Lock()
        self._prompt: str | None = None
        # readline gives input() line editing and history, and lets us redraw
        # a half-typed line; some platforms lack it, and then we only reprint.
        self._readline = self._redisplay = None
        if interactive:
            try:
                import readline
            except ImportError:
                pass
            else:
                self._readline = readline
                self._redisplay = _readline_redisplay(readline)
        self._asked: str | None = None  # the prompt input() was called with
        self._drawing = False  # readline is drawing that prompt
        self._prompt_ready = threading.Condition(self._lock)
        if self._redisplay:
            # A line that arrives while readline draws a new prompt waits
            # until it is drawn, then goes above it. Without this, a line
            # arriving just after Enter erased the row of the line just
            # typed, or was printed after the prompt. GNU readline calls the
            # two hooks one after the other, around drawing the prompt. No
            # lock is held from one hook to the other: an exception there
            # (a signal's) is swallowed by readline, and must not leave it held.
            self._readline.set_startup_hook(self._prompt_drawing)
            self._readline.set_pre_input_hook(self._prompt_drawn)

    def _prompt_drawing(self) -> None:
        self._drawing = True

    def _prompt_drawn(self) -> None:
        with self._prompt_ready:
            self._drawing = False
            self._prompt = self._asked
            self._prompt_ready.notify_all()

    def enable_completion(self, names) -> None:
        """Tab completes names and commands (``names()`` gives those online).
        The whole line is completed, since names may hold spaces."""
        if self._readline is None:
            return
        readline = self._readline
        matches: list[str] = []

        def completer(text: str, state: int) -> str | None:
            nonlocal matches
            if state == 0:
                matches = client_ui.complete(readline.get_line_buffer()[:readline.get_endidx()], names())
            return matches[state] if state < len(matches) else None

        readline.set_completer_delims("")
        readline.set_completer(completer)
        readline.parse_and_bind("tab: complete")

    def show(self, line: str) -> None:
        with self._lock:
            if self._drawing and self._prompt is None:
                self._prompt_ready.wait(PROMPT_DRAW_WAIT)
            if self._prompt is None:
                print(line, flush=True)
                return
            self._erase_input()
            sys.stdout.write(f"{line}\n")
            self._redraw_input()

    def error(self, text: str) -> None:
        with self._lock:
            if self._prompt is not None:
                self._erase_input()
            print(text, file=sys.stderr, flush=True)

    def read_line(self, prompt: str) -> str:
        """The next line typed. Raises EOFError at the end of input."""
        if not self.interactive:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\r\n")
        with self._lock:
            self._asked = prompt
            if not self._redisplay:
                self._prompt = prompt
        try:
            return input(prompt)
        finally:
            with self._lock:
                self._prompt = self._asked = None
                self._drawing = False

    def _erase_input(self) -> None:
        sys.stdout.flush()
        if self._redisplay:
            # readline knows how many rows the prompt and the typed text
            # take (a long line wraps) and where its cursor is.
            self._redisplay.rl_clear_visible_line()
        else:
            sys.stdout.write("\r\x1b[K")

    def _redraw_input(self) -> None:
        if self._redisplay:
            sys.stdout.flush()
            self._redisplay.rl_on_new_line()
            self._redisplay.rl_redisplay()  # cursor back where the person left it
            return
        typed = self._readline.get_line_buffer() if self._readline else ""
        sys.stdout.write(f"{self._prompt}{typed}")
        sys.stdout.flush()


def _readline_redisplay(readline):
    """GNU readline's own redisplay functions, which the readline module does
    not expose, or None (libedit, an old readline): then we only reprint."""
    try:
        import ctypes
        library = ctypes.CDLL(readline.__file__)
        for name in ("rl_clear_visible_line", "rl_on_new_line", "rl_redisplay"):
            getattr(library, name)
    except (ImportError, OSError, AttributeError):
        return None
    return library


class Display:
    """Shows events and local answers on the terminal: with the session's
    ignores, the chosen style, and ``HH:MM`` first with --timestamps."""

    def __init__(self, terminal: Terminal, session: Session, style: Style,
                 timestamps: bool = False, clock=time.time) -> None:
        self.terminal, self.session, self.style = terminal, session, style
        self.timestamps, self.clock = timestamps, clock

    def show_event(self, event) -> None:
        shown = self.session.shows(event)
        self.session.observe(event)
        if shown:
            for line in client_ui.render(event, self.session, self.style):
                self.show(line)

    def show(self, line: str) -> None:
        if self.timestamps:
            line = f"{client_ui.clock_time(self.clock())} {line}"
        self.terminal.show(line)

    def error(self, text: str) -> None:
        self.show(self.style.error(f"Error: {text}"))


# --- the connection ----------------------------------------------------------


class Pacer:
    """Keeps the client within the server's flood control, so that a pasted
    block is sent a little slower instead of being refused line by line.

    It mirrors the server's token bucket with a wide margin: the server times
    a line when it gets to it, not when it left here, so on a busy machine two
    lines can reach its bucket closer together than they were sent. Half the
    burst is kept in reserve for that, and lines are spaced a quarter longer.
    """

    MARGIN = 1.25  # space lines a quarter longer than the server asks

    def __init__(self, limit: RateLimit, clock=time.monotonic) -> None:
        self._interval = limit.interval_ms / 1000 * self.MARGIN
        self._burst = max(1, limit.burst // 2)
        self._clock = clock
        self._tokens = float(self._burst)
        self._updated = clock()

    def delay(self) -> float:
        """Seconds to wait before sending the next line; the line is counted
        as sent at the end of that wait."""
        if not self._interval:
            return 0.0  # the server has no limit
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) / self._interval)
        self._updated = now
        self._tokens -= 1
        return max(0.0, -self._tokens * self._interval)


class ServerLink:
    """The socket and the protocol state, with one lock for sending."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = ClientConnection()
        self._send_lock = threading.Lock()
        self._pacer: Pacer | None = None

    def next_event(self):
        """The next event, reading as needed. What the handshake writes by
        itself is sent before waiting for more. The server's rate limit is
        kept here, not returned."""
        while True:
            while (event := self.conn.next_event()) is protocol.NEED_DATA:
                self.flush()
                self.conn.receive_data(self.sock.recv(RECV_SIZE))
            self.flush()
            if not isinstance(event, RateLimit):
                return event
            self._pacer = Pacer(event)

    def send_paced(self, message) -> None:
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

    def send(self, message) -> None:
        with self._send_lock:
            self.conn.send(message)
            self.sock.sendall(self.conn.data_to_send())


def connect(host: str, port: int) -> ServerLink:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ClientError(f"Could not connect to {host_id(host, port)}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each sendall is a whole message
    return ServerLink(sock)


def establish(link: ServerLink, trust) -> None:
    """Run the handshake; ``trust(ServerHello)`` raises ClientError to refuse."""
    link.sock.settimeout(HANDSHAKE_TIMEOUT)
    hello = link.next_event()
    if isinstance(hello, ServerRefused):
        raise ClientError(protocol.printable_text(hello.reason))
    if not isinstance(hello, ServerHello):
        raise protocol.RemoteProtocolError(f"expected the server's hello, got {hello}")
    trust(hello)
    link.conn.accept_server_key()
    link.flush()
    event = link.next_event()
    if not isinstance(event, HandshakeComplete):
        raise protocol.RemoteProtocolError(f"handshake ended with {event}")
    link.sock.settimeout(None)


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
            raise ClientError(protocol.printable_text(event.reason) or CONNECTION_LOST)
        if isinstance(event, ConnectionClosed):
            raise ClientError(CONNECTION_LOST)
        if not isinstance(event, UsernameRequest):
            display.show_event(event)
            continue
        prompt = protocol.printable_text(event.prompt)
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

    def run(self) -> None:
        try:
            while not isinstance(event := self.link.next_event(), (Goodbye, ConnectionClosed)):
                self.display.show_event(event)
            reason = CONNECTION_LOST
            if isinstance(event, Goodbye) and event.reason:
                reason = protocol.printable_text(event.reason)
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
            signal.pthread_kill(threading.main_thread().ident, WAKE_SIGNAL)
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
    if not person_left:
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
        session=display.session, send=lambda message: send_message(link, display, message),
        show=display.show, error=display.error,
    )
    try:
        while True:
            client_ui.run_line(display.terminal.read_line(CHAT_PROMPT), context)
    except client_ui.QuitRequested as request:
        return request.message
    except (EOFError, KeyboardInterrupt):
        return ""
    except (OSError, ProtocolError):
        return None


#: What the server's flood control counts (see server.py): these wait for
#: the pacer; the user list does not.
PACED_MESSAGES = (ChatLine, PrivateLine, ActionLine, NickRequest)


def send_message(link: ServerLink, display: Display, message) -> None:
    try:
        if isinstance(message, PACED_MESSAGES):
            link.send_paced(message)
        else:
            link.send(message)
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


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def fingerprint_text(text: str) -> str:
    """argparse type: a fingerprint as the server prints it."""
    if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fingerprint: expected SHA256: and 43 base64 characters, as the server prints it"
        )
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Encrypted terminal group chat: the client.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"server port (default: {DEFAULT_PORT})")
    parser.add_argument("--name", help="join with this username instead of being asked")
    parser.add_argument(
        "--fingerprint", metavar="SHA256:...", type=fingerprint_text,
        help="the server key fingerprint to insist on, even on the first connection",
    )
    parser.add_argument(
        "--known-hosts", type=Path, default=None,
        help="file of trusted server keys (default: $XDG_DATA_HOME/socket-chat/known_hosts)",
    )
    parser.add_argument("--no-color", action="store_true",
                        help="no colours (also when NO_COLOR is set, or output is not a terminal)")
    parser.add_argument("--timestamps", action="store_true", help="start each line shown with the time, HH:MM")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the command lines as they are
    parser.epilog = "commands in the chat:\n" + "\n".join(f"  {line}" for line in client_ui.help_lines())
    return parser.parse_args(argv)


def make_display(args: argparse.Namespace, terminal: Terminal) -> Display:
    colour = client_ui.colour_wanted(args.no_color, os.environ, sys.stdout.isatty())
    return Display(terminal, Session(), Style(colour), timestamps=args.timestamps)


def run(args: argparse.Namespace, terminal: Terminal) -> int:
    terminal.show("Trying to connect server...")
    link = connect(args.host, args.port)
    terminal.show("Connected to server.")
    known = KnownHosts(args.known_hosts or data_dir() / "known_hosts")
    server = host_id(args.host, args.port)

    def trust(hello: ServerHello) -> None:
        note = check_server_key(known, server, hello.fingerprint, args.fingerprint)
        if note:
            terminal.show(note)

    try:
        establish(link, trust)
        terminal.show("Encryption is established.")
        display = make_display(args, terminal)
        name = choose_username(link, display, args.name)
        if name is not None:
            start_session(link, display, name)
    except socket.timeout:
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
            raise ClientError(protocol.printable_text(event.reason) or CONNECTION_LOST)
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
    except ClientError as exc:
        terminal.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the chat began: leave quietly


if __name__ == "__main__":
    sys.exit(main())
