"""The operator console: commands typed by the person who runs the server,
when its input is a terminal. ``OperatorConsole.execute(line)`` returns the
lines to show; it knows no terminal, so tests drive it directly."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from commands import Command, CommandTable
from presentation import format_duration, printable_text, split_name

if TYPE_CHECKING:
    from server import ChatServer

__all__ = ["COMMANDS", "ConsoleQuit", "OperatorConsole", "console_wanted", "run_console"]

log = logging.getLogger("chat.server")


class ConsoleQuit(Exception):
    """The operator typed /quit."""


class OperatorConsole:
    """The console's commands, run against one server."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def execute(self, line: str) -> list[str]:
        """Run one typed line; the lines to show the operator.

        Raises:
            ConsoleQuit: the operator asked to stop the server.
        """
        if not line.strip():
            return []
        name, command, argument = COMMANDS.parse(line)
        if command is None:
            return [f"Unknown command {name}. Type /help for the commands."]
        return command.run(self, argument)

    def help(self, argument: str) -> list[str]:
        return COMMANDS.help_lines()

    def users(self, argument: str) -> list[str]:
        members = self.server.room.who()
        if not members:
            return ["No one is online."]
        return [f"{len(members)} online:"] + [
            f"  {printable_text(name)} ({format_duration(seconds)})" for name, seconds in members
        ]

    def kick(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /kick NAME [REASON]"]
        room = self.server.room
        name, reason = split_name(argument, room.names())
        shown = printable_text(name)
        if self.server.kick(name, reason):
            return [f"Kicked {shown}."]
        if room.cluster.locate(name) is not None:
            return [f"{shown} is on another server of the cluster: kick them there."]
        return [f"No one called {shown} is online."]

    def say(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /say TEXT"]
        self.server.notify_all(argument)
        return ["Notice sent."]

    def quit(self, argument: str) -> list[str]:
        raise ConsoleQuit()


COMMANDS: CommandTable[OperatorConsole, list[str]] = CommandTable(
    [
        Command("/help", "", "list these commands", OperatorConsole.help),
        Command("/users", "", "who is online, and for how long", OperatorConsole.users),
        Command("/kick", "NAME [REASON]", "disconnect NAME, telling them why", OperatorConsole.kick),
        Command("/say", "TEXT", "send a notice to everyone", OperatorConsole.say),
        Command("/quit", "", "stop the server (everyone is told)", OperatorConsole.quit),
    ]
)


def run_console(console: OperatorConsole, read_line: Callable[[], str] = input) -> None:
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
    console.server.shutdown()


def console_wanted(stdin: TextIO) -> bool:
    """Run the console if stdin is a terminal and the server is not a
    background job of it (reading would stop the whole server with SIGTTIN)."""
    if not stdin.isatty():
        return False
    try:
        return os.tcgetpgrp(stdin.fileno()) == os.getpgrp()
    except OSError:
        return True  # a terminal, but not ours to control: no job control applies
