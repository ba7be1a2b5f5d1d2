"""The chat itself, once joined: the main thread reads what the person
types (``TypedLines``), acts on each line (``ui.run_line``) and sends,
while the Receiver shows what arrives; ``converse`` runs both and decides
how the chat ended (the person left, the server ended it, or the server went
away and the client will come back).
"""

from __future__ import annotations

import signal
import socket
from collections import deque
from collections.abc import Callable

from socket_chat import protocol
from socket_chat.chat.presentation import printable_text
from socket_chat.client import ui as client_ui
from socket_chat.client.link import CONNECTION_LOST, ServerLink
from socket_chat.client.receiver import Display, Receiver, ServerEnded
from socket_chat.protocol import ActionLine, ChatLine, Goodbye, NickRequest, PrivateLine, ProtocolError, RateLimit
from socket_chat.tty import Terminal

__all__ = ["RECONNECT", "ServerEnded", "TypedLines", "converse", "report_unsent", "say_goodbye", "send_typed_lines"]

CHAT_PROMPT = "> "
CLOSE_GRACE = 2.0  # seconds to wait for the server to see our goodbye
RECONNECT = -1  # converse(): the server went away; come back
RECORDS_USED_UP = (
    "This connection has carried as many messages as its keys may protect (2^24): leaving. "
    "Connect again to go on, with new keys."
)


def converse(link: ServerLink, display: Display, reconnect: bool = False) -> int:
    """The chat itself: the main thread reads and sends, a Receiver prints.
    RECONNECT if the server went away and ``reconnect`` asks to come back."""
    terminal = display.terminal
    receiver = Receiver(link, display, reconnect)
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        receiver.start()
        parting = send_typed_lines(link, display)
    except ServerEnded:  # the receiver ended the line being read (Terminal.interrupt)
        parting = None
    person_left = parting is not None
    # From here on, a late Ctrl-C must not become a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not person_left:
        receiver.join(CLOSE_GRACE)  # it saw the failure too: let it note why
    left = receiver.leave()
    terminal.forget_interrupt()  # the receiver's, if it came as the person left
    if not left:
        # The server ended the session: say so.
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

    def __init__(self, terminal: Terminal, prompt: Callable[[], str] = lambda: CHAT_PROMPT) -> None:
        self.terminal = terminal
        self.prompt = prompt  # the current room's (#dev> ), or the chat's
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
        self.current = self.terminal.read_line(self.prompt())
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
        if self._announced or limit is None or not limit.interval_ms:
            return
        rate = f"the server allows {1000 / limit.interval_ms:g} a second"
        if self.backlog:
            self._announced = True
            display.show(display.style.notice(f"* Sending {len(self.backlog) + 1} more lines: {rate}."))
        elif self.current is not None and "\n" in self.current:  # a block waits for its lines' tokens
            self._announced = True
            lines = len(self.current.strip("\n").split("\n"))
            display.show(display.style.notice(f"* Sending a message of {lines} lines: {rate}, and each counts."))

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
    lines = TypedLines(display.terminal, display.session.rooms.prompt)
    link.on_hold = lambda: lines.held_back(display, link.rate_limit)

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


#: What the server's flood control counts (its ``TokenBucket``): these wait for
#: the pacer; the user list does not.
PACED_MESSAGES = (
    ChatLine,
    PrivateLine,
    ActionLine,
    NickRequest,
    protocol.Away,
    protocol.RoomLine,
    protocol.RoomRequest,
)


def send_message(link: ServerLink, display: Display, message: protocol.Message) -> None:
    try:
        if isinstance(message, PACED_MESSAGES):
            link.send_paced(message)
        else:
            link.send(message)
    except protocol.RecordLimitError:
        raise  # the connection must end: send_typed_lines ends it
    except protocol.LocalProtocolError as exc:
        if link.conn.state is not protocol.ConnectionState.OPEN:
            raise  # the receiver saw the end a moment ago: converse says why
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
