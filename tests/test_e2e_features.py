"""The chat's commands, history and message of the day with the real
programs: server.py and client.py as processes on loopback, the clients'
input a pipe (as a script runs them).
Every wait has a timeout (tests/procs.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from socket_chat.server.console import OperatorConsole
from tests import procs
from tests.helpers import wait_until
from tests.test_e2e import join, join_and_wait


@pytest.fixture
def start_server(tmp_path):
    """Start server.py with options; killed at the end."""
    started: list[procs.Proc] = []

    def start(*options: str) -> procs.Proc:
        proc = procs.start_server(tmp_path, *options)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def open_client(tmp_path):
    """Start client.py processes; all are killed at the end."""
    started: list[procs.Proc] = []

    def start(server: procs.Proc, label: str, *options: str) -> procs.Proc:
        client = procs.start_client(tmp_path, server.port, label, *options)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            client.kill()


def said(server: procs.Proc, name: str, text: str) -> None:
    """Wait until the server has relayed (and logged) ``name``'s line."""
    server.stderr.expect(re.compile(rf" {re.escape(name)}: {re.escape(text)}$"))


@pytest.fixture
def randall_and_jaime(server, open_client):
    randall = open_client(server, "randall")
    join_and_wait(server, randall, "Randall Flagg")
    jaime = open_client(server, "jaime")
    join_and_wait(server, jaime, "Jaime Lannister")
    randall.stdout.expect("* Jaime Lannister joined the chat.")
    return randall, jaime


def test_private_message_reaches_one_person_shown_distinctly_on_both_sides(server, randall_and_jaime, open_client):
    randall, jaime = randall_and_jaime
    cat = open_client(server, "cat")
    join_and_wait(server, cat, "Cat")
    jaime.stdout.expect("* Cat joined the chat.")

    jaime.send("/msg Randall Flagg psst, between us")  # a name with a space

    randall.stdout.expect("[Jaime Lannister -> me] psst, between us")
    jaime.stdout.expect("[me -> Randall Flagg] psst, between us")
    randall.send("/reply got it")
    jaime.stdout.expect("[Randall Flagg -> me] got it")
    jaime.send("public")
    cat.stdout.expect("Jaime Lannister: public")  # sent after the private lines: they would be here by now
    assert not [line for line in cat.stdout.lines if "psst" in line or "got it" in line]
    assert not [line for line in server.stderr.lines if "psst" in line]  # the private text is not logged

    jaime.send("/msg Nobody hello?")
    jaime.stdout.expect(
        "Error: No one called Nobody is online; the private message was not sent. "
        "Private messages are kept for later only for a name registered to a key (not a guest's)."
    )


def test_me_nick_users_and_quit_with_a_parting_line(server, randall_and_jaime):
    randall, jaime = randall_and_jaime

    jaime.send("/me waves")
    randall.stdout.expect("* Jaime Lannister waves")
    jaime.send("/nick Jaime")
    randall.stdout.expect("* Jaime Lannister is now known as Jaime.")
    jaime.stdout.expect("* Jaime Lannister is now known as Jaime.")
    jaime.send("/nick randall flagg")
    jaime.stdout.expect("Error: The username randall flagg belongs to someone else.")  # Randall's key's
    jaime.send("/users")
    jaime.stdout.expect("* 2 online:")
    jaime.stdout.expect(re.compile(r"^  Jaime \(\d+ s\)$"))
    jaime.stdout.expect(re.compile(r"^  Randall Flagg \(\d+ s\)$"))
    jaime.send("now renamed")
    randall.stdout.expect("Jaime: now renamed")
    jaime.send("/quit good night, all")
    assert jaime.wait() == 0
    randall.stdout.expect("* Jaime left the chat: good night, all")


def test_help_unknown_command_and_double_slash(server, randall_and_jaime):
    randall, jaime = randall_and_jaime
    jaime.send("/help")
    for command in (
        "/help",
        "/users",
        "/msg NAME TEXT",
        "/reply TEXT",
        "/me ACTION",
        "/nick NEW",
        "/ignore NAME",
        "/unignore NAME",
        "/quit [MESSAGE]",
        "//TEXT",
    ):
        jaime.stdout.expect(re.compile(rf"^{re.escape(command)} +\S"))

    jaime.send("/shrug")
    jaime.stdout.expect(re.compile(r"^Error: Unknown command /shrug; nothing was sent\."))
    jaime.send("//shrug")

    randall.stdout.expect("Jaime Lannister: /shrug")
    assert randall.stdout.lines[-2:] == ["* Jaime Lannister joined the chat.", "Jaime Lannister: /shrug"]


def test_ignore_hides_that_person_on_this_client_only(server, randall_and_jaime, open_client):
    randall, jaime = randall_and_jaime
    cat = open_client(server, "cat")
    join_and_wait(server, cat, "Cat")
    randall.stdout.expect("* Cat joined the chat.")

    randall.send("/ignore jaime lannister")
    randall.stdout.expect("* Ignoring jaime lannister: their messages are hidden on this client.")
    jaime.send("/me is being ignored")
    cat.stdout.expect("* Jaime Lannister is being ignored")  # the others still see it
    jaime.send("secret line")
    said(server, "Jaime Lannister", "secret line")
    cat.send("visible line")
    randall.stdout.expect("Cat: visible line")  # the room's one order: Jaime's lines came before
    assert not [line for line in randall.stdout.lines if "secret line" in line or "being ignored" in line]

    randall.send("/unignore Jaime Lannister")
    randall.stdout.expect("* No longer ignoring Jaime Lannister.")
    jaime.send("seen again")
    randall.stdout.expect("Jaime Lannister: seen again")


