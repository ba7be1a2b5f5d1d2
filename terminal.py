"""The client's terminal: all its printing, and the line being typed.

On a terminal, a line that arrives while the person is typing is printed
above the prompt, and the half-typed line is redrawn. Off a terminal (a
pipe), no prompt and no escape codes are written.
"""

from __future__ import annotations

import sys
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING

import client_ui
from client_ui import Session, Style

if TYPE_CHECKING:
    import ctypes  # imported when used: a platform may lack it

__all__ = ["Terminal", "Display"]

PROMPT_DRAW_WAIT = 0.5  # seconds a line waits for readline to draw its prompt, at most


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
        self._readline: ModuleType | None = None
        self._redisplay: ctypes.CDLL | None = None
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
        if self._readline and self._redisplay:
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

    def enable_completion(self, names, complete=client_ui.complete) -> None:
        """Tab completes names and commands (``names()`` gives those online;
        ``complete(typed, names)`` the whole-line completions, the client's
        by default). The whole line is completed, since names may hold spaces."""
        if self._readline is None:
            return
        readline = self._readline
        matches: list[str] = []

        def completer(text: str, state: int) -> str | None:
            nonlocal matches
            if state == 0:
                matches = complete(readline.get_line_buffer()[: readline.get_endidx()], names())
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

    def leave_input(self) -> None:
        """Erase the line being typed, if one is, for good: the program ends
        while another thread still reads it (the server's console). Lines
        shown after this are only printed."""
        with self._lock:
            if self._prompt is not None:
                self._erase_input()
                sys.stdout.flush()
            self._prompt = self._asked = None
            self._redisplay = None
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


def _readline_redisplay(readline: ModuleType) -> ctypes.CDLL | None:
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

    def __init__(
        self, terminal: Terminal, session: Session, style: Style, timestamps: bool = False, clock=time.time
    ) -> None:
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
