"""The terminal shared by the client and the operator console, importing
neither: all their printing, the line being typed (prompt_toolkit), and the
history of typed lines.

On a terminal, the line is read with prompt_toolkit's ``PromptSession``,
whose event loop runs in the reading thread and alone draws: a line shown
from another thread is handed to that loop, which takes the prompt and the
typed line off the screen, prints the line and draws them again, between two
keys. Off a terminal (a pipe), no prompt and no escape codes are written.
What is shown (the client's events, the console's log) and what Tab
completes are the callers' business: they hand in lines and a completer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # prompt_toolkit is imported when a line is first read on a terminal: a pipe needs none of it
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application import Application
    from prompt_toolkit.completion import Completer
    from prompt_toolkit.history import History
    from prompt_toolkit.input import Input
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.output.vt100 import Vt100_Output

__all__ = ["Terminal", "HISTORY_LENGTH", "LineCompleter"]

#: Whole-line completions: ``complete(typed, names)`` is given the line up
#: to the cursor and the names to complete, and returns the full lines.
LineCompleter = Callable[[str, list[str]], list[str]]

HISTORY_LENGTH = 1000  # lines kept in a history file
# How interrupt() wakes the main thread from a read that no event loop runs
# (a pipe's). Not SIGINT: a job started in the background by a script has
# SIGINT ignored from the start.
WAKE_SIGNAL = signal.SIGUSR1
LEAVE_WAIT = 1.0  # seconds leave_input waits for a read in another thread to end


def _whole_lines(names: Callable[[], list[str]], complete: LineCompleter) -> Completer:
    """prompt_toolkit's side of a ``LineCompleter``: each completion replaces
    the line up to the cursor (names may hold spaces)."""
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class WholeLines(Completer):
        def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
            typed = document.text_before_cursor
            for line in complete(typed, names()):
                yield Completion(line, start_position=-len(typed))

    return WholeLines()


class Terminal:
    """All printing. On a terminal, a line that arrives while the person is
    typing is printed above the prompt, and the half-typed line is redrawn.
    Off a terminal (a pipe), no prompt and no escape codes are written."""

    def __init__(self, interactive: bool, hide_typing: bool = False) -> None:
        """``hide_typing``: the terminal's echo is off while no line is read
        (the chat client's pasting; the caller must ``restore()``)."""
        self.interactive = interactive
        # Guards the reading state below and every write: one line is
        # printed whole before the next.
        self._lock = threading.Lock()
        self._read_over = threading.Condition(self._lock)
        self._app: Application[str] | None = None  # the prompt being read, while its loop runs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prompt: str | None = None
        self._waiting: list[tuple[TextIO, str]] = []  # lines handed to the loop, not yet printed
        self._interrupt: BaseException | None = None  # to raise in the reading thread (interrupt())
        self._blocked = False  # the main thread reads where only a signal wakes it (_read_blocking)
        self._to_insert = ""  # text the next line starts with
        self._pasted = ""  # a paste's lines after its first, for pending_input
        self._left_typed = ""  # the line being typed when a read was interrupted
        self._history: list[str] = []  # the lines typed, oldest first
        self._completion: tuple[Callable[[], list[str]], LineCompleter] | None = None
        self._made_input: Input | None = None
        self._sessions: dict[bool, PromptSession[str]] = {}
        # The client's rooms (enable_rooms): switch, the prompt, the status line.
        self._rooms: tuple[Callable[[str], bool], Callable[[], str], Callable[[], str]] | None = None
        #: After Enter, take the typed line off the screen: the server's
        #: echo shows it as the others see it (the client sets this).
        self.erase_entered = False
        #: A paste, and Alt-Enter (Esc, Enter), make one line of several
        #: (LF between them) that Enter gives whole, instead of a line
        #: each (the client sets this for a server that takes blocks).
        self.multiline = False
        # The terminal's modes as found, and the same with its echo off.
        self._saved_modes, self._quiet_modes = _terminal_modes() if interactive and hide_typing else (None, None)
        self._hide_typing()
        if interactive and sys.stdout.isatty():
            self._session(True)  # prompt_toolkit loaded now, not as the first line is asked for

    @property
    def edits_blocks(self) -> bool:
        """Whether lines are edited here (prompt_toolkit), so that a block
        of several can be: on a terminal, with output to it too."""
        return self.interactive and sys.stdout.isatty()

    @property
    def prompt(self) -> str | None:
        """The prompt of the line being read; None between lines."""
        return self._prompt

    def start_next_line_with(self, text: str) -> None:
        """The next line read begins with ``text``, as if typed (the part of
        a paste after its last line end, or the line typed when the
        connection dropped)."""
        self._to_insert = text

    def typed_text(self) -> str:
        """What is typed at the prompt now, not yet entered ("" if none);
        after a read ``interrupt()`` ended, what was typed then."""
        with self._lock:
            return self._left_typed if self._app is None else self._app.current_buffer.text

    def pending_input(self) -> tuple[str, bool]:
        """What was typed or pasted and waits unread, read now without
        waiting (line ends as LF), and whether input ended. Only on a
        terminal; no prompt has seen it (the keys prompt_toolkit read ahead
        of the last Enter come first)."""
        if not self.interactive:
            return "", False
        text, self._pasted = self._pasted, ""
        if self._made_input is not None:  # what prompt_toolkit read past the last Enter
            from prompt_toolkit.input.typeahead import get_typeahead

            text += "".join(key.data for key in get_typeahead(self._made_input))
        data = b""
        with contextlib.suppress(OSError, ValueError):
            while select.select([sys.stdin], [], [], 0)[0]:
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:
                    return _typed_text(text, data), True
                data += chunk
        return _typed_text(text, data), False

    def bell(self) -> None:
        """Ring the terminal's bell."""
        self._print(sys.stdout, "\a", end="")

    def _hide_typing(self) -> None:
        """The terminal's own echo off while no line is read: what is typed
        or pasted meanwhile (the client paces a paste, or the next prompt is
        not drawn yet) then waits unseen, instead of being echoed over the
        client's output. prompt_toolkit puts the terminal in raw mode while
        it reads (its echo off too), and back as it found it (echo off) when
        done; ``restore`` leaves the modes as they were at the start."""
        if self._quiet_modes is not None:
            _set_modes(self._quiet_modes)

    def _show_typing(self) -> None:
        if self._saved_modes is not None:
            _set_modes(self._saved_modes)

    def load_history(self, path: Path | None) -> None:
        """Recall the lines typed in earlier runs (at most
        ``HISTORY_LENGTH``, one a line, as GNU readline kept them) from
        ``path``, if it exists; with None, keep none."""
        if path is None:
            return
        with contextlib.suppress(OSError):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for line in lines[-HISTORY_LENGTH:]:
                if line and line != "_HiStOrY_V2_":  # libedit's header
                    self._history.append(line)

    def save_history(self, path: Path | None) -> None:
        """Write the history to ``path`` (its last ``HISTORY_LENGTH`` lines),
        readable by its owner only (mode 0600; its folder 0700 if made);
        with None, nothing. A history that cannot be written is no reason to
        fail: it is left unwritten."""
        if path is None or not self.interactive:
            return
        # One line an entry, as readline keeps them: a block is recalled in
        # this run only.
        lines = [line for line in self._history if "\n" not in line][-HISTORY_LENGTH:]
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Made 0600 before anything is in it; a link planted there is not followed.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            descriptor = os.open(path, flags, 0o600)
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.writelines(f"{line}\n" for line in lines)

    def restore(self) -> None:
        """Leave the terminal's modes as they were found."""
        self._show_typing()
        self._saved_modes = self._quiet_modes = None

    def enable_completion(self, names: Callable[[], list[str]], complete: LineCompleter) -> None:
        """Tab completes names and commands (``names()`` gives those online;
        ``complete(typed, names)`` the whole-line completions: the client's
        or the console's). The whole line is completed, since names may hold
        spaces; several completions are listed below, as readline does."""
        self._completion = names, complete
        if True in self._sessions:  # else made with it
            self._sessions[True].completer = _whole_lines(names, complete)

    def enable_rooms(self, switch: Callable[[str], bool], prompt: Callable[[], str], status: Callable[[], str]) -> None:
        """Alt-1..Alt-9, Ctrl-N and Ctrl-P switch rooms while the person is
        in one: ``switch("3")``, ``switch("next")``, ``switch("previous")``
        (True if it did), and the prompt being read becomes ``prompt()``.
        ``status()``, when not empty, is the status line below the prompt."""
        self._rooms = (switch, prompt, status)

    def _status_shown(self, session: PromptSession[str] | None) -> None:
        """The status line below the prompt while there is one to show (in
        a room); none at all in the lobby alone, as before rooms."""
        if session is not None:
            wanted = self._rooms is not None and bool(self._rooms[2]())
            session.bottom_toolbar = self._status_line if wanted else None

    def _status_line(self) -> str:
        return f" {self._rooms[2]()} " if self._rooms is not None else ""

    def show(self, line: str) -> None:
        """Print ``line``; above the prompt and the typed line while one is
        read (by the reading thread's loop, between two keys)."""
        self._print(sys.stdout, line)

    def error(self, text: str) -> None:
        """Print ``text`` on stderr (above the line being typed, if one is)."""
        self._print(sys.stderr, text)

    def _print(self, stream: TextIO, text: str, end: str = "\n") -> None:
        with self._lock:
            self._print_locked(stream, text, end)

    def _print_locked(self, stream: TextIO, text: str, end: str = "\n") -> None:
        if self._app is None or self._loop is None:
            stream.write(text + end)
            stream.flush()
            return
        self._waiting.append((stream, text + end))
        if len(self._waiting) == 1:  # else a flush is on its way
            with contextlib.suppress(RuntimeError):  # the loop has just closed: read_line prints them
                self._loop.call_soon_threadsafe(self._print_waiting)

    def _print_waiting(self) -> None:
        """In the reading thread's loop: the prompt off, the waiting lines
        printed, the prompt drawn again (prompt_toolkit's renderer keeps the
        typed line and the cursor as they were)."""
        with self._lock:
            app, waiting = self._app, self._waiting
            if app is None or app.is_done or not waiting:
                return  # read_line prints them once the read is over
            self._waiting = []
            app.renderer.erase()
            for stream, text in waiting:
                if stream is sys.stdout:
                    app.output.write_raw(text)  # the terminal maps LF to CR LF (raw mode keeps OPOST)
                else:
                    app.output.flush()
                    stream.write(text)
                    stream.flush()
            app.output.flush()
            chat = self._sessions.get(True)
            if chat is not None and chat.app is app and self._rooms is not None:
                chat.message = self._rooms[1]()  # a room joined or left meanwhile: its prompt
                self._status_shown(chat)  # and the counts, which may have changed
        app.invalidate()

    def interrupt(self, exc: BaseException, erase: bool = True) -> None:
        """From any thread: end the line being read with ``exc`` raised in
        the reading thread (the next read, if none is under way), its typed
        text kept for ``typed_text()``; taken off the screen if ``erase``."""
        with self._lock:
            self._interrupt = exc
            app, loop = self._app, self._loop
            if self._blocked:  # reading a pipe (or input()) in the main thread
                signal.pthread_kill(threading.main_thread().ident or 0, WAKE_SIGNAL)
            if app is None or loop is None:
                return
            with contextlib.suppress(RuntimeError):  # the loop closed: the read is over
                loop.call_soon_threadsafe(self._end_read, app, exc, erase)

    def forget_interrupt(self) -> None:
        """Drop an ``interrupt()`` that no read has raised yet: the reading
        it was meant for is over."""
        with self._lock:
            self._interrupt = None

    def _end_read(self, app: Application[str], exc: BaseException, erase: bool) -> None:
        if app.is_done:
            return
        self._left_typed = app.current_buffer.text
        app.erase_when_done = erase
        app.exit(exception=exc)

    def read_line(self, prompt: str, remember: bool = True) -> str:
        """The next line typed; kept in the history if ``remember``.
        Raises EOFError at the end of input (Ctrl-D at an empty line),
        KeyboardInterrupt for Ctrl-C, and what ``interrupt()`` was given."""
        if not self.interactive:
            line = self._read_blocking(sys.stdin.readline)
            if not line:
                raise EOFError
            return line.rstrip("\r\n")
        if not sys.stdout.isatty():  # typing at a terminal, output to a file: no drawing
            self._show_typing()  # input() reads in the terminal's own mode: its echo shows what is typed
            try:
                return self._read_blocking(lambda: input(prompt))
            finally:
                self._hide_typing()
        with self._lock:
            interrupted, self._interrupt = self._interrupt, None
        if interrupted is not None:
            raise interrupted
        pasted = self._next_pasted(prompt, remember)
        if pasted is not None:
            return pasted
        session = self._session(remember)
        default, self._to_insert = self._to_insert, ""
        self._left_typed = ""
        # The echo stays off: prompt_toolkit's raw mode has it off too, and
        # turned on here, the keys typed before its loop runs (the rest of a
        # paste, a key pressed as the line before is sent) would be echoed
        # by the terminal over the lines printed meanwhile.
        self._status_shown(session if remember else None)
        try:
            return session.prompt(prompt, default=default, pre_run=lambda: self._reading(session, prompt))
        finally:
            with self._lock:
                self._app = self._loop = self._prompt = None
                waiting, self._waiting = self._waiting, []
                for stream, text in waiting:
                    stream.write(text)
                    stream.flush()
                self._read_over.notify_all()
            self._hide_typing()

    def _read_blocking(self, read: Callable[[], str]) -> str:
        """``read()`` (a pipe's line, or ``input``), which no loop runs: an
        ``interrupt()`` wakes it with WAKE_SIGNAL when it reads in the main
        thread (the client), whose handler raises what it was given."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(WAKE_SIGNAL, self._woken) if in_main else None
        try:
            with self._lock:
                interrupted, self._interrupt = self._interrupt, None
                self._blocked = in_main and interrupted is None
            if interrupted is not None:
                raise interrupted
            return read()
        finally:
            with self._lock:  # interrupt() signals no more once this is seen
                self._blocked = False
            if in_main:
                # A signal interrupt() sent just before may land after the
                # read: under SIG_DFL it would kill the process.
                signal.signal(WAKE_SIGNAL, signal.SIG_IGN if previous in (signal.SIG_DFL, None) else previous)

    def _woken(self, signum: int, frame: object) -> None:
        # In the main thread, which may hold the lock: it is not taken here.
        interrupted = self._interrupt
        if self._blocked and interrupted is not None:
            self._blocked, self._interrupt = False, None
            raise interrupted

    def _next_pasted(self, prompt: str, remember: bool) -> str | None:
        """The next line of a bracketed paste, as if typed and entered (None
        if none is whole: the part after its last line end is typed on)."""
        line, newline, rest = self._pasted.partition("\n")
        if not newline:
            self._to_insert, self._pasted = self._to_insert + line, ""
            return None
        self._pasted = rest
        if not self.erase_entered:  # as a line typed stays on the screen
            self._print(sys.stdout, prompt + line)
        if remember and line:
            self._session(remember).history.append_string(line)
        return line

    def _reading(self, session: PromptSession[str], prompt: str) -> None:
        """In the loop, as the read begins: lines shown from now on go
        through it. An interrupt() that came just before ends it at once."""
        with self._lock:
            self._app, self._loop, self._prompt = session.app, asyncio.get_running_loop(), prompt
            if self._rooms is not None and session is self._sessions.get(True):
                # A room joined or left since the prompt was chosen, its line
                # printed before this read began: the prompt follows it.
                session.message = self._prompt = self._rooms[1]()
                self._status_shown(session)
            interrupted, self._interrupt = self._interrupt, None
            if self._waiting:
                self._loop.call_soon(self._print_waiting)
        session.app.erase_when_done = False
        if interrupted is not None:
            self._end_read(session.app, interrupted, True)

    def _session(self, remember: bool) -> PromptSession[str]:
        """The PromptSession for lines kept in the history, or for the
        others (the username, the answer about a server's key)."""
        if remember not in self._sessions:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import InMemoryHistory
            from prompt_toolkit.input import create_input
            from prompt_toolkit.shortcuts import CompleteStyle

            if self._made_input is None:
                self._made_input = create_input(sys.stdin)
            self._sessions[remember] = PromptSession(
                history=_list_history(self._history) if remember else InMemoryHistory(),
                completer=_whole_lines(*self._completion) if remember and self._completion else None,
                complete_style=CompleteStyle.READLINE_LIKE,
                key_bindings=self._key_bindings(),
                input=self._made_input,
                output=_output(),
                enable_history_search=False,
                enable_suspend=True,  # Ctrl-Z suspends, as it did under readline
                prompt_continuation=_continuation,
            )
        return self._sessions[remember]

    def _key_bindings(self) -> KeyBindings:
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
        from prompt_toolkit.keys import Keys

        bindings = KeyBindings()
        in_rooms = Condition(lambda: self._rooms is not None and bool(self._rooms[2]()))

        def switch_to(which: str) -> Callable[[KeyPressEvent], None]:
            def switch(event: KeyPressEvent) -> None:
                if self._rooms is not None and self._rooms[0](which):
                    session = self._sessions.get(True)
                    if session is not None:
                        session.message = self._rooms[1]()
                        self._status_shown(session)
                    event.app.invalidate()

            return switch

        for number in range(1, 10):  # Alt-N: ESC then N, as terminals send it
            bindings.add("escape", str(number), filter=in_rooms)(switch_to(str(number)))
        bindings.add(Keys.ControlN, filter=in_rooms)(switch_to("next"))
        bindings.add(Keys.ControlP, filter=in_rooms)(switch_to("previous"))

        @bindings.add(Keys.Enter)
        @bindings.add(Keys.ControlJ)  # LF: Enter on a terminal that sends it
        def _(event: KeyPressEvent) -> None:
            # The line typed makes way for the server's echo of it.
            event.app.erase_when_done = self.erase_entered
            event.current_buffer.validate_and_handle()

        blocks = Condition(lambda: self.multiline)

        @bindings.add("escape", "enter", filter=blocks)  # Alt-Enter: the terminal sends Esc, CR
        @bindings.add("escape", "c-j", filter=blocks)
        def _(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @bindings.add(Keys.BracketedPaste)
        def _(event: KeyPressEvent) -> None:
            text = event.data.replace("\r\n", "\n").replace("\r", "\n")
            if self.multiline:
                # One message, however many lines: Enter sends it. The line
                # end a copied block usually ends with is not kept.
                event.current_buffer.insert_text(text.rstrip("\n"))
                return
            # A paste of several lines is several lines typed: the first
            # is entered, the others wait for pending_input, as the keys of
            # a paste without bracketed paste do.
            first, newline, rest = text.partition("\n")
            event.current_buffer.insert_text(first)
            if newline:
                self._pasted += rest
                event.app.erase_when_done = self.erase_entered
                event.current_buffer.validate_and_handle()

        return bindings

    def leave_input(self) -> None:
        """Erase the line being typed, if one is, for good: the program ends
        while another thread still reads it (the server's console). Lines
        shown after this are only printed."""
        self.interrupt(EOFError())
        with self._lock:
            self._read_over.wait_for(lambda: self._app is None, LEAVE_WAIT)


def _list_history(lines: list[str]) -> History:
    """prompt_toolkit's history over ``lines`` (the Terminal's list, kept in
    the file by ``save_history``): lines entered are appended to it."""
    from prompt_toolkit.history import History

    class ListHistory(History):
        def load_history_strings(self) -> Iterable[str]:
            return reversed(list(lines))  # newest first, as prompt_toolkit asks

        def store_string(self, string: str) -> None:
            lines.append(string)

    return ListHistory()


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    """Before each line of a block after its first: the prompt's width in
    spaces, so that the lines stand under each other (a line wrapped by
    the screen's width starts at its left edge, as before)."""
    return "" if wrap_count else " " * width


def _output() -> Vt100_Output:
    """prompt_toolkit's output on stdout, without cursor position requests:
    nothing is drawn below the prompt (completions are listed as readline
    lists them), and an answer that comes late is taken for typed keys."""
    from prompt_toolkit.output.vt100 import Vt100_Output

    class Output(Vt100_Output):
        def get_rows_below_cursor_position(self) -> int:
            # Without cursor position requests prompt_toolkit cannot know
            # the rows below the prompt, and would draw no status line:
            # the one it needs is there (the terminal scrolls if not).
            return 1

    output = Output.from_pty(sys.stdout)
    output.enable_cpr = False
    return output


def _typed_text(text: str, data: bytes) -> str:
    # Enter is CR in raw mode, LF once the terminal maps it.
    typed = text + data.decode("utf-8", errors="replace")
    return typed.replace("\r\n", "\n").replace("\r", "\n")


def _terminal_modes() -> tuple[list | None, list | None]:
    """stdin's terminal modes, and the same without echo; Nones if stdin is
    no terminal (or the platform has no termios)."""
    try:
        import termios
    except ImportError:
        return None, None
    try:
        modes = termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError, ValueError):
        return None, None
    quiet = [*modes[:3], modes[3] & ~(termios.ECHO | termios.ECHONL), *modes[4:]]
    return modes, quiet


def _set_modes(modes: list) -> None:
    import termios

    with contextlib.suppress(termios.error, OSError, ValueError):  # the terminal is gone
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, modes)
