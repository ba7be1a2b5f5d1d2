"""The client as a person meets it on a terminal (issue 14): the username
deadline, own lines as the others see them, --timestamps, pasting, the
terminal left as found, mentions and the bell, the history file. Uses the
pty machinery of test_terminal.py; every wait has a timeout, none is a
guessed delay."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time

import pytest

from socket_chat.protocol import ActionMessage, ChatMessage, PrivateLine, ServerIdentity, UserJoined, UserLeft
from socket_chat.server import app as chat_server
from socket_chat.server import tickets
from tests.conftest import stop_server
from tests.helpers import ChatTestClient
from tests.test_terminal import (  # noqa: F401 (open_pty is a fixture)
    PtyClient,
    assert_terminal_restored,
    expect_event,
    join_at_terminal,
    open_pty,
    screen,
    screen_and_cursor,
    wait_until_reading,
)
from tests.test_terminal_features import wait_until_idle

# One test process runs all the terminal tests, one after another: two
# programs on ptys at once, each timing its redraws, disturb each other.
pytestmark = [pytest.mark.timeout(30), pytest.mark.xdist_group("terminal")]

TIME = rb"\d\d:\d\d "


def assert_left_at_column_0(pty: PtyClient) -> None:
    """The shell's prompt will start a line of its own: the cursor is at
    the start of an empty row, and the terminal's modes are as found."""
    lines, (row, col) = screen_and_cursor(pty.text())
    assert col == 0 and lines[row] == "", (lines[-3:], row, col)
    assert_terminal_restored(pty)


@pytest.fixture
def ann_and_other(own_server, open_pty):
    """Ann on a pty and Other, a protocol client, on a server started with
    ``start(**limits)``."""

    def start(*options: str, **limits):
        own_server.start(**limits)
        other = own_server.client("Other")
        pty = open_pty(own_server.server.server_address[1], *options)
        join_at_terminal(pty, "Ann")
        expect_event(other, UserJoined("Ann"))
        return other, pty

    return start


# --- defect 1: the username deadline ------------------------------------------------


def test_the_username_deadline_is_warned_of_and_told_the_moment_it_passes(own_server, open_pty):
    own_server.start(username_timeout=2)
    pty = open_pty(own_server.server.server_address[1])
    pty.expect_input("Username: ")
    pty.write(b"An")  # typing, not yet done

    pty.expect(re.compile(rb"\d+ seconds left to choose a username"))  # above the prompt, which stays
    pty.expect_input("Username: An")
    rows = pty.expect_screen(lambda rows, cursor: "Timed out waiting for a username." in rows)  # without Enter
    assert rows[-3:] == ["Username: An", "Timed out waiting for a username.", ""], rows

    assert pty.wait() == 1
    assert b"Traceback" not in pty.text()
    assert_left_at_column_0(pty)


# --- defect 8: --name -----------------------------------------------------------------


def test_with_name_the_username_question_is_not_shown(running_server, connect, open_pty):
    other = connect("Other")
    pty = open_pty(running_server.server_address[1], "--name", "Ann")
    expect_event(other, UserJoined("Ann"))
    pty.expect_input("> ")
    assert b"Please enter a username." not in pty.text()


# --- defects 6 and 7: own lines as the others see them, with a time -----------------------


def test_own_lines_and_actions_are_shown_as_the_others_see_them_with_the_time(ann_and_other):
    other, pty = ann_and_other("--timestamps")
    wait_until_reading(pty)

    pty.type_line("hello all")
    expect_event(other, ChatMessage("Ann", "hello all"))
    pty.expect(re.compile(TIME + rb"Ann: hello all\r\n"))
    wait_until_idle(pty)
    pty.type_line("/me waves")
    expect_event(other, ActionMessage("Ann", "waves"))
    pty.expect(re.compile(TIME + rb"\* Ann waves\r\n"))
    lines = pty.expect_input("> ")

    assert not [line for line in lines if line.startswith("> ") and line != "> "], lines  # typed rows made way
    assert re.fullmatch(r"\d\d:\d\d Ann: hello all", lines[-3]), lines
    assert re.fullmatch(r"\d\d:\d\d \* Ann waves", lines[-2]), lines


# --- defect 4: the terminal as found -------------------------------------------------------


