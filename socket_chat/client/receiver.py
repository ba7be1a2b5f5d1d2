"""What comes from the server, shown: the Receiver thread reads the socket
once the chat has begun, and ``Display`` turns each event into lines on the
terminal (with the session's ignores, the style, the timestamps, and the
highlight and bell for what calls for the person).

When the server ends the session, the Receiver ends the line the main
thread is reading (``Terminal.interrupt`` with ``ServerEnded``); the main
thread then says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from socket_chat import protocol
from socket_chat.chat.presentation import columns
from socket_chat.client import ui as client_ui
from socket_chat.client.link import ServerLink, end_reason
from socket_chat.client.rooms import LOBBY
from socket_chat.client.ui import Session, Style
from socket_chat.protocol import (
    ConnectionClosed,
    Goodbye,
    HistoryLine,
    HistoryMessage,
    PageEnd,
    PrivateMessage,
    ProtocolError,
    StampedLine,
)
from socket_chat.tty import Terminal

__all__ = ["Display", "Receiver", "ServerEnded"]

SERVER_SHUTTING_DOWN = "Server is shutting down."  # the server's SHUTTING_DOWN: it may be back soon
RECONNECTING = "Reconnecting (Ctrl-C or /quit to leave)..."


class ServerEnded(Exception):
    """Raised in the main thread, reading a line, when the receiver finds the
    session over."""


class Display:
    """Shows events and local answers on the terminal: with the session's
    ignores, the chosen style, ``HH:MM`` first with --timestamps, and a
    highlight and the bell for what calls for the person (a mention, a
    private message)."""

    def __init__(
        self,
        terminal: Terminal,
        session: Session,
        style: Style,
        timestamps: bool = False,
        clock=time.time,
        bell: bool = False,
        ids: bool = False,
    ) -> None:
        self.terminal, self.session, self.style = terminal, session, style
        self.timestamps, self.clock = timestamps, clock
        self.bell = bell
        #: Sends a UserListRequest (from the receiver's thread: ServerLink.send
        #: takes a lock), to learn whether newcomers are guests; None: never.
        self.ask_user_list: Callable[[], None] | None = None
        self.ids = ids  # --ids: each line's message ID first, for asking the operator to /forget it

    def show_event(self, event) -> None:
        """Show ``event`` (unless the session ignores it), and let the
        session learn from it. A stamped line is shown as the message it
        stands for, at the server's time."""
        server_time: int | None = None
        line_id = ""
        if isinstance(event, (StampedLine, HistoryLine, PageEnd)):
            self.session.note_line(event)
        if isinstance(event, (StampedLine, HistoryLine)):
            server_time, line_id = event.sent_at, event.id
            event = client_ui.plain(event)
        shown = self.session.shows(event)
        self.session.observe(event)
        lobby = self._follow_rooms(event, shown)
        if self.ask_user_list is not None and self.session.guests_unknown():
            self.session.user_list_requested(show=False)  # one at a time: a storm of joins asks once per answer
            try:
                self.ask_user_list()
            except OSError:  # the connection is going: the read that follows says so
                self.session.user_list_unsent(show=False)
        if not shown:
            return
        # A history line's time is when it was said: with --timestamps it
        # goes first, as every line's does, instead of inside the marker.
        dated = not (self.timestamps and isinstance(event, HistoryMessage))
        lines = client_ui.render(event, self.session, self.style, dated=dated)
        if lobby:
            lines = [_before(f"[{LOBBY}] ", line) for line in lines]  # a block's later lines stay under its text
        wanted = self.session.wants_me(event)
        if wanted and not isinstance(event, PrivateMessage):
            lines = [self.style.mention(line) for line in lines]
        when = event.sent_at if not dated else server_time
        if self.ids and line_id:
            lines = [_before(f"#{client_ui.printable_text(line_id)} ", line) for line in lines]
        for line in lines:
            self.show(line, when)
        if wanted and self.bell and lines:
            self.terminal.bell()

    def _follow_rooms(self, event, shown: bool) -> bool:
        """Keep the rooms joined and their unread counts; True for a lobby
        line to be shown with ``[lobby]`` first (the person is in a room)."""
        rooms = self.session.rooms
        if isinstance(event, protocol.Joined):
            rooms.entered(event.room)
        elif isinstance(event, protocol.Parted):
            rooms.left(event.room)
        elif isinstance(event, protocol.RoomMessage) and shown:
            rooms.note(event.room, event.sender, event.text, self.session.own_name)
        elif isinstance(event, (protocol.ChatMessage, protocol.ActionMessage)) and shown:
            rooms.note(None, event.sender, event.text, self.session.own_name)
            return rooms.named(None)
        return False

    def show(self, line: str, when: float | None = None) -> None:
        """Show a line, with the time first under --timestamps (``when``, or now)."""
        if self.timestamps:
            line = _before(f"{client_ui.clock_time(self.clock() if when is None else when)} ", line)
        self.terminal.show(line)

    def error(self, text: str) -> None:
        """Show a local error, as ``Error: text``."""
        self.show(self.style.error(f"Error: {text}"))


def _before(prefix: str, line: str) -> str:
    """``prefix`` before ``line``, and as many spaces before each of its
    later lines (a block's), which stay under its text."""
    if "\n" not in line:
        return prefix + line
    return prefix + line.replace("\n", "\n" + " " * columns(prefix))


class Receiver(threading.Thread):
    """Reads the socket and prints what arrives, until the connection ends.

    If the server ends the session (Goodbye, EOF, or an error) while the
    person has not asked to leave, it ends the main thread's reading with
    ServerEnded; the main thread then says so (``report_end``).
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
        self.reconnectable = False  # the end was the server's, and worth coming back from
        self.typed = ""  # the line being typed when the server ended
        self._end_reason = ""  # what to tell the person, by report_end
        self._reported = False

    def run(self) -> None:
        event: protocol.Event | None
        try:
            while not isinstance(event := self.link.next_event(), (Goodbye, ConnectionClosed)):
                self.display.show_event(event)
        except (OSError, ProtocolError):
            event = None
        reason = end_reason(event)
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
        # The main thread says so (report_end), once its read is ended: the
        # line being typed is prompt_toolkit's, in the main thread's loop.
        self.terminal.interrupt(ServerEnded())
