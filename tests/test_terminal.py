"""client.py as a person uses it: under a pseudo-terminal, with readline, the
prompts, Ctrl-C and Ctrl-D, and lines that arrive while the person types.

The client runs as its own session with the pty as its controlling terminal,
so the line discipline turns Ctrl-C into SIGINT for it, as a real terminal
does. TERM is "xterm", what most people's terminals say they are: readline
then moves the cursor and redraws as it does for them, which is what the
client's own redraw has to agree with ("dumb" would make readline fall back
to horizontal scrolling without cursor motion, a case nobody sees). The
assertions look only for the text and escape sequences they are about, and
``screen()``, a small model of the terminal, checks what ends up on which
line. INPUTRC=/dev/null keeps a personal readline setup (vi mode, ...) out.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from socket_chat import tty as terminal
from socket_chat.protocol import ChatMessage, UserJoined, UserLeft
from socket_chat.server import app as chat_server
from tests import procs
from tests.helpers import ChatTestClient

# One test process runs all the terminal tests, one after another: two
# programs on ptys at once, each timing its redraws, disturb each other.
pytestmark = [pytest.mark.timeout(30), pytest.mark.xdist_group("terminal")]

TIMEOUT = 5.0  # seconds any single expected output or event may take
ROWS, COLS = 24, 100

# Runs in the new session (start_new_session=True): make the pty on fd 0 the
# controlling terminal, give SIGINT its default disposition (as a shell does
# for a foreground job; pytest itself may run with SIGINT ignored, as a
# background job of a script, and a child would inherit that), then become
# client.py. An exec'd launcher rather than preexec_fn, which is not safe in a
# process with threads (the test server's).
LAUNCHER = (
    "import fcntl, os, signal, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class PtyClient:
    """client.py on a pty. A thread copies everything the child writes into
    ``output``; ``expect`` waits (with a timeout) for a pattern after the
    point the previous ``expect`` matched."""

    def __init__(
        self,
        port: int,
        data_home,
        *options: str,
        env_overrides: dict | None = None,
        program: tuple[str, ...] = ("client.py",),
        accept_new: bool = True,
    ) -> None:
        # --accept-new: no question about the server's key on a first
        # connection (test_trust.py asks it).
        options = ("--accept-new", *options) if accept_new else options
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.initial_modes = termios.tcgetattr(self.slave)
        self.output = bytearray()
        self.pos = 0  # where the next expect starts looking
        self._changed = threading.Condition()
        self._eof = False
        # NO_COLOR by default: most tests look for exact bytes; the colour
        # tests start with open_pty(..., env={"NO_COLOR": ""}).
        env = dict(
            os.environ,
            TERM="xterm",
            XDG_DATA_HOME=str(data_home),
            XDG_CONFIG_HOME=str(data_home / "config"),  # no settings file unless a test writes one
            LC_ALL="C.UTF-8",
            INPUTRC="/dev/null",
            COLUMNS=str(COLS),
            LINES=str(ROWS),
            NO_COLOR="1",
        )
        env.update(env_overrides or {})
        env.pop("PYTHONIOENCODING", None)
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, *program, "--host", "127.0.0.1", "--port", str(port), *options],
                cwd=procs.ROOT,
                env=env,
                stdin=self.slave,
                stdout=self.slave,
                stderr=self.slave,
                start_new_session=True,
            )
        except BaseException:
            os.close(self.master)
            os.close(self.slave)
            raise
        self._reader = threading.Thread(target=self._read, name="pty reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: no slave end is open any more
                data = b""
            with self._changed:
                if not data:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self.output += data
                self._changed.notify_all()

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def type_line(self, text: str) -> None:
        self.write(text.encode() + b"\r")  # Enter sends CR, as a terminal does

    def expect(self, pattern, timeout: float = TIMEOUT) -> re.Match:
        """Wait for ``pattern`` (bytes, literal; or a compiled bytes regex)
        in the output after the previous match; return the match."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (match := regex.search(self.output, self.pos)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"no {regex.pattern!r} within {timeout} s; output after the last match: "
                        f"{bytes(self.output[self.pos :])!r}"
                    )
                self._changed.wait(remaining)
            self.pos = match.end()
            return match

    def expect_screen(self, wanted, timeout: float = TIMEOUT, what: str = "") -> list[str]:
        """Wait until ``wanted(rows, cursor)`` holds for what the terminal
        shows (``screen_and_cursor``); the rows. prompt_toolkit draws only
        what changed (a completion may be written as one letter, a cursor
        move, then the rest), so what a person sees is looked for on the
        screen, not in the bytes. The next ``expect`` looks after this point."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                rows, cursor = screen_and_cursor(bytes(self.output))
                if wanted(rows, cursor):
                    self.pos = len(self.output)
                    return rows
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"no {what or wanted} on the screen within {timeout} s: {rows[-6:]}, {cursor}")
                self._changed.wait(remaining)

    def expect_input(self, shown: str, timeout: float = TIMEOUT) -> list[str]:
        """Wait until the cursor's row shows ``shown`` (the prompt and what is
        typed), the cursor at its end."""
        return self.expect_screen(
            lambda rows, cursor: rows[cursor[0]] == shown.rstrip() and cursor[1] == len(shown),
            timeout,
            what=repr(shown),
        )

    def text(self) -> bytes:
        with self._changed:
            return bytes(self.output)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.popen.wait(timeout)

    def terminal_modes(self) -> list:
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        """Kill the child if it still runs and release the pty; for ``finally``."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(TIMEOUT)
        os.close(self.slave)  # the last slave end: the reader gets EIO and stops
        self._reader.join(TIMEOUT)
        os.close(self.master)