def test_ctrl_c_with_a_half_typed_line_leaves_the_cursor_on_a_new_line(ann_and_other):
    _other, pty = ann_and_other()
    pty.write(b"half typed")
    pty.expect_input("> half typed")

    pty.write(b"\x03")

    assert pty.wait() == 0
    assert screen(pty.text())[-2] == "> half typed"
    assert_left_at_column_0(pty)


def test_ctrl_d_at_the_username_prompt_leaves_the_cursor_on_a_new_line(running_server, open_pty):
    pty = open_pty(running_server.server_address[1])
    pty.expect_input("Username: ")

    pty.write(b"\x04")

    assert pty.wait() == 0
    assert_left_at_column_0(pty)


def test_the_servers_end_leaves_the_cursor_at_the_start_of_a_line(ann_and_other, own_server):
    _other, pty = ann_and_other("--no-reconnect")
    pty.write(b"still typ")
    pty.expect_input("> still typ")

    own_server.stop()

    pty.expect(b"Server is shutting down.")
    assert pty.wait() == 1
    assert_left_at_column_0(pty)


def test_a_kick_is_said_on_a_line_of_its_own_and_not_undone_by_reconnecting(ann_and_other, own_server):
    _other, pty = ann_and_other()
    pty.write(b"half typ")
    pty.expect_input("> half typ")

    assert own_server.server.kick("Ann", "enough")

    pty.expect(b"You were kicked by the operator: enough")
    assert pty.wait() == 1
    assert b"Reconnecting" not in pty.text()
    assert_left_at_column_0(pty)


def test_sigterm_leaves_the_terminal_as_found(ann_and_other):
    _other, pty = ann_and_other()
    wait_until_reading(pty)

    pty.popen.terminate()

    assert pty.wait() == 128 + 15
    assert_left_at_column_0(pty)  # the echo is back on


# --- defect 3: a big paste ------------------------------------------------------------------


def paste(count: int) -> list[str]:
    return [f"paste line {n:02}" for n in range(1, count + 1)]


def test_a_big_paste_is_announced_and_the_screen_stays_clean(ann_and_other):
    other, pty = ann_and_other(rate=40, burst=4)
    lines = paste(30)
    wait_until_reading(pty)

    pty.write("".join(f"{line}\r" for line in lines).encode())

    pty.expect(re.compile(rb"\* Sending (\d+) more lines: the server allows 40 a second\."))
    for line in lines:
        expect_event(other, ChatMessage("Ann", line))
    pty.expect(b"Ann: paste line 30\r\n")
    shown = pty.expect_input("> ")
    pasted_rows = [row for row in shown if "paste line" in row]
    assert [row.removeprefix("Ann: ") for row in pasted_rows] == lines, shown  # once each, in order, alone


PASTED = ["first pasted", "second pasted", "  third, indented"]


def test_a_bracketed_paste_of_several_lines_is_one_message_that_enter_sends(ann_and_other, own_server):
    """A terminal that brackets a paste (ESC[200~ ... ESC[201~, which
    prompt_toolkit turns on) gives it as one key: on a server that takes
    blocks (issue 21) it waits at the prompt, its lines under each other,
    until Enter sends it as one message. A client that takes blocks gets it
    once and whole; one that does not (Other), a message a line."""
    other, pty = ann_and_other()
    whole = own_server.client(handshake=False)
    whole.handshake(multiline=True)
    whole.join("Whole")
    expect_event(other, UserJoined("Whole"))
    pty.expect(b"Whole joined the chat.")
    wait_until_reading(pty)

    pty.write(("\x1b[200~" + "\r".join(PASTED) + "\r\x1b[201~").encode())
    rows = pty.expect_input("    third, indented")  # at the prompt, under "> ", and not sent
    assert rows[-3:] == ["> first pasted", "  second pasted", "    third, indented"], rows
    pty.write(b"\r")

    assert whole.expect(ChatMessage) == ChatMessage("Ann", "\n".join(PASTED))
    assert [other.expect(ChatMessage) for _ in PASTED] == [ChatMessage("Ann", line) for line in PASTED]
    pty.expect(b"       third, indented")
    rows = pty.expect_input("> ")
    at = rows.index("Ann: first pasted")
    assert rows[at : at + 4] == ["Ann: first pasted", "     second pasted", "       third, indented", ">"], rows
    other.say("marker")  # and nothing more of Ann's came to anyone
    assert whole.events_until(ChatMessage("Other", "marker")) == []


