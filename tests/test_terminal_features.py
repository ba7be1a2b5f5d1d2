"""The chat's features on a terminal: colours, tab completion, and the
server's operator console when the server's input is a terminal. Uses the pty machinery of
test_terminal.py; every wait has a timeout."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time

import pytest

from socket_chat.client import ui as client_ui
from socket_chat.protocol import ChatMessage, Goodbye, Notice, PrivateLine, PrivateMessage, UserJoined, UserKicked
from tests import procs
from tests.helpers import ChatTestClient
from tests.test_terminal import expect_event, join_at_terminal, open_pty, screen  # noqa: F401 (fixture)

# One test process runs all the terminal tests, one after another: two
# programs on ptys at once, each timing its redraws, disturb each other.
pytestmark = [pytest.mark.timeout(30), pytest.mark.xdist_group("terminal")]

COLOUR = {"NO_COLOR": ""}  # the tests' default is NO_COLOR=1


def wait_until_idle(pty, timeout: float = 5.0) -> None:
    """Wait until every thread of the client sleeps (twice in a row, 5 ms
    apart): what arrived is drawn, so the screen a test compares after its
    next key holds nothing still on its way. Polls /proc: the kernel tells
    no one when a thread goes to sleep."""
    tasks = f"/proc/{pty.popen.pid}/task"
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        states = []
        for task in os.listdir(tasks):
            with contextlib.suppress(OSError), open(f"{tasks}/{task}/stat") as stat:
                states.append(stat.read().rsplit(")", 1)[1].split()[0])
        calm = calm + 1 if states and all(state == "S" for state in states) else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"client threads not idle within {timeout} s: {states}")
        time.sleep(0.005)


def coloured(name: str) -> bytes:
    return f"\x1b[{client_ui.name_colour(name)}m{name}{client_ui.RESET}".encode()


@pytest.fixture
def ann_in_colour(running_server, connect, open_pty):
    other = connect("Other")
    pty = open_pty(running_server.server_address[1], env=COLOUR)
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))
    return other, pty


def test_names_are_coloured_on_a_terminal_and_the_lines_read_as_before(ann_in_colour):
    other, pty = ann_in_colour

    other.say("Hi")
    pty.expect(coloured("Other") + b": Hi")
    wait_until_idle(pty)
    pty.type_line("Hi")
    expect_event(other, ChatMessage("Ann", "Hi"))
    pty.expect(coloured("Ann") + b": Hi")  # my line, as the others see it, once the server has it
    pty.expect_input("> ")  # the prompt for the next line is up
    other.send(PrivateLine("Ann", "psst"))
    pty.expect(f"\x1b[{client_ui.PRIVATE_COLOUR}m[Other -> me] psst{client_ui.RESET}".encode())
    pty.expect_input("> ")

    lines = screen(pty.text())
    incoming = lines.index("Other: Hi")  # the text on screen is the README's
    assert lines[incoming + 1 :] == ["Ann: Hi", "[Other -> me] psst", ">"], lines


def test_no_color_option_on_a_terminal(running_server, connect, open_pty):
    other = connect("Other")
    pty = open_pty(running_server.server_address[1], "--no-color", env=COLOUR)
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))
    other.say("Hi")
    pty.expect(b"Other: Hi")
    # No colour: the only attributes set are the reset the prompt's drawing uses.
    assert set(re.findall(rb"\x1b\[[0-9;]*m", pty.text())) <= {b"\x1b[0m"}, pty.text()


def test_tab_completes_a_name_after_msg_and_at_the_start_of_a_line(running_server, connect, open_pty):
    other = connect("Randall Flagg")
    pty = open_pty(running_server.server_address[1])
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))

    pty.write(b"/msg ra\t")
    pty.expect_input("> /msg Randall Flagg ")
    pty.type_line("psst")
    assert expect_event(other, PrivateMessage("Ann", "Randall Flagg", "psst"))
    pty.expect(b"[me -> Randall Flagg] psst")
    wait_until_idle(pty)

    pty.write(b"rand\t")
    pty.expect_input("> Randall Flagg: ")
    pty.type_line("hello")
    expect_event(other, ChatMessage("Ann", "Randall Flagg: hello"))


def test_tab_completes_names_of_people_who_join_later(running_server, connect, open_pty):
    pty = open_pty(running_server.server_address[1])
    join_at_terminal(pty, "Ann")
    late = connect("Zelda")
    pty.expect(b"* Zelda joined the chat.")
    wait_until_idle(pty)
    pty.write(b"/msg z\t")
    pty.expect_input("> /msg Zelda ")
    pty.type_line("hi")
    expect_event(late, PrivateMessage("Ann", "Zelda", "hi"))


# --- the operator console --------------------------------------------------------


class ConsoleServer:
    """server.py with its stdin a pty (so the console starts) and its output
    read from pipes."""

    def __init__(self, tmp_path) -> None:
        key = procs.private_key_copy(tmp_path / "key")
        self.master, slave = os.openpty()
        env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), PYTHONIOENCODING="utf-8")
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-u", "server.py", "--key", str(key), "--host", "127.0.0.1", "--port", "0"],
                cwd=procs.ROOT,
                env=env,
                stdin=slave,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
            )
        finally:
            os.close(slave)
        self.stdout = procs.Stream(self.popen.stdout)
        self.stderr = procs.Stream(self.popen.stderr)
        self.port = int(procs.LISTENING.search(self.stdout.expect(procs.LISTENING)).group(1))

    def type_line(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(procs.TIMEOUT)
        os.close(self.master)


@pytest.fixture
def console_server(tmp_path):
    server = ConsoleServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


def test_operator_console_users_say_kick_and_quit(console_server):
    server = console_server
    server.stdout.expect("Operator console: type /help for the commands.")
    alice = ChatTestClient(("127.0.0.1", server.port))
    bob = ChatTestClient(("127.0.0.1", server.port))
    try:
        for client, name in ((alice, "Alice"), (bob, "Bob")):
            client.handshake()
            client.join(name)
        expect_event(alice, UserJoined("Bob"))

        server.type_line("/users")
        server.stdout.expect("2 online:")
        server.stdout.expect(re.compile(r"^  Bob \(\d+ s\)$"))
        server.type_line("/say back in five")
        expect_event(bob, Notice("Notice from the operator: back in five"))
        server.type_line("/kick bob flooding")
        server.stdout.expect("Kicked bob.")
        expect_event(bob, Goodbye("You were kicked by the operator: flooding"))
        expect_event(alice, UserKicked("Bob", "flooding"))

        server.type_line("/quit")
        expect_event(alice, Goodbye("Server is shutting down."))
        assert server.popen.wait(procs.TIMEOUT) == 0
        assert "Traceback" not in server.stderr.text()
    finally:
        alice.close()
        bob.close()


def test_taken_name_option_on_a_terminal_asks_again(running_server, connect, open_pty):
    other = connect("Ann")
    pty = open_pty(running_server.server_address[1], "--name", "ann")

    pty.expect(b"That username is taken. Please enter another username.\r\n")
    pty.expect_input("Username: ")
    pty.type_line("Annie")

    expect_event(other, UserJoined("Annie"))
    pty.expect_input("> ")