def screen(output: bytes) -> list[str]:
    """The lines a terminal ``COLS`` wide would show for ``output``: enough
    of an xterm for the client and readline (text with automatic wrap, CR,
    LF, BS, erase in line and below, cursor up, down, left and right); other
    escape sequences are skipped. No scrolling: rows only ever grow."""
    return screen_and_cursor(output)[0]


def screen_and_cursor(output: bytes) -> tuple[list[str], tuple[int, int]]:
    """``screen(output)``, and where the cursor ends: (row, column)."""
    rows: list[list[str]] = [[]]
    row = col = 0

    def go_to_row(new_row: int) -> None:
        nonlocal row
        row = max(0, new_row)
        while len(rows) <= row:
            rows.append([])

    text = output.decode("utf-8", errors="replace")
    sequence = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[ -/]*[0-~])")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            match = sequence.match(text, i)
            if match is None:
                i += 1
                continue
            body = match.group(1)
            i = match.end()
            if not body.startswith("["):
                continue
            params, final = body[1:-1], body[-1]
            number = int(params) if params.isdigit() else None
            col = min(col, COLS - 1)  # any of these ends a pending wrap
            line = rows[row]
            if final == "K":
                if not number:
                    del line[col:]
                elif number == 1:
                    line[: col + 1] = [" "] * min(len(line), col + 1)
                else:
                    line.clear()
            elif final == "J" and not number:
                del line[col:]
                for below in rows[row + 1 :]:
                    below.clear()
            elif final == "A":
                go_to_row(row - (number or 1))
            elif final == "B":
                go_to_row(row + (number or 1))
            elif final == "C":
                col = min(COLS - 1, col + (number or 1))
            elif final == "D":
                col = max(0, col - (number or 1))
            continue
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            go_to_row(row + 1)
        elif ch == "\b":
            col = max(0, min(col, COLS - 1) - 1)
        elif ch.isprintable():
            if col >= COLS:  # the wrap pending since the last column was written
                go_to_row(row + 1)
                col = 0
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    return ["".join(line).rstrip() for line in rows], (row, col)


# --- servers and other participants ------------------------------------------


