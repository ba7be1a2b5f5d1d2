"""The client's connection and trust path, on loopback: a first-seen key is
recorded only once the server has proved it holds it, and on a terminal only
once the person accepted it; a refusal before the handshake is shown in the
client's own words; a program that is not a chat server is named at once."""

from __future__ import annotations

import argparse
import socket
import threading

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.client import __main__ as client_main
from socket_chat.client import conversation
from socket_chat.client import link as client_link
from socket_chat.client.receiver import Display
from socket_chat.client.ui import Session, Style
from socket_chat.crypto import keystore
from socket_chat.protocol import RecordLimitError, ServerConnection, ServerIdentity, connection
from socket_chat.server import app as chat_server
from socket_chat.server.handler import RECORDS_USED_UP, server_full
from tests.conftest import stop_server
from tests.test_terminal import TIMEOUT, join_at_terminal, open_pty  # noqa: F401 (a fixture)

SERVER_WORDS = "The server is full (2 people). Try again later."


def fingerprint_of(key) -> str:
    return crypto_utils.fingerprint(crypto_utils.export_public_key(key))


class FakeTerminal:
    """What the trust path uses of a Terminal: lines shown, and answers typed."""

    def __init__(self, answers: list[str] | None = None, interactive: bool = True) -> None:
        self.interactive = interactive
        self.answers = list(answers or [])
        self.prompts: list[str] = []
        self.remembered: list[bool] = []  # each read_line: kept in the history?
        self.shown: list[str] = []
        self.errors: list[str] = []

    def show(self, line: str) -> None:
        self.shown.append(line)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def read_line(self, prompt: str, remember: bool = True) -> str:
        self.prompts.append(prompt)
        self.remembered.append(remember)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


def client_args(port: int, known_hosts, *options: str) -> argparse.Namespace:
    options = ("--host", "127.0.0.1", "--port", str(port), "--known-hosts", str(known_hosts), *options)
    return client_main.parse_args(list(options))


def trust(port: int, known_hosts, screen: FakeTerminal, *options: str) -> None:
    """Connect to 127.0.0.1:``port`` and run the handshake with its trust
    decision, as session.run does; then close."""
    link = client_link.connect("127.0.0.1", port)
    try:
        client_link.trust_server(link, client_args(port, known_hosts, *options), screen)
    finally:
        link.sock.close()


@pytest.fixture
def port(running_server):
    return running_server.server_address[1]


@pytest.fixture
def known_hosts(tmp_path):
    return tmp_path / "data" / "known_hosts"


# --- the first connection asks, as ssh does ---------------------------------------


def test_first_connection_on_a_terminal_shows_the_fingerprint_and_records_on_yes(port, known_hosts, identity_key):
    screen = FakeTerminal(["yes"])

    trust(port, known_hosts, screen)

    real_fp = fingerprint_of(identity_key)
    assert screen.prompts == [client_link.CONFIRM_PROMPT]
    assert screen.remembered == [False]  # Up recalls chat lines, not this answer
    assert any(real_fp in line for line in screen.shown)
    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{port} {real_fp}\n"


@pytest.mark.parametrize("answer", ["no", "NO", ""], ids=["no", "NO", "end of input"])
def test_first_connection_answered_no_records_nothing(port, known_hosts, answer):
    screen = FakeTerminal([answer] if answer else [])

    with pytest.raises(client_link.ClientError, match=r"not accepted\. Nothing was recorded"):
        trust(port, known_hosts, screen)
    assert not known_hosts.exists()


def test_the_fingerprint_pasted_in_is_accepted_and_another_refused(port, known_hosts, identity_key, impostor_key):
    real_fp = fingerprint_of(identity_key)
    with pytest.raises(client_link.ClientError, match="is not the server's") as refused:
        trust(port, known_hosts, FakeTerminal([fingerprint_of(impostor_key)]))
    assert real_fp in str(refused.value)
    assert not known_hosts.exists()

    trust(port, known_hosts, FakeTerminal([f"  {real_fp}.  "]))  # as copied from a sentence
    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{port} {real_fp}\n"


def test_an_unclear_answer_is_asked_again(port, known_hosts):
    screen = FakeTerminal(["maybe", "y", "yes"])

    trust(port, known_hosts, screen)

    assert screen.prompts == [client_link.CONFIRM_PROMPT, client_link.CONFIRM_AGAIN, client_link.CONFIRM_AGAIN]
    assert known_hosts.exists()


@pytest.mark.parametrize(
    ("interactive", "options"), [(False, ()), (True, ("--accept-new",))], ids=["off a terminal", "--accept-new"]
)
def test_off_a_terminal_or_with_accept_new_the_key_is_recorded_without_asking(
    port, known_hosts, identity_key, interactive, options
):
    screen = FakeTerminal(interactive=interactive)

    trust(port, known_hosts, screen, *options)

    real_fp = fingerprint_of(identity_key)
    assert screen.prompts == []
    assert any(real_fp in line and str(known_hosts) in line for line in screen.shown)
    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{port} {real_fp}\n"


