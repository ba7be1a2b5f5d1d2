"""The operator console on a terminal: server.py with its input, output and
log all on one pty, as an operator runs it. readline edits and recalls
lines, Tab completes commands and names, and log lines go above the line
being typed, never into it. Uses the pty machinery of test_terminal.py;
every wait has a timeout."""

from __future__ import annotations

import re

import pytest

from socket_chat.protocol import Goodbye, UserJoined
from socket_chat.server.console import complete
from tests import procs
from tests.helpers import ChatTestClient
from tests.test_terminal import PtyClient, assert_terminal_restored, expect_event, screen

# One test process runs all the terminal tests, one after another: two
# programs on ptys at once, each timing its redraws, disturb each other.
pytestmark = [pytest.mark.timeout(30), pytest.mark.xdist_group("terminal")]

PROMPT = b"> "


@pytest.fixture
def operator(tmp_path):
    """server.py on a pty, its console waiting for a line; ``.port`` is where
    it listens. Killed and closed at the end."""
    key = procs.private_key_copy(tmp_path / "key")
    pty = PtyClient(0, tmp_path / "data", "--key", str(key), program=("server.py",), accept_new=False)
    try:
        pty.port = int(pty.expect(re.compile(rb"Listening at 127\.0\.0\.1:(\d+)")).group(1))
        pty.expect(b"Operator console: type /help for the commands.")
        yield pty
    finally:
        pty.close()


@pytest.fixture
def join(operator):
    clients: list[ChatTestClient] = []

    def join_as(name: str) -> ChatTestClient:
        client = ChatTestClient(("127.0.0.1", operator.port))
        clients.append(client)
        client.handshake()
        client.join(name)
        operator.expect(f"{name} joined from".encode())  # the log line
        return client

    yield join_as
    for client in clients:
        client.close()


def test_arrow_keys_edit_the_line_and_recall_the_last_one(operator):
    operator.expect_input("> ")
    operator.write(b"/usrs\x1b[D\x1b[De\r")  # two left arrows, then the missing e
    operator.expect(b"No one is online.")
    operator.expect_input("> ")
    operator.write(b"\x1b[A\r")  # up arrow: the line before
    operator.expect(b"/users")
    operator.expect(b"No one is online.")
    assert b"^[[" not in operator.text() and b"Unknown command" not in operator.text()


def test_tab_completes_commands_and_names_after_kick(operator, join):
    bob = join("Bobby Tables")
    operator.expect_input("> ")  # drawn again below the log lines
    operator.write(b"/ki\t")
    operator.expect_input("> /kick ")
    operator.write(b"bo\t")
    operator.expect_input("> /kick Bobby Tables ")
    operator.write(b"flooding\r")
    operator.expect(b"Kicked Bobby Tables.")
    assert bob.expect(Goodbye) == Goodbye("You were kicked by the operator: flooding")


def test_a_log_line_goes_above_the_line_being_typed(operator, join):
    watcher = join("Watcher")
    operator.expect_input("> ")  # drawn again below the log lines
    operator.write(b"half typed com")
    operator.expect_input("> half typed com")  # the prompt has it
    join("Randall Flagg")
    expect_event(watcher, UserJoined("Randall Flagg"))
    # Drawn again below the log line.
    lines = operator.expect_screen(
        lambda rows, cursor: rows[cursor[0]] == "> half typed com" and any("Randall Flagg joined" in r for r in rows)
    )

    logged = next(i for i, line in enumerate(lines) if "INFO Randall Flagg joined from" in line)
    assert lines[logged].endswith(" INFO Randall Flagg joined from 127.0.0.1:" + lines[logged].rsplit(":", 1)[1])
    assert "half typed" not in lines[logged]
    # Below it only other log lines (the name registered to its key), then the typed line.
    assert not any("half typed" in line for line in lines[logged + 1 : -1]), lines
    assert lines[-1] == "> half typed com", lines
    operator.write(b"\x15/users\r")  # Ctrl-U clears the half-typed line
    operator.expect(b"2 online:")


def test_ctrl_c_stops_the_server_and_leaves_the_terminal_as_it_was(operator, join):
    # Typed before anyone joins: a log line drawn while readline still
    # echoes a key can interleave with that echo (a known limit: another
    # thread redraws readline's line).
    operator.expect_input("> ")
    operator.write(b"half")
    operator.expect_input("> half")
    alice = join("Alice")  # its log line goes above the half-typed line
    operator.write(b"\x03")  # Ctrl-C
    expect_event(alice, Goodbye("Server is shutting down."))
    assert operator.wait() == 0
    assert_terminal_restored(operator)
    assert b"Traceback" not in operator.text()
    assert screen(operator.text())[-1] == ""  # no prompt nor half-typed line left for the shell's prompt


def test_completion_of_console_lines():
    names = ["Alice", "alfred", "Bob"]
    assert complete("/k", names) == ["/kick "]
    assert complete("/", names) == [
        *["/help ", "/users ", "/kick ", "/ban ", "/unban ", "/bans ", "/release ", "/say ", "/close ", "/reload "],
        *["/invite ", "/forget ", "/quit "],
    ]
    assert complete("/kick al", names) == ["/kick Alice ", "/kick alfred "]
    assert complete("/KICK B", names) == ["/KICK Bob "]
    assert complete("/ban B", names) == ["/ban Bob "]
    assert complete("/say B", names) == []
    assert complete("hello", names) == []
