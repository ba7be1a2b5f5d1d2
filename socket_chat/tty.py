"""The terminal shared by the client and the operator console, importing
neither: all their printing, the line being typed, and readline's history.

On a terminal, a line that arrives while the person is typing is printed
above the prompt, and the half-typed line is redrawn, by the thread that
handles the keys when that is the main thread (the client), between two
keys. Off a terminal (a pipe), no prompt and no escape codes are written.
What is shown (the client's events, the console's log) and what Tab
completes are the callers' business: they hand in lines and a completer.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["Terminal", "HISTORY_LENGTH"]

#: Whole-line completions: ``complete(typed, names)`` is given the line up
#: to the cursor and the names to complete, and returns the full lines.
Completer = Callable[[str, list[str]], list[str]]

HISTORY_LENGTH = 1000  # lines kept in a history file

# How another thread asks the main thread, reading with readline, to draw
# its lines (the client's wake-up for the server's end is SIGUSR1).
DRAW_SIGNAL = signal.SIGUSR2
DRAW_REPEAT = 0.005  # seconds between asks: one that lands while readline handles a key waits for the next
# Seconds a handed line waits for the main thread at most (it draws once
# the keys waiting are handled, so only a long paste makes a line wait).
HAND_OFF_WAIT = 5.0

# Where readline reads in another thread (the operator console):
SHOW_WAIT = 1.0  # seconds a line waits for readline to be still, at most; then it is printed
KEYS_TAKEN_POLL = 0.002  # seconds between looks
# rl_readline_state flags (readline.h) set while a key is read or handled, or
# the line redrawn: READCMD, DISPATCHING, MOREINPUT, INPUTPENDING, MULTIKEY,
# REDISPLAYING.
_RL_BUSY = 0x8 | 0x20 | 0x40 | 0x20000 | 0x200000 | 0x1000000


class Terminal:
    """All printing. On a terminal, a line that arrives while the person is
    typing is printed above the prompt, and the half-typed line is redrawn.
    Off a terminal (a pipe), no prompt and no escape codes are written."""

    def __init__(self, interactive: bool, hide_typing: bool = False) -> None:
        """``hide_typing``: the terminal's echo is off while readline does
        not read (the chat client's pasting; the caller must ``restore()``)."""
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
        self._drawing = False  # input() was called and readline has not yet drawn the prompt
        self._input_erased = False  # error() took the typed line off the screen
        self._to_insert = ""  # text readline starts the next line with
        #: After Enter, take the typed line off the screen: the server's
        #: echo shows it as the others see it (the client sets this).
        self.erase_entered = False
        # The terminal's modes as found, and the same with its echo off.
        self._saved_modes, self._quiet_modes = _terminal_modes() if interactive and hide_typing else (None, None)
        self._hide_typing()
        self._prompt_ready = threading.Condition(self._lock)
        # Lines other threads hand to the main thread while it reads, and
        # how many were ever handed and drawn (each waits for its number).
        self._handed: list[str] = []
        self._handed_count = self._drawn_count = 0
        self._main_reads = False  # the main thread is in read_line, with readline
        self._completing = False  # readline is running our completer (Tab)
        if self._readline and self._redisplay:
            # A line that arrives while readline draws a new prompt waits
            # until it is drawn, then goes above it. Without this, a line
            # arriving just after Enter erased the row of the line just
            # typed, or was printed after the prompt, or into it. GNU
            # readline calls this hook once the prompt is drawn.
            self._readline.set_pre_input_hook(self.prompt_drawn)

    @property
    def prompt(self) -> str | None:
        """The prompt of the line being read, once readline has drawn it;
        None between lines."""
        return self._prompt

    def prompt_drawn(self) -> None:
        """Readline's pre-input hook, run in the reading thread once the
        prompt is drawn: the line starts with what ``start_next_line_with``
        gave, and the lines that waited for the prompt may now be drawn
        above it. A subclass may extend it (a test slows it down)."""
        if self._to_insert and self._readline is not None:
            self._readline.insert_text(self._to_insert)
            self._readline.redisplay()
            self._to_insert = ""
        with self._prompt_ready:
            self._drawing = False
            self._prompt = self._asked
            self._prompt_ready.notify_all()

    def start_next_line_with(self, text: str) -> None:
        """The next line read begins with ``text``, as if typed (the part of
        a paste after its last line end, or the line typed when the
        connection dropped)."""
        self._to_insert = text

    def typed_text(self) -> str:
        """What is typed at the prompt now, not yet entered ("" if none)."""
        if not (self._readline and self._prompt is not None):
            return ""
        try:
            return self._readline.get_line_buffer()
        except ValueError:  # read while readline changes it (another thread): none to keep
            return ""

    def pending_input(self) -> tuple[str, bool]:
        """What was typed or pasted and waits unread in the terminal, read
        now without waiting (line ends as LF), and whether input ended.
        Only on a terminal; readline has not seen it."""
        if not self.interactive:
            return "", False
        data = b""
        while select.select([sys.stdin], [], [], 0)[0]:
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return _typed_text(data), True
            data += chunk
        return _typed_text(data), False

    def bell(self) -> None:
        """Ring the terminal's bell."""
        with self._lock:
            sys.stdout.write("\a")
            sys.stdout.flush()

    def _hide_typing(self) -> None:
        """The terminal's own echo off while readline does not read: what is
        typed or pasted meanwhile (the client paces a paste) then waits
        unseen, instead of being echoed over the client's output. Around
        input() the modes are as found: readline echoes only if the terminal
        did when it started."""
        if self._quiet_modes is not None:
            _set_modes(self._quiet_modes)

    def _show_typing(self) -> None:
        if self._saved_modes is not None:
            _set_modes(self._saved_modes)

    def load_history(self, path: Path | None) -> None:
        """Recall the lines typed in earlier runs (readline's history, at
        most ``HISTORY_LENGTH``) from ``path``, if it exists; with None,
        keep none."""
        if self._readline is not None and path is not None:
            self._readline.set_history_length(HISTORY_LENGTH)
            with contextlib.suppress(FileNotFoundError):
                self._readline.read_history_file(str(path))

    def save_history(self, path: Path | None) -> None:
        """Write readline's history to ``path``, readable by its owner only
        (mode 0600; its folder 0700 if made); with None, nothing. A history
        that cannot be written is no reason to fail: it is left unwritten."""
        if self._readline is None or path is None:
            return
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Made 0600 before anything is in it; a link planted there is not followed.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
            os.chmod(path, 0o600)
            self._readline.write_history_file(str(path))

    def restore(self) -> None:
        """Leave the terminal's modes as they were found."""
        self._show_typing()
        self._saved_modes = self._quiet_modes = None

    def enable_completion(self, names: Callable[[], list[str]], complete: Completer) -> None:
        """Tab completes names and commands (``names()`` gives those online;
        ``complete(typed, names)`` the whole-line completions: the client's
        or the console's). The whole line is completed, since names may hold
        spaces."""
        if self._readline is None:
            return
        readline = self._readline
        matches: list[str] = []

        def completer(text: str, state: int) -> str | None:
            nonlocal matches
            self._completing = True  # readline is amid a key: no drawing now
            try:
                if state == 0:
                    matches = complete(readline.get_line_buffer()[: readline.get_endidx()], names())
                return matches[state] if state < len(matches) else None
            finally:
                self._completing = False

        readline.set_completer_delims("")
        readline.set_completer(completer)
        readline.parse_and_bind("tab: complete")

    def show(self, line: str) -> None:
        """Print ``line``; above the prompt and the typed line while one is
        read. Readline handles keys and draws in the thread that reads,
        without the GIL. When that is the main thread, the line is handed to
        it, to draw between two keys (``_hand_to_reader``); otherwise it is
        drawn here, once readline seems still (``_show_here``)."""
        if self._main_reads and threading.current_thread() is not threading.main_thread():
            self._hand_to_reader(line)
        else:
            self._show_here(line)

    def _hand_to_reader(self, line: str) -> None:
        """Have the main thread draw ``line``: DRAW_SIGNAL's handler runs
        there when the signal interrupts readline's wait for a key, so no
        key is being handled. One that lands while readline handles a key
        is only noted, so the signal is repeated until the line is drawn.
        If the main thread stops reading first, or takes more than
        HAND_OFF_WAIT, this thread draws what it was handed."""
        with self._lock:
            self._handed.append(line)
            self._handed_count += 1
            number = self._handed_count
        deadline = time.monotonic() + HAND_OFF_WAIT
        reader = threading.main_thread().ident
        while True:
            with self._lock:
                if self._drawn_count >= number:
                    return
                if not self._main_reads or time.monotonic() >= deadline:
                    left, self._handed = self._handed, []
                    self._drawn_count = self._handed_count
                    break
            if reader is not None:
                signal.pthread_kill(reader, DRAW_SIGNAL)
            with self._lock:
                self._prompt_ready.wait_for(lambda: self._drawn_count >= number or not self._main_reads, DRAW_REPEAT)
        for waiting in left:
            self._show_here(waiting)

    def _draw_handed(self, signum: int, frame: object) -> None:
        """DRAW_SIGNAL's handler, in the main thread: draw the lines handed
        to it. Not while readline is amid something (drawing its prompt,
        completing, Enter taken) or this thread holds the lock (read_line's
        own turns): the signal comes again. Not once read_line is over
        (a late signal): the thread that handed the lines draws them, and
        this one may be amid a write of its own."""
        if self._completing or not self._lock.acquire(blocking=False):
            return
        try:
            if not (self._handed and self._main_reads) or self._drawing or self._line_accepted():
                return
            text = "".join(f"{line}\n" for line in self._handed)
            _write(self._erasing_input() + text + self._redrawing_input())  # the prompt is drawn: not _drawing
            # Counted once written: a signal's exception (Ctrl-C) raised
            # before this leaves the lines to be drawn again, not lost.
            self._drawn_count += len(self._handed)
            self._handed.clear()
            self._prompt_ready.notify_all()
        finally:
            self._lock.release()

    def _show_here(self, line: str) -> None:
        """Draw ``line`` from this thread, while readline may be reading in
        another: wait (``SHOW_WAIT`` at most) until it is still, its prompt
        drawn, the keys waiting taken, and no Enter being handled. This
        narrows the window in which a key meets the drawing; it cannot
        close it (the operator console reads in a thread of its own)."""
        deadline = time.monotonic() + SHOW_WAIT
        while True:
            if self._prompt is not None:
                self._wait_for_keys_taken(deadline)
            with self._lock:
                if self._between_lines() and time.monotonic() < deadline:
                    # Woken when read_line ends or the next prompt is drawn;
                    # then look at the keys again.
                    self._prompt_ready.wait(max(0.0, deadline - time.monotonic()))
                    continue
                if self._prompt is None:
                    _write(f"{line}\n")
                else:
                    # One write: readline could cut into one made in pieces.
                    _write(self._erasing_input() + f"{line}\n" + self._redrawing_input())
                return

    def _between_lines(self) -> bool:
        """Whether readline is about to draw its prompt, or has taken Enter
        and read_line has not yet taken that line off the screen (this one
        would be printed below it, and erased with it). The caller holds
        the lock."""
        return self._drawing or (self._prompt is not None and self._line_accepted())

    def error(self, text: str, wait: bool = True) -> bool:
        """Print ``text`` on stderr, the line being typed erased first. With
        ``wait`` False (a signal handler, which may have interrupted this
        thread amid a write of its own, holding the lock), print nothing if
        the terminal is busy; True if it was printed."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            if self._prompt is not None:
                _write(self._erasing_input())
                self._input_erased = True  # the end of the session: not drawn again
            print(text, file=sys.stderr, flush=True)
            return True
        finally:
            self._lock.release()

    def read_line(self, prompt: str, remember: bool = True) -> str:
        """The next line typed; kept in readline's history if ``remember``.
        Raises EOFError at the end of input."""
        if not self.interactive:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\r\n")
        uses_readline = bool(self._redisplay) and sys.stdout.isatty()  # else input() reads without it
        in_main = threading.current_thread() is threading.main_thread()
        if uses_readline and in_main and signal.getsignal(DRAW_SIGNAL) != self._draw_handed:
            signal.signal(DRAW_SIGNAL, self._draw_handed)
        with self._lock:
            self._asked = prompt
            self._input_erased = False
            if not self._redisplay:
                self._prompt = prompt
            elif uses_readline:
                self._drawing = True  # until the pre-input hook: the prompt is drawn
                self._main_reads = in_main
        self._show_typing()
        line = None
        try:
            line = input(prompt)
        except BaseException:
            # Ctrl-C, Ctrl-D, or the server's end: readline leaves the cursor
            # on the prompt's row (after the typed text, or, once the line was
            # erased, where that text ended). Start the next line cleanly.
            with self._lock:
                sys.stdout.write("\r\x1b[K" if self._input_erased else "\n")
                sys.stdout.flush()
            raise
        finally:
            with self._lock:
                self._prompt = self._asked = None
                self._drawing = self._main_reads = False
                # Erased in the same turn of the lock: a line shown in
                # between would be printed below, and erased in its place.
                if line is not None and self.erase_entered:
                    self._erase_entered(prompt + line)
                self._prompt_ready.notify_all()
            self._hide_typing()
        if not remember and self._readline is not None and line:
            self._readline.remove_history_item(self._readline.get_current_history_length() - 1)
        return line

    def _wait_for_keys_taken(self, deadline: float) -> None:
        """Wait, briefly, until readline has taken the keys waiting on the
        terminal (a paste, fast typing): it draws as it handles each, and a
        line drawn meanwhile would be cut into its drawing. This narrows
        that window to the handling of the last key; it cannot close it."""
        quiet = 0
        with contextlib.suppress(OSError, ValueError):
            # Quiet twice in a row: readline takes pasted keys into a buffer
            # of its own, so an empty terminal alone does not mean it is done.
            while quiet < 2 and time.monotonic() < deadline:
                busy = select.select([sys.stdin], [], [], 0)[0] or self._readline_busy()
                quiet = 0 if busy else quiet + 1
                time.sleep(KEYS_TAKEN_POLL)

    def _readline_busy(self) -> bool:
        """Whether readline is reading or handling a key, or redrawing (its
        ``rl_readline_state``); False where that cannot be read."""
        if self._redisplay is None:
            return False
        try:
            return bool(ctypes.c_ulong.in_dll(self._redisplay, "rl_readline_state").value & _RL_BUSY)
        except ValueError:
            return False

    def _line_accepted(self) -> bool:
        """Whether readline has taken Enter for the line being read (its
        ``rl_done``), though ``input`` has not returned yet."""
        if self._redisplay is None:
            return False
        try:
            return bool(ctypes.c_int.in_dll(self._redisplay, "rl_done").value)
        except ValueError:  # a readline without it
            return False

    def _erase_entered(self, shown: str) -> None:
        """Take the line just entered (prompt and text, over as many rows as
        it took) off the screen; the cursor is at the start of the row below.
        The caller holds the lock."""
        columns = shutil.get_terminal_size().columns
        rows = max(1, -(-_width(shown) // columns))
        sys.stdout.write("\x1b[A\r\x1b[K" * rows)
        sys.stdout.flush()

    def leave_input(self) -> None:
        """Erase the line being typed, if one is, for good: the program ends
        while another thread still reads it (the server's console). Lines
        shown after this are only printed."""
        with self._lock:
            if self._prompt is not None:
                _write(self._erasing_input())
            self._prompt = self._asked = None
            self._redisplay = None
            self._drawing = False

    # The line being typed is taken off the screen and drawn again with
    # plain terminal codes, from what readline holds (its text and cursor),
    # read but never changed: only the thread in readline may change
    # readline's state (calling its redisplay from this one, while it
    # handled a key, garbled the line and once aborted the process). The
    # screen is left as readline last drew it, so its next update fits.

    def _erasing_input(self) -> str:
        """What takes the cursor to the start of the prompt's row, and
        clears from there on."""
        typed, point = self._typed_and_point()
        up = self._cursor_row(typed, point)
        return (f"\x1b[{up}A" if up else "") + "\r\x1b[J"

    def _redrawing_input(self) -> str:
        """What draws the prompt and the typed text, and leaves the cursor
        where the person left it."""
        typed, point = self._typed_and_point()
        drawn = f"{self._prompt or ''}{typed}"
        if point < len(typed):  # else the cursor is where it belongs, at the end
            up = self._cursor_row(typed, len(typed)) - self._cursor_row(typed, point)
            column = self._width_before(typed, point) % self._columns()
            drawn += (f"\x1b[{up}A" if up > 0 else "") + "\r" + (f"\x1b[{column}C" if column else "")
        return drawn

    def _typed_and_point(self) -> tuple[str, int]:
        """What readline holds as typed, and its cursor (in characters)."""
        typed = self.typed_text()
        if self._redisplay is None:
            return typed, len(typed)
        try:
            point = ctypes.c_int.in_dll(self._redisplay, "rl_point").value  # bytes of UTF-8
        except ValueError:
            return typed, len(typed)
        return typed, len(typed.encode()[: max(0, point)].decode(errors="ignore"))

    def _width_before(self, typed: str, point: int) -> int:
        return _width(f"{self._prompt or ''}{typed[:point]}")

    def _columns(self) -> int:
        return max(1, shutil.get_terminal_size().columns)

    def _cursor_row(self, typed: str, point: int) -> int:
        """The row, counted from the prompt's, where the cursor is when it
        stands before ``typed[point]``. After the last character, at the
        very end of a row, a terminal keeps it on that row."""
        width = self._width_before(typed, point)
        if point == len(typed):
            return max(0, width - 1) // self._columns()
        return width // self._columns()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _typed_text(data: bytes) -> str:
    # Enter is CR in readline's raw mode, LF once the terminal maps it.
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal: two for wide characters, none
    for combining ones."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


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


def _readline_redisplay(readline: ModuleType) -> ctypes.CDLL | None:
    """GNU readline's own redisplay functions, which the readline module does
    not expose, or None (libedit, an old readline): then we only reprint."""
    try:
        library = ctypes.CDLL(readline.__file__)
        for name in ("rl_point", "rl_done"):
            getattr(library, name)
    except (OSError, AttributeError):
        return None
    return library
