"""One run of the client, from connecting to leaving: the handshake and
trust (``link``), the username chosen (with the server's deadline watched),
the first events of the session, the chat (``conversation``), and coming
back when the server went away (``reconnect``: waits that double, the same
name taken back, the history missed shown).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import socket
import sys
import threading
import time

from socket_chat import crypto, protocol, transport
from socket_chat.chat.presentation import printable_text
from socket_chat.client import config as client_config
from socket_chat.client import ui as client_ui
from socket_chat.client.conversation import RECONNECT, converse, report_unsent, say_goodbye
from socket_chat.client.link import (
    CONNECTION_LOST,
    ClientError,
    ServerLink,
    connect,
    end_reason,
    raise_if_ended,
    trust_server,
)
from socket_chat.client.receiver import Display
from socket_chat.client.tickets import TICKETS_FILE, TicketWallet
from socket_chat.crypto import keystore
from socket_chat.protocol import (
    EchoOwnLines,
    ErrorNotice,
    HistoryLine,
    HistoryMessage,
    Motd,
    ProofRequest,
    ProtocolError,
    Stamps,
    UserList,
    UserListRequest,
    Username,
    UsernameDeadline,
    UsernameRequest,
    Welcome,
)
from socket_chat.tty import Terminal

__all__ = ["run", "choose_username", "reconnect", "start_session"]

USERNAME_PROMPT = "Username: "
RECONNECT_FIRST = 1.0  # seconds before the first try, then twice as long each time...
RECONNECT_LONGEST = 30.0  # ...up to this; each wait is spread by +-50 % (jitter)
NAME_RETRY = 60.0  # seconds to try for one's name again: the server may hold it for a dead connection


def run(args: argparse.Namespace, display: Display) -> int:
    """Connect to the server the options name and chat, coming back (with
    --reconnect, on a terminal) when the server goes away; the exit status.

    Raises:
        ClientError: the client cannot go on (not connected, the key
            refused, the handshake failed, the name refused off a terminal).
        keystore.KeyStoreError: the known hosts cannot be read or written.
    """
    terminal = display.terminal
    identity = load_identity(args)
    terminal.show("Trying to connect server...")
    wallet = ticket_wallet(args)
    link = connect(args.host, args.port)
    link.identity = identity
    link.use_tickets(wallet, transport.format_address(args.host, args.port))
    terminal.show("Connected to server.")
    try:
        trust_server(link, args, terminal)
        terminal.show("Encryption is established.")
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
        reconnected = reconnect(args, display, identity, wallet)
        if reconnected is None:
            return 0  # the person left while it tried
        status = converse(reconnected, display, comes_back)
    return status


def load_identity(args: argparse.Namespace) -> crypto.PersonKey:
    """The person's key (``--identity``, or the data directory's), made on
    first use.

    Raises:
        keystore.KeyStoreError: the key file cannot be read, made or trusted.
    """
    return keystore.load_or_create_person_key(client_config.identity_path(args.identity, keystore.data_dir()))[0]


def ticket_wallet(args: argparse.Namespace) -> TicketWallet:
    """Where resumption tickets are kept: in memory, and with
    --keep-tickets in the data directory's tickets file (0600) too.

    Raises:
        keystore.KeyFileError: that file is readable by others.
    """
    keep = getattr(args, "keep_tickets", False)
    return TicketWallet(keystore.data_dir() / TICKETS_FILE if keep else None)


def reconnect(
    args: argparse.Namespace,
    display: Display,
    identity: crypto.PersonKey | None = None,
    wallet: TicketWallet | None = None,
) -> ServerLink | None:
    """Connect again, with waits that double (with jitter, so that everyone
    cut off at once does not come back at once), and take back the name;
    show what was said meanwhile. The ticket the last connection got, if
    any, is offered (``wallet``): the server resumes without RSA, or does a
    full handshake, the same to the person. None if the person left
    meanwhile (/quit, end of input). A changed server key ends it, loudly,
    as on the first connection (keystore.ServerKeyRefused)."""
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
        link.identity = identity
        if wallet is not None:
            link.use_tickets(wallet, transport.format_address(args.host, args.port))
        try:
            trust_server(link, args, terminal)
            rooms, current = display.session.rooms.joined(), display.session.rooms.current
            if take_back_name(link, display, name):
                display.session.rooms.forget()
                start_session(link, display, name, resumed=True)
                rejoined = rooms if display.session.rooms.offered else []
                display.session.rooms.rejoining(rejoined, current)  # the next line goes where it went before
                for room in rejoined:  # paced: 20 rooms and the user list are past the server's burst
                    link.send_paced(protocol.RoomRequest("join", room, ""))  # the rooms this person was in
                display.show(display.style.notice(f"* Reconnected as {name}."))
                return link
            name_taken_since = name_taken_since or time.monotonic()
        except (ClientError, OSError, ProtocolError):
            pass  # the server went again: try again
        with contextlib.suppress(OSError):
            link.sock.close()
        if name_taken_since is not None and time.monotonic() - name_taken_since > NAME_RETRY:
            raise ClientError(f"Reconnected, but the name {name} stays taken: giving up.")


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
    display.session.echoed = False  # this server says anew whether it echoes
    display.session.stamped = False  # and whether it stamps lines
    display.terminal.multiline = display.session.multiline = False  # and whether it takes blocks
    display.session.forget_pages()  # what was asked of the last connection is not answered
    display.session.forget_lists()
    display.session.rooms.offered = False  # and whether it has rooms
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
            link.request_ticket()
            link.send(Username(name))
        else:
            raise_if_ended(event)


def start_session(link: ServerLink, display: Display, name: str, resumed: bool = False) -> None:
    """Joined as ``name``: learn (quietly) who is online before the first
    line is read, so that ``/msg`` knows names with spaces and tab completes
    them. What comes first (message of the day, history) is shown; when
    ``resumed`` after a reconnection, only the history not seen before."""
    display.session.observe(Welcome(name))
    display.session.user_list_requested(show=False)
    link.send(UserListRequest())
    display.ask_user_list = lambda: link.send(UserListRequest())  # guest marks: who the newcomers are
    history: list[HistoryMessage | HistoryLine] = []
    while not isinstance(event := link.next_event(), UserList):
        raise_if_ended(event)
        if resumed and isinstance(event, (HistoryMessage, HistoryLine)):
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
    display.terminal.enable_completion(display.session.names, client_ui.complete)
    # The server shows my lines as the others see them: the typed one goes.
    display.terminal.erase_entered = display.session.echoed


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
        raise_if_ended(event)
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
        link.request_ticket()
        link.send(Username(name))


def note_server_terms(event: protocol.Event, link: ServerLink, display: Display) -> bool:
    """Keep what the server says of itself before the username: it tells
    its deadline (so it echoes on request), it takes a key proof (which goes
    at once, before the username), and it agreed to echo. True if ``event``
    was one of those."""
    if isinstance(event, UsernameDeadline):
        link.server_echoes_on_request = True
        return True
    if isinstance(event, ProofRequest):
        link.prove_identity()
        return True
    if isinstance(event, EchoOwnLines):
        display.session.echoed = True
        return True
    if isinstance(event, Stamps):  # lines with IDs and times, and /history: yes please
        display.session.stamped = True
        link.send(Stamps())
        return True
    if isinstance(event, protocol.MultilineOffer):
        # Blocks where a person edits them (a paste stays one message);
        # on a pipe, one line is one message, both ways, as scripts expect.
        if display.terminal.edits_blocks:
            display.terminal.multiline = display.session.multiline = True
            link.send(protocol.Multiline())
        return True
    if isinstance(event, protocol.Rooms):  # rooms besides the lobby: yes please
        display.session.rooms.offered = True
        link.send(protocol.Rooms())
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
    watcher.start()
    try:
        try:
            return terminal.read_line(USERNAME_PROMPT, remember=False)  # not a line to recall
        finally:
            watcher.stop()
            terminal.forget_interrupt()  # the watcher's, if it came as Enter was pressed
    except ServerSpoke:
        said = link.next_event()  # a goodbye, normally
        raise ClientError(end_reason(said)) from None


#: Seconds before the username deadline that a person is warned (at most
#: half the time given).
DEADLINE_WARNING = 15.0


class DeadlineWatcher(threading.Thread):
    """While the person types a username: warns ``DEADLINE_WARNING`` seconds
    before the deadline, and ends the prompt (ServerSpoke) when the socket has
    something to read (the server only speaks then to say goodbye)."""

    def __init__(self, sock: socket.socket, terminal: Terminal, deadline: float) -> None:
        super().__init__(name="username deadline", daemon=True)
        self.sock, self.terminal, self.deadline = sock, terminal, deadline
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
                # The line being typed stays on the screen, above what the server said.
                self.terminal.interrupt(ServerSpoke(), erase=False)
                return
            if not warned:
                warned = True
                seconds = round(self.deadline - time.monotonic())
                self.terminal.show(f"{seconds} seconds left to choose a username: then the server hangs up.")

    def stop(self) -> None:
        os.write(self._stop_writing, b"x")
        self.join()
        os.close(self._stop_reading)
        os.close(self._stop_writing)
