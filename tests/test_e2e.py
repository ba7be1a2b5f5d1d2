"""The real programs: server.py and client.py as processes on loopback, with
the clients' stdin a pipe, as a script would run them."""

from __future__ import annotations

import re
import signal
import socket

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat.chat.allow import NAME_RESERVED
from socket_chat.server import app as chat_server
from tests import procs

STOP_TIMEOUT = 5.0  # seconds a process may take to exit once told to


@pytest.fixture
def server(tmp_path):
    proc = procs.start_server(tmp_path)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def open_client(tmp_path, server):
    """Start client.py processes for ``server``; all are killed at the end."""
    started: list[procs.Proc] = []

    def start(label: str, *options: str, sigint_ignored: bool = False) -> procs.Proc:
        client = procs.start_client(tmp_path, server.port, label, *options, sigint_ignored=sigint_ignored)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            client.kill()


def join(client: procs.Proc, name: str) -> None:
    client.stdout.expect("Please enter a username.")
    client.send(name)


def join_and_wait(server: procs.Proc, client: procs.Proc, name: str) -> None:
    """Join, and wait until the server logs that the client joined."""
    join(client, name)
    server.stderr.expect(re.compile(rf" {re.escape(name)} joined from "))


def chatting(server: procs.Proc, client: procs.Proc, name: str) -> None:
    """Join, then say a line and wait for the server's log of it: the client
    is past the username and reading chat lines."""
    join(client, name)
    client.send(f"{name} is here")
    server.stderr.expect(re.compile(rf" {re.escape(name)}: {re.escape(name)} is here$"))


def stop(server: procs.Proc) -> int:
    server.signal(signal.SIGINT)
    return server.wait(STOP_TIMEOUT)


def real_fingerprint(identity_key) -> str:
    return crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))


def assert_startup_lines(client: procs.Proc, fingerprint: str) -> None:
    """The client's stdout begins with each step, the first-contact note
    (with the fingerprint), then the server's question."""
    lines = client.stdout.text().splitlines()
    established = lines.index("Encryption is established.")
    assert lines[:2] == ["Trying to connect server...", "Connected to server."]
    assert established > 2 and fingerprint in "\n".join(lines[2:established])
    assert lines[established + 1] == "Please enter a username."


def test_readme_conversation_reaches_the_other_client(server, open_client, identity_key):
    randall = open_client("randall")
    join_and_wait(server, randall, "Randall Flagg")
    jaime = open_client("jaime")
    join(jaime, "Jaime Lannister")
    randall.stdout.expect("* Jaime Lannister joined the chat.")

    jaime.send("Hi")
    randall.stdout.expect("Jaime Lannister: Hi")
    randall.send("Hi")
    jaime.stdout.expect("Randall Flagg: Hi")
    jaime.send("How are you R.F.?")
    randall.stdout.expect("Jaime Lannister: How are you R.F.?")

    jaime.close_stdin()
    assert jaime.wait() == 0
    randall.stdout.expect("* Jaime Lannister left the chat.")
    randall.close_stdin()
    assert randall.wait() == 0
    for client in (randall, jaime):
        assert_startup_lines(client, real_fingerprint(identity_key))
    # Exactly the README's lines: history, the user list the client asks for
    # on joining and the rate limit add none.
    assert after_the_question(randall) == (
        "* You are Randall Flagg. No one else is here yet.\n"
        "* Jaime Lannister joined the chat.\nJaime Lannister: Hi\n"
        "Jaime Lannister: How are you R.F.?\n* Jaime Lannister left the chat.\n"
    )
    assert after_the_question(jaime) == "* You are Jaime Lannister. 1 other here: Randall Flagg.\nRandall Flagg: Hi\n"


def after_the_question(client: procs.Proc) -> str:
    """What a client printed after the server asked for a username."""
    return client.stdout.text().split("Please enter a username.\n", 1)[1]


def test_server_announces_its_address_and_fingerprint_but_never_its_key(server, open_client, identity_key):
    client = open_client("talker")
    join_and_wait(server, client, "Jaime Lannister")
    client.send("Hi")
    server.stderr.expect(re.compile(r" Jaime Lannister: Hi$"))
    client.close_stdin()
    assert client.wait() == 0
    assert stop(server) == 0

    assert server.stdout.text().splitlines() == [
        "Server is commencing...",
        f"Listening at 127.0.0.1:{server.port}",
        f"Server key fingerprint: {real_fingerprint(identity_key)}",
    ]
    output = server.stdout.text() + server.stderr.text()
    pem_lines = (procs.KEYS / "test-only-server-key.pem").read_text().splitlines()
    assert "-----BEGIN" not in output
    assert not [line for line in pem_lines if line and line in output]