@pytest.fixture
def own_server(identity_key):
    """An in-process server the test itself may shut down (``stop()``)."""
    server = chat_server.ChatServer(identity_key, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="serve_forever", daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.shutdown()
            server.server_close()
            thread.join(5)

    server.stop = stop
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def open_pty(tmp_path):
    """Start client.py on a pty; every one is killed and closed at the end."""
    started: list[PtyClient] = []

    def start(
        port: int,
        *options: str,
        env: dict | None = None,
        program: tuple[str, ...] = ("client.py",),
        accept_new: bool = True,
    ) -> PtyClient:
        client = PtyClient(
            port,
            tmp_path / f"data-{len(started)}",
            *options,
            env_overrides=env,
            program=program,
            accept_new=accept_new,
        )
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            client.close()


def expect_event(client: ChatTestClient, wanted, timeout: float = TIMEOUT):
    """Skip events until one equal to ``wanted``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            event = client.next_event(max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no {wanted!r} within {timeout} s; got {seen}") from None
        if event == wanted:
            return event
        seen.append(event)


def join_at_terminal(pty: PtyClient, name: str) -> None:
    """Answer the username question and wait for the chat prompt."""
    pty.expect(b"Please enter a username.\r\n")
    pty.expect_input("Username: ")
    pty.type_line(name)
    pty.expect(b"You are ")
    pty.expect_input("> ")  # the greeting, then the prompt drawn after it


@pytest.fixture
def ann_at_terminal(running_server, connect, open_pty):
    """Ann joined from a pty, and Other, a protocol client, has seen her join."""
    other = connect("Other")
    pty = open_pty(running_server.server_address[1])
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))
    return other, pty


def assert_terminal_restored(pty: PtyClient) -> None:
    """readline put the terminal back as it found it (echo, line editing,
    signals, CR/LF handling): the shell after us is usable."""
    assert pty.terminal_modes()[:4] == pty.initial_modes[:4]


def wait_until_reading(pty: PtyClient, timeout: float = TIMEOUT) -> None:
    """Wait until the client's main thread sleeps in readline's select(),
    waiting for the next key, as it is when a person presses Ctrl-C or the
    server goes away: that is long after the last key was handled. A signal
    that lands while readline is still handling a key is lost (see
    test_server_lost_while_a_paste_is_being_read), so the tests that signal
    the client wait for this first. The kernel tells no one when a thread
    goes to sleep, so this polls /proc (a bounded wait for a state, not a
    guessed delay)."""
    task = f"/proc/{pty.popen.pid}/task/{pty.popen.pid}"
    names_waits = kernel_names_waits()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"{task}/wchan") as wchan:
                waiting_in = wchan.read()
            with open(f"{task}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError as exc:
            raise AssertionError(f"client gone while waiting for it to read: {exc}") from None
        # A task that wakes between the two reads shows wchan "0": where the
        # kernel names waits, only a named select or poll counts (taking that
        # "0" for one once let a Ctrl-C land while the client ignored it).
        in_select = "poll" in waiting_in or "select" in waiting_in
        if state == "S" and (in_select or not names_waits):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"client not waiting for a key within {timeout} s: {state} {waiting_in}")
        time.sleep(0.002)


@functools.cache
def kernel_names_waits() -> bool:
    """Whether /proc/.../wchan names the function a task sleeps in (a kernel
    without symbols says "0"): looked at once, on a thread of ours asleep in
    select()."""
    readable, writable = os.pipe()
    sleeper = threading.Thread(target=select.select, args=([readable], [], [], TIMEOUT), daemon=True)
    sleeper.start()
    task = f"/proc/self/task/{sleeper.native_id}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with open(f"{task}/stat") as stat:
                asleep = stat.read().rsplit(")", 1)[1].split()[0] == "S"
            if asleep:  # and stays so: no one writes to the pipe until the end
                with open(f"{task}/wchan") as wchan:
                    return wchan.read() not in ("", "0")
            time.sleep(0.002)
        return False
    finally:
        os.write(writable, b"x")
        sleeper.join(TIMEOUT)
        os.close(readable)
        os.close(writable)


# --- the tests -----------------------------------------------------------------


# A pipe read in the main thread returns just as interrupt() signals it (the
# server ends as input ends): the wake-up signal lands after the read.
LATE_WAKE = """
import signal, threading
from socket_chat import tty
screen = tty.Terminal(interactive=False)
print(screen._read_blocking(lambda: "a line"), flush=True)
signal.pthread_kill(threading.main_thread().ident, tty.WAKE_SIGNAL)
print("survived", flush=True)
"""


def test_a_wake_up_signal_that_lands_after_a_pipe_read_does_not_kill_the_client():
    """The signal must find the wake-up ignored, not SIG_DFL (which ends the
    process: "User defined signal 1"). In a child: it could end pytest."""
    done = subprocess.run([sys.executable, "-c", LATE_WAKE], capture_output=True, text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (0, "a line\nsurvived\n"), done.stderr


def test_ctrl_z_suspends_at_the_prompt(monkeypatch):
    """prompt_toolkit reads Ctrl-Z as a key unless told to suspend on it (as
    readline's terminal did). Looked at on the session: no pty needed."""
    from prompt_toolkit.filters import to_filter
    from prompt_toolkit.output import DummyOutput

    readable, writable = os.pipe()
    with os.fdopen(readable) as stdin, os.fdopen(writable, "w"):
        monkeypatch.setattr("sys.stdin", stdin)
        monkeypatch.setattr(terminal, "_output", DummyOutput)
        session = terminal.Terminal(interactive=False)._session(True)
        assert to_filter(session.enable_suspend)()


def test_a_line_is_not_held_back_when_input_does_not_use_readline(monkeypatch, capsys):
    """Typing on a terminal, output to a pipe or a file (pytest's capture
    here): input() then reads without readline, whose hooks never run, so a
    line that arrives meanwhile must not wait for the prompt to be drawn."""
    typing_at = terminal.Terminal(interactive=True)
    shown = threading.Event()

    def typing_while_a_line_arrives(prompt: str) -> str:
        threading.Thread(target=lambda: (typing_at.show("Bob: hi"), shown.set()), daemon=True).start()
        return "shown while typing" if shown.wait(TIMEOUT) else "held back"

    monkeypatch.setattr("builtins.input", typing_while_a_line_arrives)

    assert typing_at.read_line("> ") == "shown while typing"
    assert capsys.readouterr().out == "Bob: hi\n"


def test_prompts_and_a_typed_line_reaches_the_others(running_server, connect, open_pty):
    other = connect("Other")
    pty = open_pty(running_server.server_address[1])

    pty.expect(b"Please enter a username.\r\n")
    pty.expect_input("Username: ")
    pty.type_line("Ann")
    expect_event(other, UserJoined("Ann"))
    pty.expect_input("> ")
    pty.type_line("hello from a terminal")

    expect_event(other, ChatMessage("Ann", "hello from a terminal"))
    pty.expect(b"Ann: hello from a terminal\r\n")
    rows = pty.expect_input("> ")  # and the prompt is back for the next line
    assert rows[-2:] == ["Ann: hello from a terminal", ">"], rows


def test_incoming_line_is_printed_above_the_half_typed_one(ann_at_terminal):
    other, pty = ann_at_terminal

    pty.write(b"half typ")
    pty.expect_input("> half typ")  # the prompt has it
    other.say("Incoming!")
    pty.expect(b"Other: Incoming!")
    pty.expect_input("> half typ")

    lines = screen(pty.text())
    incoming = lines.index("Other: Incoming!")  # a line of its own, nothing else on it
    assert lines[incoming + 1] == "> half typ", lines
    assert not any("half typ" in line for line in lines[:incoming]), lines  # the old one was erased

    pty.write(b"ed\r")
    expect_event(other, ChatMessage("Ann", "half typed"))
    pty.expect(b"Ann: half typed")  # the typed line makes way for the server's echo
    lines = pty.expect_input("> ")
    assert lines[incoming + 1 :] == ["Ann: half typed", ">"], lines


def test_keys_typed_while_lines_arrive_leave_every_row_clean(ann_at_terminal):
    """Typing on, a key every millisecond or so, while others talk: each
    line arrives on a row of its own, and the typed line is whole below
    them. Drawn from another thread, a line met readline amid a key now and
    then; the main thread, which handles the keys, now draws them between two."""
    other, pty = ann_at_terminal
    incoming = [f"line {n:02} from the others" for n in range(1, 16)]  # within the flood burst
    typed = "".join(chr(ord("a") + n % 26) for n in range(500))

    def type_on() -> None:
        for key in typed:
            pty.write(key.encode())
            time.sleep(0.001)  # the pace of keys, not a wait for anything

    typist = threading.Thread(target=type_on, name="typist")
    typist.start()
    for line in incoming:
        other.say(line)
        time.sleep(0.02)  # the others' pace, over the typing
    typist.join(TIMEOUT)
    pty.expect(f"Other: {incoming[-1]}".encode())
    pty.write(b"\r")  # after every key, in the terminal's queue

    expect_event(other, ChatMessage("Ann", typed))
    pty.expect(b"Ann: ")
    rows = pty.expect_input("> ")
    assert [row for row in rows if row.startswith("Other: ")] == [f"Other: {line}" for line in incoming], rows
    last = max(n for n, row in enumerate(rows) if row.startswith("Other: "))
    echo = f"Ann: {typed}"
    assert rows[last + 1 :] == [echo[i : i + COLS] for i in range(0, len(echo), COLS)] + [">"], rows


def test_incoming_line_keeps_the_cursor_where_the_person_left_it(ann_at_terminal):
    other, pty = ann_at_terminal

    pty.write(b"half typ\x1b[D\x1b[D\x1b[D")  # three times the left arrow: after "half "
    pty.expect_screen(
        lambda rows, cursor: rows[cursor[0]] == "> half typ" and cursor[1] == 7, what="the cursor moved back"
    )
    other.say("Incoming!")
    pty.expect(b"Other: Incoming!")
    # Drawn again below, the cursor where it was.
    pty.expect_screen(lambda rows, cursor: rows[cursor[0]] == "> half typ" and cursor[1] == 7, what="the line redrawn")
    pty.write(b"X")
    pty.expect_screen(lambda rows, cursor: rows[cursor[0]] == "> half Xtyp" and cursor[1] == 8, what="X inserted")

    lines = screen(pty.text())
    incoming = lines.index("Other: Incoming!")
    assert lines[incoming + 1 :] == ["> half Xtyp"], lines
    pty.write(b"\r")
    expect_event(other, ChatMessage("Ann", "half Xtyp"))


def test_incoming_line_above_a_typed_line_longer_than_the_terminal(ann_at_terminal):
    other, pty = ann_at_terminal

    typed = "a" * (COLS + 20)  # with the prompt, two rows of the terminal
    pty.write(typed.encode())
    two_rows = ["> " + typed[: COLS - 2], typed[COLS - 2 :]]
    pty.expect_screen(lambda rows, cursor: rows[-2:] == two_rows, what="the long line")
    other.say("Incoming!")
    pty.expect(b"Other: Incoming!")
    lines = pty.expect_screen(lambda rows, cursor: rows[-2:] == two_rows, what="the long line redrawn")

    incoming = lines.index("Other: Incoming!")
    assert not any("aaaa" in line for line in lines[:incoming]), lines  # no leftover row
    assert lines[incoming + 1 :] == ["> " + typed[: COLS - 2], typed[COLS - 2 :]], lines
    pty.write(b"\r")
    expect_event(other, ChatMessage("Ann", typed))


def test_ctrl_d_at_an_empty_prompt_leaves(ann_at_terminal):
    other, pty = ann_at_terminal

    pty.write(b"\x04")

    assert pty.wait() == 0
    expect_event(other, UserLeft("Ann"))
    assert b"Traceback" not in pty.text()
    assert_terminal_restored(pty)


def test_ctrl_c_leaves_quietly(ann_at_terminal):
    other, pty = ann_at_terminal

    pty.write(b"not to be sent")
    pty.expect_input("> not to be sent")
    pty.write(b"\x03")  # a key to prompt_toolkit, which reads the terminal raw

    assert pty.wait() == 0
    expect_event(other, UserLeft("Ann"))
    assert b"Traceback" not in pty.text()
    assert_terminal_restored(pty)


def test_quit_command_leaves(ann_at_terminal):
    other, pty = ann_at_terminal

    pty.type_line("/quit")

    assert pty.wait() == 0
    expect_event(other, UserLeft("Ann"))
    assert b"Traceback" not in pty.text()
    assert_terminal_restored(pty)


def _assert_server_end_reported(pty: PtyClient, message: str, stopped_at: float) -> None:
    status = pty.wait()
    assert time.monotonic() - stopped_at < TIMEOUT
    assert status > 0, status  # exited on its own, with a failure status (not killed)
    pty.expect(message.encode())
    output = pty.text()
    assert b"Traceback" not in output
    assert message in screen(output), screen(output)  # on a line of its own
    assert_terminal_restored(pty)


def test_server_shutting_down_while_typing(own_server, open_pty):
    pty = open_pty(own_server.server_address[1], "--no-reconnect")  # coming back: test_terminal_ux.py
    join_at_terminal(pty, "Ann")
    pty.write(b"still typ")
    pty.expect_input("> still typ")

    stopped_at = time.monotonic()
    own_server.stop()

    _assert_server_end_reported(pty, chat_server.SHUTTING_DOWN, stopped_at)


def test_server_killed_while_typing(tmp_path, open_pty):
    server = procs.start_server(tmp_path)
    try:
        pty = open_pty(server.port, "--no-reconnect")
        join_at_terminal(pty, "Ann")
        pty.write(b"still typ")
        pty.expect(b"still typ")
        wait_until_reading(pty)

        stopped_at = time.monotonic()
        server.popen.kill()  # SIGKILL: no goodbye

        _assert_server_end_reported(pty, "Connection to server lost.", stopped_at)
    finally:
        server.kill()


PASTE = 5_000  # characters: prompt_toolkit takes a good part of a second over them (a key at a time)


def test_server_lost_while_a_paste_is_being_read(tmp_path, open_pty):
    server = procs.start_server(tmp_path)
    try:
        pty = open_pty(server.port, "--no-reconnect")
        join_at_terminal(pty, "Ann")
        wait_until_reading(pty)

        # Order the events: with the client stopped, a long paste arrives and
        # the server dies; once it runs again, the receiver sees the end at
        # once, while readline is still busy with the paste.
        os.kill(pty.popen.pid, signal.SIGSTOP)
        paster = threading.Thread(target=pty.write, args=(b"p" * PASTE,), daemon=True)
        try:
            paster.start()
            server.popen.kill()
            server.popen.wait(TIMEOUT)
        finally:
            os.kill(pty.popen.pid, signal.SIGCONT)
        paster.join(TIMEOUT)
        pty.expect(b"Connection to server lost.")

        assert pty.wait() > 0  # it ends on its own, once the paste is read
        assert b"Traceback" not in pty.text()
    finally:
        server.kill()


def test_escape_sequences_from_the_network_do_not_reach_the_terminal(ann_at_terminal):
    other, pty = ann_at_terminal

    other.say("look\x1b[2J\x1b]0;owned\x07here")

    pty.expect("Other: look\ufffd[2J\ufffd]0;owned\ufffdhere".encode())
    output = pty.text()
    assert b"\x1b[2J" not in output
    assert b"\x1b]0;" not in output


# The client, saying at the end whether it loaded prompt_toolkit.
CLIENT_TELLING_ITS_MODULES = """
import sys
from socket_chat.client import __main__ as client_main

status = client_main.main(sys.argv[1:])
print("prompt_toolkit loaded:", "prompt_toolkit" in sys.modules)
sys.exit(status)
"""


def test_on_a_pipe_the_client_stays_line_based_with_no_escape_codes(running_server, connect, tmp_path):
    """As scripts use it: lines in, lines out, no prompt drawn, no escape
    code written, and prompt_toolkit not even loaded."""
    other = connect("Other")
    args = ["-c", CLIENT_TELLING_ITS_MODULES, "--host", "127.0.0.1", "--port", str(running_server.server_address[1])]
    client = procs.Proc([*args, "--accept-new"], tmp_path)
    try:
        client.send("Ann")
        expect_event(other, UserJoined("Ann"))
        client.send("hello from a script")
        expect_event(other, ChatMessage("Ann", "hello from a script"))
        other.say("hi script")
        client.stdout.expect("Other: hi script")
        client.send("/quit")
        assert client.wait() == 0
        output = client.stdout.text() + client.stderr.text()
    finally:
        client.kill()
    assert "\x1b" not in output, output
    assert "prompt_toolkit loaded: False" in output, output