def test_alt_enter_starts_a_new_line_of_the_same_message(ann_and_other):
    other, pty = ann_and_other()
    wait_until_reading(pty)
    pty.write(b"one\x1b\rtwo")  # Alt-Enter: Esc, then CR
    assert pty.expect_input("  two")[-2:] == ["> one", "  two"]
    pty.write(b"\r")
    assert [other.expect(ChatMessage) for _ in range(2)] == [ChatMessage("Ann", "one"), ChatMessage("Ann", "two")]
    pty.expect(b"Ann: one\r\n     two")


def test_ctrl_c_during_a_paste_says_exactly_which_lines_were_not_sent(ann_and_other):
    other, pty = ann_and_other(rate=0.5, burst=2)  # one line at once, then one every 2.5 s
    lines = paste(10)
    wait_until_reading(pty)

    pty.write("".join(f"{line}\r" for line in lines).encode())
    pty.expect(b"* Sending 9 more lines: the server allows 0.5 a second.")
    pty.write(b"\x03")

    pty.expect("* Not sent: 9 lines, from \u201cpaste line 02\u201d to \u201cpaste line 10\u201d.".encode())
    assert pty.wait() == 0
    expect_event(other, ChatMessage("Ann", "paste line 01"))
    assert other.next_event() == UserLeft("Ann")  # and nothing of the rest
    assert_left_at_column_0(pty)


# --- mentions, private messages and the bell ------------------------------------------------


def test_a_mention_and_a_private_message_ring_the_bell_and_others_do_not(ann_and_other):
    other, pty = ann_and_other()

    other.say("nothing for Annie")
    pty.expect(b"Other: nothing for Annie")
    other.say("hey ann, look")
    pty.expect(b"Other: hey ann, look")
    pty.expect(b"\a")
    other.send(PrivateLine("Ann", "psst"))
    pty.expect(b"[Other -> me] psst")
    pty.expect(b"\a")
    output = pty.text()
    assert output.count(b"\a") == 2, output


def test_no_bell_option_and_the_bell_command(ann_and_other):
    other, pty = ann_and_other("--no-bell")

    other.say("ann?")
    pty.expect(b"Other: ann?")
    wait_until_idle(pty)
    pty.type_line("/bell")
    pty.expect(b"* The bell is on")
    other.say("ann!")
    pty.expect(b"Other: ann!")
    pty.expect(b"\a")
    assert pty.text().count(b"\a") == 1


def test_a_mention_is_highlighted_in_colour(own_server, open_pty):
    own_server.start()
    other = own_server.client("Other")
    pty = open_pty(own_server.server.server_address[1], env={"NO_COLOR": ""})
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))

    other.say("Ann: are you there?")

    pty.expect(b"\x1b[1;7mOther: Ann: are you there?\x1b[0m")


# --- the history file --------------------------------------------------------------------------


def test_lines_typed_are_recalled_in_the_next_run_from_a_private_file(running_server, connect, open_pty, tmp_path):
    other = connect("Other")
    port = running_server.server_address[1]
    first = open_pty(port)
    join_at_terminal(first, "Ann")
    first.type_line("remember me")
    expect_event(other, ChatMessage("Ann", "remember me"))
    first.type_line("/quit")
    assert first.wait() == 0

    history = tmp_path / "data-0" / "socket-chat" / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "remember me" in history.read_text()

    second = PtyClient(port, tmp_path / "data-0")  # the same files
    try:
        join_at_terminal(second, "Ann")
        wait_until_reading(second)
        second.write(b"\x1b[A\x1b[A")  # the up arrow twice: before the /quit
        second.expect(b"remember me")
    finally:
        second.close()


def test_no_history_file_keeps_nothing(running_server, open_pty, tmp_path):
    pty = open_pty(running_server.server_address[1], "--no-history-file")
    join_at_terminal(pty, "Ann")
    pty.type_line("forget me")
    pty.expect(b"Ann: forget me")
    pty.type_line("/quit")
    assert pty.wait() == 0
    assert not (tmp_path / "data-0" / "socket-chat" / "history").exists()


# --- reconnecting by itself ------------------------------------------------------------------


#: Where the servers of the reconnection tests listen: a loopback address
#: for each test process (pytest-xdist's gw0, gw1, ...), none of them 127.0.0.1.
RESTART_HOST = f"127.0.0.{10 + int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw') or 0)}"