def test_sigint_stops_the_server_and_tells_every_client(server, open_client):
    clients = [open_client("randall"), open_client("jaime")]
    chatting(server, clients[0], "Randall Flagg")
    chatting(server, clients[1], "Jaime Lannister")

    assert stop(server) == 0

    for client in clients:
        client.stderr.expect(chat_server.SHUTTING_DOWN)
        assert client.wait(STOP_TIMEOUT) != 0
        assert "Traceback" not in client.stderr.text()


def test_lost_server_is_reported_in_one_line(server, open_client):
    client = open_client("randall")
    chatting(server, client, "Randall Flagg")

    server.popen.kill()  # SIGKILL: no goodbye

    assert client.wait(STOP_TIMEOUT) != 0
    assert client.stderr.text() == "Connection to server lost.\n"


def test_lost_server_ends_a_client_started_with_sigint_ignored(server, open_client):
    client = open_client("background", sigint_ignored=True)
    chatting(server, client, "Randall Flagg")

    server.popen.kill()

    client.stderr.expect("Connection to server lost.")
    assert client.wait(3) != 0  # it exits at once when it works


# The client with a receiver that is scheduled first: it sees the server's end,
# reports it and wakes the main thread before Receiver.start() has returned.
EARLY_RECEIVER_CLIENT = """
import sys
from socket_chat.client import __main__ as client_main
from socket_chat.client import conversation

class EarlyReceiver(conversation.Receiver):
    def start(self):
        super().start()
        self.join(5)

conversation.Receiver = EarlyReceiver
sys.exit(client_main.main(sys.argv[1:]))
"""


def test_server_ending_as_the_chat_starts_is_a_failure(server, tmp_path):
    args = ["-c", EARLY_RECEIVER_CLIENT, "--port", str(server.port), "--name", "Randall Flagg"]
    client = procs.Proc(args, tmp_path / "data-early")
    try:
        server.stderr.expect(re.compile(r" Randall Flagg joined from "))
        assert stop(server) == 0

        client.stderr.expect(chat_server.SHUTTING_DOWN)
        assert client.wait(STOP_TIMEOUT) != 0
    finally:
        client.kill()


def test_taken_username_on_a_pipe_ends_the_client_with_the_reason(server, open_client):
    join_and_wait(server, open_client("randall"), "Randall Flagg")
    second = open_client("second")
    join(second, "randall flagg")  # names are compared case-insensitively; the first key registered it
    second.send("this line must not become a username")

    assert second.wait() != 0
    errors = second.stderr.text()
    assert NAME_RESERVED in errors
    assert "Traceback" not in errors


def test_nothing_listening_gives_one_line_could_not_connect(tmp_path):
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        client = procs.start_client(tmp_path, port, "alone")
        try:
            client.close_stdin()
            assert client.wait() != 0
            errors = client.stderr.text().splitlines()
        finally:
            client.kill()

    assert len(errors) == 1 and errors[0].startswith("Could not connect"), errors


# --- the server's limits, as a person meets them ------------------------------


@pytest.fixture
def limited_server(tmp_path):
    """server.py with one place and a fast but small flood-control bucket."""
    proc = procs.start_server(tmp_path, "--max-clients", "2", "--rate", "10", "--burst", "3")
    try:
        yield proc
    finally:
        proc.kill()


def test_a_full_server_is_one_clear_line_and_a_failure(limited_server, tmp_path):
    clients = []
    try:
        for index in range(2):
            clients.append(procs.start_client(tmp_path, limited_server.port, f"c{index}"))
            join_and_wait(limited_server, clients[-1], f"person{index}")
        third = procs.start_client(tmp_path, limited_server.port, "third")
        clients.append(third)
        assert third.wait() == 1
        assert third.stderr.text() == (
            "The server turned the connection away before the handshake (it does so when it is full or busy, "
            "or when too many connections come from one address). "
            "Try again later.\n"
            "(The server's words, unverified: The server is full (2 people). Try again later.)\n"
        )
        assert third.stdout.text() == "Trying to connect server...\nConnected to server.\n"
    finally:
        for client in clients:
            client.kill()


def test_a_pasted_block_past_the_burst_arrives_whole_and_in_order(limited_server, tmp_path):
    reader = procs.start_client(tmp_path, limited_server.port, "reader")
    paster = procs.start_client(tmp_path, limited_server.port, "paster")
    try:
        join_and_wait(limited_server, reader, "Reader")
        join_and_wait(limited_server, paster, "Paster")
        lines = [f"pasted line {n}" for n in range(15)]  # five times the burst
        paster.popen.stdin.write("".join(line + "\n" for line in lines))
        paster.close_stdin()

        for line in lines:
            reader.stdout.expect(f"Paster: {line}")
        assert paster.wait() == 0
        assert "Slow down" not in paster.stderr.text() + paster.stdout.text()
        assert [line for line in reader.stdout.lines if line.startswith("Paster: ")] == [
            f"Paster: {line}" for line in lines
        ]
    finally:
        for client in (reader, paster):
            client.kill()
