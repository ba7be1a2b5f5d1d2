"""The operator console: commands typed by the person who runs the server,
when its input is a terminal. ``OperatorConsole.execute(line)`` returns the
lines to show; it knows no terminal, so tests drive it directly.

The operators named by ``--operators`` run some of the same commands from
their own client (``OPERATOR_COMMANDS``: /kick, /ban, /unban, /bans,
/release, /say): the server runs them through an ``OperatorConsole`` made
for that person (``actor``), so both are one code, logged alike.

On a terminal (input and output), the console reads with prompt_toolkit, as the
client does (``socket_chat.tty``'s ``Terminal``): line editing, history, Tab for
commands and for names after ``/kick``; and the server's log is printed
above the line being typed, never into it (``on_terminal``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from socket_chat.chat.bans import parse_duration, parse_target
from socket_chat.chat.commands import Command, CommandTable
from socket_chat.chat.presentation import format_duration, printable_text, split_name
from socket_chat.protocol import GUEST_MARK
from socket_chat.tty import Terminal

__all__ = [
    "COMMANDS",
    "CONSOLE",
    "OPERATOR_COMMANDS",
    "PROMPT",
    "ConsoleQuit",
    "OperatorConsole",
    "ServerControls",
    "complete",
    "console_wanted",
    "on_terminal",
    "run_console",
]

log = logging.getLogger("chat.server")

PROMPT = "> "  # only on a terminal: in a pipe it would run into the output
#: Who acts, in the log and in /bans, when the console does.
CONSOLE = "the console"


class ServerControls(Protocol):
    """What the console may ask of the server (``app.ChatServer`` is one)."""

    def who(self) -> list[tuple[str, int]]:
        """(name, seconds online) of everyone in the chat."""
        ...

    def away_messages(self) -> dict[str, str]:
        """The away message of everyone away, by name."""
        ...

    def names(self) -> list[str]:
        """The names of the members on this server: the ones it can kick."""
        ...

    def locate(self, name: str) -> str | None:
        """The name as its holder has it, if held on another server of the cluster."""
        ...

    def kick(self, name: str, reason: str = "", by: str = CONSOLE) -> bool:
        """Remove ``name`` from this server; False if no one here has it."""
        ...

    def notify_all(self, text: str, by: str = CONSOLE) -> None: ...

    def close_room(self, room: str, reason: str = "", by: str = CONSOLE) -> list[str]:
        """Close a room (its members told why); the lines to show."""
        ...

    def kick_from_room(self, room: str, name: str, reason: str = "", by: str = CONSOLE) -> list[str]:
        """Take ``name`` out of a room, not out of the chat; the lines to show."""
        ...

    def ban(
        self, target: str, seconds: int | None, reason: str, by: str = CONSOLE, by_key: str | None = None
    ) -> list[str]:
        """Ban ``target`` (a name, a fingerprint, an address or network) for
        ``seconds`` (None: for ever), disconnecting it; what happened."""
        ...

    def unban(self, target: str, by: str = CONSOLE) -> list[str]:
        """Lift the ban of ``target`` (a name, fingerprint, address); what happened."""
        ...

    def ban_lines(self) -> list[str]:
        """The bans in force, as lines."""
        ...

    def guests(self) -> set[str]:
        """The names of the guests online (no key proved)."""
        ...

    def reload_allow_list(self) -> list[str]:
        """Read the allow file again (``--allow``); what happened."""
        ...

    def invite(self, fingerprint: str, name: str | None = None, comment: str = "") -> list[str]:
        """Add ``fingerprint`` (or an OpenSSH key's two words) reserving
        ``name`` to the allow file; what happened."""
        ...

    def release(self, name: str, by: str = CONSOLE) -> list[str]:
        """Free the registered name ``name`` (and its look-alikes); what happened."""
        ...

    def forget_line(self, line_id: str) -> list[str]:
        """Take the line ``line_id`` out of the history; what happened."""
        ...

    def shutdown(self) -> None:
        """Stop serving (the caller of ``serve_forever`` then says goodbye)."""
        ...


class ConsoleClosed(Exception):
    """The console stops reading, the server going on to stop on its own
    (Ctrl-C at the console)."""


class ConsoleQuit(Exception):
    """The operator typed /quit."""


class OperatorConsole:
    """The console's commands, run against one server.

    Args:
        server: what the commands act on.
        actor: who types them, for the log and /bans (``CONSOLE``, or an
            operator's ``NAME (SHA256:...)``).
        actor_key: that operator's fingerprint (None: the console), which
            they may not ban.
    """

    def __init__(self, server: ServerControls, actor: str = CONSOLE, actor_key: str | None = None) -> None:
        self.server = server
        self.actor, self.actor_key = actor, actor_key

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

    def run_operator(self, command: str, argument: str) -> list[str]:
        """An operator's command from their client (``command`` without its
        slash: ``ban``); the lines to tell them."""
        found = OPERATOR_COMMANDS.parse(f"/{command}")[1]
        if found is None:
            return [f"There is no operator command /{printable_text(command[:20])}."]
        return found.run(self, argument.strip())

    def help(self, argument: str) -> list[str]:
        return COMMANDS.help_lines()

    def users(self, argument: str) -> list[str]:
        members = self.server.who()
        if not members:
            return ["No one is online."]
        away, guests = self.server.away_messages(), self.server.guests()
        return [f"{len(members)} online:"] + [
            f"  {printable_text(name)}{GUEST_MARK if name in guests else ''}"
            f" ({format_duration(seconds)}{_away_note(away, name)})"
            for name, seconds in members
        ]

    def kick(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /kick NAME [REASON], or /kick #ROOM NAME [REASON]"]
        if argument.startswith("#"):  # IRC's KICK #channel nick: out of the room, not the chat
            room, _, rest = argument.partition(" ")
            if not rest.strip():
                return ["Usage: /kick #ROOM NAME [REASON]"]
            name, reason = split_name(rest.strip(), self.server.names())
            return [printable_text(line) for line in self.server.kick_from_room(room, name, reason, by=self.actor)]
        name, reason = split_name(argument, self.server.names())
        shown = printable_text(name)
        if self.server.kick(name, reason, by=self.actor):
            return [f"Kicked {shown}."]
        if self.server.locate(name) is not None:
            return [f"{shown} is on another server of the cluster: kick them there."]
        return [f"No one called {shown} is online."]

    def close(self, argument: str) -> list[str]:
        room, _, reason = argument.partition(" ")
        if not room.startswith("#"):
            return ["Usage: /close #ROOM [REASON]"]
        return [printable_text(line) for line in self.server.close_room(room, reason.strip(), by=self.actor)]

    def say(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /say TEXT"]
        self.server.notify_all(argument, by=self.actor)
        return ["Notice sent."]

    def ban(self, argument: str) -> list[str]:
        if not argument:
            return [f"Usage: {BAN_USAGE}"]
        first, _, rest = argument.partition(" ")
        if parse_target(first) is not None:
            target, rest = first, rest.strip()
        else:
            target, rest = split_name(argument, self.server.names())
        word, _, reason = rest.partition(" ")
        seconds = parse_duration(word)
        if seconds is None:
            reason = rest
        return self.server.ban(target, seconds, reason.strip(), by=self.actor, by_key=self.actor_key)

    def unban(self, argument: str) -> list[str]:
        if not argument:
            return ["Usage: /unban NAME|FINGERPRINT|ADDRESS"]
        return self.server.unban(argument, by=self.actor)

    def bans(self, argument: str) -> list[str]:
        return self.server.ban_lines()

    def reload(self, argument: str) -> list[str]:
        return self.server.reload_allow_list()

    def invite(self, argument: str) -> list[str]:
        words = argument.split()
        if not words:
            return ["Usage: /invite FINGERPRINT [NAME] or /invite ssh-ed25519 AAAA... [COMMENT]"]
        if words[0].startswith(("ssh-", "ecdsa-", "sk-")):
            # A .pub file's line: the words after the key are its comment
            # (alice@laptop), never a name.
            return self.server.invite(" ".join(words[:2]), None, comment=" ".join(words[2:]))
        fingerprint, _, name = argument.strip().partition(" ")
        return self.server.invite(fingerprint, name.strip() or None)

    def release(self, argument: str) -> list[str]:
        if not argument.strip():
            return ["Usage: /release NAME"]
        return self.server.release(argument.strip(), by=self.actor)

    def forget(self, argument: str) -> list[str]:
        if not argument.strip():
            return ["Usage: /forget ID"]
        return self.server.forget_line(argument.strip())

    def quit(self, argument: str) -> list[str]:
        raise ConsoleQuit()


def _away_note(away: dict[str, str], name: str) -> str:
    """``, away: MESSAGE`` for a member who is away (``away``: by name)."""
    message = away.get(name)
    if message is None:
        return ""
    return f", away: {printable_text(message)}" if message else ", away"


BAN_USAGE = "/ban NAME|FINGERPRINT|ADDRESS [DURATION] [REASON]"

#: The commands an operator runs from their own client too (``/help`` there
#: shows them to operators alone).
OPERATOR_COMMANDS: CommandTable[OperatorConsole, list[str]] = CommandTable(
    [
        Command(
            "/kick",
            "[#ROOM] NAME [REASON]",
            "disconnect NAME, telling them why; with #ROOM: take them out of that room only",
            OperatorConsole.kick,
        ),
        Command(
            "/ban",
            "NAME|FINGERPRINT|ADDRESS [DURATION] [REASON]",
            "keep a key (a guest: an address or network) out, for DURATION (10m, 2h, 7d) or for ever; "
            "disconnects it now",
            OperatorConsole.ban,
        ),
        Command("/unban", "NAME|FINGERPRINT|ADDRESS", "lift a ban", OperatorConsole.unban),
        Command("/bans", "", "the bans in force", OperatorConsole.bans),
        Command(
            "/release",
            "NAME",
            "free a registered name: any key may take it (and register it) again",
            OperatorConsole.release,
        ),
        Command("/say", "TEXT", "send a notice to everyone", OperatorConsole.say),
        Command("/close", "#ROOM [REASON]", "close a room: everyone in it is told why", OperatorConsole.close),
    ]
)

COMMANDS: CommandTable[OperatorConsole, list[str]] = CommandTable(
    [
        Command("/help", "", "list these commands", OperatorConsole.help),
        Command("/users", "", "who is online, and for how long", OperatorConsole.users),
        *OPERATOR_COMMANDS,
        Command(
            "/reload",
            "",
            "read the allow file (--allow) and the operators file (--operators) again, as SIGHUP does",
            OperatorConsole.reload,
        ),
        Command(
            "/invite",
            "FINGERPRINT [NAME]",
            "let a key in (NAME: a name for it alone), adding it to the allow file; "
            "or paste a .pub line: /invite ssh-ed25519 AAAA... [COMMENT]",
            OperatorConsole.invite,
        ),
        Command(
            "/forget",
            "ID",
            "take the line with that message ID out of the history (clients show IDs with --ids)",
            OperatorConsole.forget,
        ),
        Command("/quit", "", "stop the server (everyone is told)", OperatorConsole.quit),
    ]
)


def complete(typed: str, names: list[str]) -> list[str]:
    """Whole-line completions of ``typed`` (the line up to the cursor): a
    command after ``/`` at the start, a name (of this server: the only ones
    it can kick) after ``/kick `` and ``/ban ``."""
    folded = typed.casefold()
    for command in ("/kick ", "/ban "):
        if folded.startswith(command):
            partial = typed[len(command) :].casefold()
            return [f"{typed[: len(command)]}{name} " for name in names if name.casefold().startswith(partial)]
    if typed.startswith("/") and " " not in typed:
        return [f"{name} " for name in COMMANDS.names() if name.startswith(folded)]
    return []


def _show(line: str) -> None:
    print(line, flush=True)


def run_console(
    console: OperatorConsole, read_line: Callable[[], str] = input, show: Callable[[str], None] = _show
) -> None:
    """The console thread: run typed lines until /quit or the end of input,
    then stop the server (the main thread then says goodbye to everyone)."""
    show("Operator console: type /help for the commands.")
    try:
        while True:
            for line in console.execute(read_line()):
                show(line)
    except (ConsoleQuit, EOFError):
        pass
    except ConsoleClosed:
        return
    except OSError as exc:
        # EIO: the server was put in the background (SIGTTIN is ignored).
        # The console ends; the server goes on.
        log.info("Operator console closed: %s", exc.strerror or exc)
        return
    console.server.shutdown()


class _LogAboveInput(logging.Handler):
    """Log records shown as the client shows chat lines: above the line
    being typed, which is then redrawn as it was."""

    def __init__(self, terminal: Terminal, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.terminal = terminal
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.terminal.show(self.format(record))
        except Exception:  # as logging.StreamHandler: a failed log line must not end the caller
            self.handleError(record)


@contextlib.contextmanager
def on_terminal(console: OperatorConsole, stdin: TextIO) -> Iterator[tuple[Callable[[], str], Callable[[str], None]]]:
    """(read_line, show) for ``run_console`` on a terminal: prompt_toolkit with
    completion, and every log line written to the terminal routed above the
    input line. Off a terminal (output to a pipe or a file): ``input`` and
    ``print``, unchanged. At the end, the log goes back where it was, and the
    terminal's modes too (a line may be being read in the console thread when
    the server stops)."""
    if not (stdin.isatty() and sys.stdout.isatty()):
        yield input, _show
        return
    modes = termios.tcgetattr(stdin.fileno())  # before Terminal turns the echo off between lines
    terminal = Terminal(interactive=True)
    terminal.enable_completion(console.server.names, complete=complete)
    moved = _log_above_input(terminal)
    try:
        yield (lambda: _read_line(terminal)), terminal.show
    finally:
        terminal.leave_input()
        terminal.restore()
        _log_as_before(moved)
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, modes)


def _read_line(terminal: Terminal) -> str:
    """The next line typed at the console. Ctrl-C, a key while the terminal
    is raw, is what it is at a server without a console: SIGINT's
    KeyboardInterrupt in the main thread, which stops the server."""
    try:
        return terminal.read_line(PROMPT)
    except KeyboardInterrupt:
        # To the main thread, as the terminal's SIGINT would go: it wakes its wait.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        raise ConsoleClosed from None


def _log_above_input(terminal: Terminal) -> list[logging.Handler]:
    """Route the root logger's handlers that write to a terminal through
    ``terminal``; the handlers taken out."""
    root = logging.getLogger()
    moved: list[logging.Handler] = [
        h for h in root.handlers if isinstance(h, logging.StreamHandler) and _is_terminal(h.stream)
    ]
    for handler in moved:
        root.removeHandler(handler)
        root.addHandler(_LogAboveInput(terminal, handler.formatter))
    return moved


def _log_as_before(moved: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for added in [h for h in root.handlers if isinstance(h, _LogAboveInput)]:
        root.removeHandler(added)
    for handler in moved:
        root.addHandler(handler)


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def console_wanted(stdin: TextIO) -> bool:
    """Run the console if stdin is a terminal and the server is not a
    background job of it (reading would stop the whole server with SIGTTIN)."""
    if not stdin.isatty():
        return False
    try:
        return os.tcgetpgrp(stdin.fileno()) == os.getpgrp()
    except OSError:
        return True  # a terminal, but not ours to control: no job control applies