def test_a_known_key_is_not_asked_about_again(port, known_hosts):
    trust(port, known_hosts, FakeTerminal(["yes"]))
    screen = FakeTerminal([])

    trust(port, known_hosts, screen)

    assert screen.prompts == [] and screen.shown == []


def test_first_connection_prompt_at_a_real_terminal(running_server, open_pty, identity_key, tmp_path):
    pty = open_pty(running_server.server_address[1], accept_new=False)

    pty.expect(b"can't be established")
    pty.expect(fingerprint_of(identity_key).encode())
    pty.expect_input("Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
    pty.type_line("yes")
    pty.expect(b"Encryption is established.")
    join_at_terminal(pty, "Ann")
    known = tmp_path / "data-0" / "socket-chat" / "known_hosts"
    assert fingerprint_of(identity_key) in known.read_text(encoding="utf-8")

    pty.type_line("hello")
    pty.expect(b"Ann: hello")
    pty.type_line("/quit")
    assert pty.wait(TIMEOUT) == 0
    history = (tmp_path / "data-0" / "socket-chat" / "history").read_text(encoding="utf-8").split("\n")
    assert "hello" in history and "yes" not in history  # Up recalls chat lines, not the answer


def test_first_connection_refused_at_a_real_terminal(running_server, open_pty, tmp_path):
    pty = open_pty(running_server.server_address[1], accept_new=False)

    pty.expect_input("Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
    pty.type_line("no")
    pty.expect(b"Not connected")
    assert pty.wait(TIMEOUT) == 1
    assert not (tmp_path / "data-0" / "socket-chat" / "known_hosts").exists()


# --- a key is recorded only once the server proved it holds it --------------------


class FakeServer:
    """A loopback server that sends a real hello for ``key`` (or ``greeting``
    bytes, or nothing), then reads the client's first bytes, sends ``after``
    and closes."""

    def __init__(self, key=None, greeting: bytes | None = None, after: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.key, self.greeting, self.after = key, greeting, after
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        with sock:
            sock.settimeout(TIMEOUT)
            if self.key is not None:
                sock.sendall(ServerConnection(ServerIdentity.of(self.key)).data_to_send())
            elif self.greeting:
                sock.sendall(self.greeting)
            try:
                self.received = sock.recv(65536)
                sock.sendall(self.after)
            except OSError:
                pass

    def close(self) -> None:
        self._thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def start(*args, **kwargs) -> FakeServer:
        servers.append(FakeServer(*args, **kwargs))
        return servers[-1]

    yield start
    for fake in servers:
        fake.close()


@pytest.mark.parametrize("after", [b"", b"\x00\x00\x00\x12" + bytes(18)], ids=["closes", "garbage for HI"])
def test_a_server_that_never_completes_the_handshake_is_not_recorded(
    fake_server, impostor_key, known_hosts, after, capsys
):
    fake = fake_server(impostor_key, after=after)

    code = client_main.main(["--host", "127.0.0.1", "--port", str(fake.port), "--known-hosts", str(known_hosts)])
    fake.close()

    assert code == 1
    assert fake.received  # the client did send its key exchange: the key was offered and used
    assert not known_hosts.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_after_a_fake_server_the_real_one_is_not_taken_for_a_man_in_the_middle(
    fake_server, impostor_key, identity_key, known_hosts
):
    # A fake answers at the address first and never completes the handshake;
    # then the real server is there, at the same address.
    fake = fake_server(impostor_key)
    with pytest.raises(protocol.RemoteProtocolError):
        trust(fake.port, known_hosts, FakeTerminal(interactive=False))
    fake.close()
    real = chat_server.ChatServer(identity_key, "127.0.0.1", fake.port)
    thread = threading.Thread(target=real.serve_forever, daemon=True)
    thread.start()
    try:
        trust(fake.port, known_hosts, FakeTerminal(interactive=False))
    finally:
        stop_server(real, thread)

    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{fake.port} {fingerprint_of(identity_key)}\n"


def test_a_pin_that_replaces_a_stored_key_is_announced(port, known_hosts, identity_key, impostor_key):
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text(f"127.0.0.1:{port} {fingerprint_of(impostor_key)}\n", encoding="utf-8")
    screen = FakeTerminal(interactive=False)

    trust(port, known_hosts, screen, "--fingerprint", fingerprint_of(identity_key))

    assert any("replaced" in line and fingerprint_of(impostor_key) in line for line in screen.shown)
    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{port} {fingerprint_of(identity_key)}\n"


# --- what the server says before the handshake --------------------------------------


def test_a_full_server_refusal_is_shown_in_the_clients_words(fake_server):
    fake = fake_server(greeting=protocol.refusal(SERVER_WORDS))
    link = client_link.connect("127.0.0.1", fake.port)
    try:
        with pytest.raises(client_link.ClientError) as refused:
            client_link.establish(link, trust=lambda hello: None)
    finally:
        link.sock.close()

    first, second = str(refused.value).splitlines()
    assert first.startswith("The server turned the connection away")
    assert second == f"(The server's words, unverified: {SERVER_WORDS})"


def test_a_forged_refusal_is_cut_short_labelled_and_cleaned():
    forged = "Reconnect with --fingerprint SHA256:" + "A" * 43 + "\x1b[2J\n" + "x" * 65_000

    text = client_link.refusal_text(forged)

    first, second = text.splitlines()
    assert first.startswith("The server turned the connection away")
    assert second.startswith("(The server's words, unverified: Reconnect")
    assert len(second) < len("(The server's words, unverified: )") + client_link.MAX_REFUSAL_SHOWN + 1
    assert "\x1b" not in text


@pytest.mark.parametrize(("places", "words"), [(1, "1 person"), (1000, "1,000 people")])
def test_the_full_server_refusal_counts_properly(places, words):
    assert server_full(places) == f"The server is full ({words}). Try again later."


# --- not a chat server --------------------------------------------------------------


def test_a_server_that_answers_something_else_is_named_at_once(fake_server):
    fake = fake_server(greeting=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    link = client_link.connect("127.0.0.1", fake.port)
    try:
        with pytest.raises(client_link.ClientError) as caught:
            client_link.establish(link, trust=lambda hello: None, server=f"127.0.0.1:{fake.port}")
    finally:
        link.sock.close()

    assert str(caught.value).startswith(f"127.0.0.1:{fake.port} is not a chat server (it answered with ")
    assert '"HTTP/1.1 400 Bad Request\\r\\n' in str(caught.value)


def test_a_server_that_says_nothing_is_named_after_a_short_wait(fake_server, monkeypatch):
    monkeypatch.setattr(client_link, "HELLO_TIMEOUT", 0.3)
    fake = fake_server(greeting=b"")  # a web server: it waits for the client to speak
    link = client_link.connect("127.0.0.1", fake.port)
    try:
        with pytest.raises(client_link.ClientError, match=r"said nothing for 0\.3 s.*not a chat server"):
            client_link.establish(link, trust=lambda hello: None, server=f"127.0.0.1:{fake.port}")
    finally:
        link.sock.close()


def test_a_chat_server_of_another_version_is_not_called_something_else(fake_server):
    fake = fake_server(greeting=b"\x00\x00\x00\x02\x01\x07")  # a hello, version 7
    link = client_link.connect("127.0.0.1", fake.port)
    try:
        with pytest.raises(protocol.RemoteProtocolError, match="version 7"):
            client_link.establish(link, trust=lambda hello: None)
    finally:
        link.sock.close()


@pytest.mark.parametrize(
    ("data", "greeting"),
    [
        (b"HTTP/1.1 200 OK\r\n", False),
        (b"SSH-2.0-OpenSSH_9.6\r\n", False),
        (b"\x00\x00\x00\x05\x99", False),
        (b"\x00\x00\x00", False),
        (b"\x00\x00\x00\x05", True),
        (b"\x00\x00\x00\x05\x01", True),
        (b"\x00\x00\x00\x05\x03", True),
    ],
)
def test_what_may_begin_a_server_greeting(data, greeting):
    assert protocol.may_be_server_greeting(data) is greeting


# --- a direction at its record limit -------------------------------------------------


class LimitedLink:
    """A link whose direction to the server has no record left but the Goodbye's."""

    def __init__(self) -> None:
        self.sent: list[protocol.Message] = []

    def send_paced(self, message) -> None:
        raise RecordLimitError("no records left")

    def send(self, message) -> None:
        self.sent.append(message)


def test_a_client_at_its_record_limit_says_so_and_leaves():
    screen = FakeTerminal(["one line too many"])
    display = Display(screen, Session(), Style(colour=False))

    parting = conversation.send_typed_lines(LimitedLink(), display)

    assert parting == ""  # leaves with a Goodbye, the one record left
    assert screen.errors == [conversation.RECORDS_USED_UP]


def test_a_server_at_its_record_limit_says_why_and_closes(own_server, monkeypatch):
    chat = own_server.start()
    alice = own_server.client("Alice")
    # Both ends read the limit when they send and open: a small one is
    # reached after a few records.
    used = alice.conn.records_received
    monkeypatch.setattr(connection, "MAX_RECORDS", used + 3)

    seen = []
    for number in range(5):
        chat.notify_all(f"notice {number}")
        event = alice.next_event()
        seen.append(event)
        if isinstance(event, protocol.Goodbye):
            break
    assert seen[-1] == protocol.Goodbye(RECORDS_USED_UP), seen
    assert isinstance(alice.wait_closed(), protocol.ConnectionClosed)


def test_keystore_errors_reach_the_person_without_a_traceback(tmp_path, port, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    code = client_main.main(["--host", "127.0.0.1", "--port", str(port), "--known-hosts", str(shared / "known_hosts")])

    err = capsys.readouterr().err
    assert code == 1
    assert f"chmod go-w {shared}" in err and "Traceback" not in err
    assert isinstance(keystore.KeyFileError("x"), keystore.KeyStoreError)