def test_newcomer_sees_the_motd_and_the_history_marked_as_such(tmp_path, start_server, open_client):
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome to the test chat.\nBe kind.\n", encoding="utf-8")
    server = start_server("--history", "2", "--motd", str(motd))
    randall = open_client(server, "randall")
    join_and_wait(server, randall, "Randall Flagg")
    randall.stdout.expect("[motd] Welcome to the test chat.")
    for text in ("one", "two", "/me three"):
        randall.send(text)
    server.stderr.expect(re.compile(r" \* Randall Flagg three$"))

    jaime = open_client(server, "jaime", "--timestamps")
    join(jaime, "Jaime Lannister")

    jaime.stdout.expect(re.compile(r"^\d\d:\d\d \[motd\] Welcome to the test chat\.$"))
    jaime.stdout.expect(re.compile(r"^\d\d:\d\d \[motd\] Be kind\.$"))
    # One time, when the line was said, first, as for every line with --timestamps.
    jaime.stdout.expect(re.compile(r"^\d\d:\d\d \[history\] Randall Flagg: two$"))
    jaime.stdout.expect(re.compile(r"^\d\d:\d\d \[history\] \* Randall Flagg three$"))
    randall.send("live")
    jaime.stdout.expect(re.compile(r"^\d\d:\d\d Randall Flagg: live$"))
    assert not [line for line in jaime.stdout.lines if line.endswith(": one")]


def test_history_off(start_server, open_client):
    server = start_server("--history", "0")
    randall = open_client(server, "randall")
    join_and_wait(server, randall, "Randall Flagg")
    randall.send("before")
    said(server, "Randall Flagg", "before")
    jaime = open_client(server, "jaime")
    join_and_wait(server, jaime, "Jaime Lannister")
    randall.send("after")
    jaime.stdout.expect("Randall Flagg: after")
    assert not [line for line in jaime.stdout.lines if "before" in line]


def test_motd_that_cannot_be_read_is_a_clear_error(tmp_path):
    key = procs.private_key_copy(tmp_path / "key")
    proc = procs.Proc(
        ["server.py", "--key", str(key), "--port", "0", "--motd", str(tmp_path / "missing")], tmp_path / "data"
    )
    try:
        assert proc.wait() == 1
        assert "Cannot read the message of the day" in proc.stderr.text()
        assert "Traceback" not in proc.stderr.text()
    finally:
        proc.kill()


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_history_option_refuses_what_is_not_a_count(value):
    result = subprocess.run(
        [sys.executable, "server.py", "--history", value],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=procs.TIMEOUT,
    )
    assert result.returncode == 2 and "not a number of messages" in result.stderr


@pytest.mark.parametrize(
    ("program", "options"),
    [
        (
            "server.py",
            [
                *["--host", "--port", "--key", "--history", "--motd", "--max-rooms", "--room-size"],
                *["/users", "/kick [#ROOM] NAME [REASON]", "/say TEXT", "/close #ROOM [REASON]", "/quit"],
            ],
        ),
        (
            "client.py",
            [
                "--host",
                "--port",
                "--name",
                "--fingerprint",
                "--known-hosts",
                "--no-color",
                "--timestamps",
                "/help",
                "/users",
                "/msg NAME TEXT",
                "/reply TEXT",
                "/me ACTION",
                "/nick NEW",
                "/ignore NAME",
                "/unignore NAME",
                "/quit [MESSAGE]",
                "//TEXT",
            ],
        ),
    ],
)
def test_help_lists_the_options_and_commands(program, options):
    result = subprocess.run(
        [sys.executable, program, "--help"], cwd=procs.ROOT, capture_output=True, text=True, timeout=procs.TIMEOUT
    )
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout


def test_name_option_joins_without_the_question(server, open_client):
    randall = open_client(server, "randall")
    join_and_wait(server, randall, "Randall Flagg")
    jaime = open_client(server, "jaime", "--name", "Jaime Lannister")

    jaime.send("my first line is chat")  # not taken for a username

    randall.stdout.expect("* Jaime Lannister joined the chat.")
    randall.stdout.expect("Jaime Lannister: my first line is chat")


def test_taken_name_option_on_a_pipe_exits_with_the_reason(server, open_client):
    randall = open_client(server, "randall")
    join_and_wait(server, randall, "Randall Flagg")
    second = open_client(server, "second", "--name", "RANDALL FLAGG")

    assert second.wait() == 1
    errors = second.stderr.text()
    assert "That username belongs to someone else." in errors and "giving up" in errors
    assert "Traceback" not in errors


def test_kicked_client_is_told_why_and_exits(tmp_path, running_server):
    client = procs.start_client(tmp_path, running_server.server_address[1], "kicked", "--name", "Bob")
    try:
        client.stdout.expect("Encryption is established.")
        operator = OperatorConsole(running_server)
        assert wait_until(lambda: running_server.room.find("Bob") is not None, procs.TIMEOUT), "Bob never joined"
        assert operator.execute("/kick Bob enough") == ["Kicked Bob."]

        assert client.wait() == 1
        assert client.stderr.text() == "You were kicked by the operator: enough\n"
    finally:
        client.kill()