@pytest.fixture
def servers(identity_key):
    """Start servers (``start(key, port=0)``) on 127.0.0.1; all stopped at the end.
    They share their ticket keys, as server.py's restarts do (its file)."""
    started: list = []
    ticket_keys = tickets.MemoryTicketKeys()

    def start(key=identity_key, port: int = 0, said_before: tuple[str, ...] = ()):
        # On an address of their own: a port freed by a stopped server must
        # not be taken by another test's server (on 127.0.0.1) before the
        # next one here binds it again.
        service = tickets.TicketService(ServerIdentity.of(key), ticket_keys)
        server = chat_server.ChatServer(key, RESTART_HOST, port, tickets=service)
        now = time.time()
        for text in said_before:  # as if said on it before this client came back
            server.room.record_history(ChatMessage("Other", text), now)
        thread = threading.Thread(target=server.serve_forever, name="serve_forever", daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    def stop(server) -> None:
        for entry in started:
            if entry[0] is server:
                started.remove(entry)
                stop_server(*entry)
                return

    start.stop = stop
    try:
        yield start
    finally:
        for entry in started:
            stop_server(*entry)


def join_other(server) -> ChatTestClient:
    other = ChatTestClient(server.server_address)
    other.handshake()
    other.join("Other")
    return other


def test_after_a_restart_the_client_comes_back_with_its_name_what_was_missed_and_the_typed_line(
    servers, open_pty, caplog
):
    caplog.set_level(logging.INFO, "chat.server")
    first = servers()
    port = first.server_address[1]
    other = join_other(first)
    pty = open_pty(port, "--host", RESTART_HOST)
    join_at_terminal(pty, "Ann")
    expect_event(other, UserJoined("Ann"))
    other.say("before")
    pty.expect(b"Other: before")
    wait_until_idle(pty)
    pty.write(b"half")
    pty.expect_input("> half")
    other.close()

    servers.stop(first)
    pty.expect(b"Server is shutting down. Reconnecting")
    second = servers(port=port, said_before=("before", "said meanwhile"))
    back = join_other(second)

    pty.expect(b"[history", timeout=15)  # after a wait or two
    pty.expect(b"Other: said meanwhile")
    pty.expect(b"* Reconnected as Ann.")
    assert [m for m in caplog.messages if m.endswith("handshake complete (resumed)")]  # by its ticket, no RSA
    pty.expect_input("> half")  # the line being typed, as it was
    expect_event(back, UserJoined("Ann"))
    wait_until_idle(pty)
    pty.write(b"ed\r")
    expect_event(back, ChatMessage("Ann", "halfed"))
    lines = screen(pty.text())
    assert [line for line in lines if "Reconnecting" in line] == [
        "Server is shutting down. Reconnecting (Ctrl-C or /quit to leave)..."
    ], lines  # one line says so
    assert not [line for line in lines if "[history" in line and "before" in line], lines  # seen already
    back.close()


def test_a_changed_server_key_stops_the_reconnection_loudly(servers, open_pty, impostor_key):
    first = servers()
    port = first.server_address[1]
    pty = open_pty(port, "--host", RESTART_HOST)
    join_at_terminal(pty, "Ann")
    servers.stop(first)
    pty.expect(b"Reconnecting")

    servers(key=impostor_key, port=port)
    # After a few waits (1, 2, 4, 8 s, each +-50 %): the first tries may find no server yet.
    pty.expect(b"WARNING: THE SERVER'S IDENTITY KEY HAS CHANGED!", timeout=45)
    assert pty.wait() == 1
    assert_left_at_column_0(pty)


@pytest.mark.parametrize("leave", [b"\x03", b"/quit\r"], ids=["ctrl-c", "quit"])
def test_ctrl_c_or_quit_while_reconnecting_leaves_at_once(servers, open_pty, leave):
    first = servers()
    pty = open_pty(first.server_address[1], "--host", RESTART_HOST)
    join_at_terminal(pty, "Ann")
    wait_until_reading(pty)  # the prompt is drawn
    servers.stop(first)
    pty.expect(b"Reconnecting")
    # The prompt is left (no line is read while there is no server).
    pty.expect_screen(lambda rows, cursor: rows[cursor[0]] == "" and any("Reconnecting" in row for row in rows))
    wait_until_reading(pty)  # waiting between tries, and for a key

    pty.write(leave)

    assert pty.wait() == 0
    assert b"Traceback" not in pty.text()
    assert_left_at_column_0(pty)
