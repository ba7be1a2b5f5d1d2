"""Private servers over loopback: a live server with ``--allow`` turns an
unknown key and a guest away with one Goodbye and nothing of the chat;
``/invite`` lets a key in; the file is read again by the reload entry point
and on SIGHUP (server.py in a process); a bad file stops server.py at
start with its line."""

from __future__ import annotations

import base64
import logging
import re
import signal

import pytest

from socket_chat import protocol
from socket_chat.chat.allow import INVITED_ONLY
from socket_chat.chat.blocks import DEFAULT_MAX_LINES
from socket_chat.crypto import PersonKey, keystore
from socket_chat.crypto.person import ssh_key_blob
from socket_chat.server.allow_file import AllowFile
from socket_chat.server.console import OperatorConsole
from tests import procs
from tests.conftest import start_server, stop_server
from tests.helpers import ChatTestClient, key_proof, open_door_limits

ANN = PersonKey.from_seed(bytes(range(32)))
MALLORY = PersonKey.from_seed(bytes(range(2, 34)))


@pytest.fixture
def allow_path(tmp_path):
    path = tmp_path / "allowed"
    path.write_text(f"# the team\n{ANN.fingerprint} Ann\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def private_server(identity_key, allow_path):
    server, thread = start_server(identity_key, limits=open_door_limits(guests=False), allow=AllowFile(allow_path))
    clients: list[ChatTestClient] = []
    try:
        yield server, clients
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)


def connect(address, clients: list, identity: PersonKey | None = None, name: str | None = None) -> ChatTestClient:
    """A client past the handshake that proves ``identity`` (if given) and joins as ``name``."""
    client = ChatTestClient(address)
    clients.append(client)
    client.handshake(identity, guest=identity is None)
    if name is not None:
        client.join(name)
    return client


def everything_until_closed(client: ChatTestClient) -> list:
    """Every event from the start of the handshake to the end of the connection."""
    events = []
    while not isinstance(event := client.next_event(), protocol.ConnectionClosed):
        events.append(event)
        if isinstance(event, protocol.ServerHello):
            client.conn.accept_server_key()
        if isinstance(event, protocol.ProofRequest) and client.identity is not None:
            client.send(key_proof(client.identity, client.conn.session_id))
        if isinstance(event, protocol.UsernameRequest):
            client.send(protocol.Username("Ann"))  # a guest's, or what an unknown key would try next
    return events


@pytest.mark.parametrize("identity", [MALLORY, None], ids=["unknown-key", "guest"])
def test_an_outsider_gets_exactly_the_refusal_and_no_chat_data(private_server, identity, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    server, clients = private_server
    ann = connect(server.server_address, clients, ANN, "Ann")
    ann.say("the secret plan")
    outsider = ChatTestClient(server.server_address)
    clients.append(outsider)
    outsider.identity = identity
    events = everything_until_closed(outsider)
    assert [type(e) for e in events[:2]] == [protocol.ServerHello, protocol.HandshakeComplete]
    assert events[2:] == [  # every message after the handshake: nothing of the chat
        server.limits.rate_limit_message(),
        protocol.UsernameDeadline(300),
        protocol.ProofRequest(),
        protocol.Stamps(),
        protocol.MultilineOffer(DEFAULT_MAX_LINES),
        protocol.Rooms(),
        protocol.UsernameRequest("Please enter a username."),
        protocol.Goodbye(INVITED_ONLY),
    ]
    port = outsider.sock.getsockname()[1]
    if identity is None:
        assert f"127.0.0.1:{port}: refused a guest (no key)" in caplog.text
    else:
        assert f"127.0.0.1:{port}: refused the key {MALLORY.fingerprint}: it is not in the allow file" in caplog.text
        assert base64.b64encode(MALLORY.public_bytes).decode() not in caplog.text
        assert MALLORY.public_bytes.hex() not in caplog.text
    assert server.names() == ["Ann"]


def test_invite_lets_a_key_in_and_reload_takes_a_changed_file(private_server, allow_path, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    server, clients = private_server
    console = OperatorConsole(server)
    assert console.execute(f"/invite {MALLORY.fingerprint} Mal") == [
        f"Invited {MALLORY.fingerprint}, the name Mal theirs alone: 2 keys let in now."
    ]
    assert allow_path.read_text(encoding="utf-8").endswith(f"{MALLORY.fingerprint} Mal  # added by /invite\n")
    mal = connect(server.server_address, clients, MALLORY, "Mal")
    ann = connect(server.server_address, clients, ANN, "Ann")
    mal.say("thanks for the invitation")
    assert ann.expect(protocol.ChatMessage) == protocol.ChatMessage("Mal", "thanks for the invitation")
    assert console.execute(f"/invite {MALLORY.fingerprint}") == [f"{MALLORY.fingerprint} is invited already."]

    allow_path.write_text(f"{ANN.fingerprint} Ann\nbroken\n", encoding="utf-8")
    assert console.execute("/reload") == [
        f"The allow file {allow_path}, line 2: 'broken': expected a fingerprint (SHA256:...) or an ssh-ed25519 "
        "public key",
        "The allow file was not reloaded: the old list stays.",
    ]
    assert server.allowed().admits(MALLORY.fingerprint)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"The allow file {allow_path}, line 2: 'broken': expected a fingerprint (SHA256:...) or an ssh-ed25519 "
        "public key; the allow file was not reloaded: the old list stays."
    ]
    allow_path.write_text(f"{ANN.fingerprint} Ann\n", encoding="utf-8")
    assert server.reload_allow_list() == [
        f"Reloaded the allow file {allow_path}: 1 key let in.",
        "Still online, no longer invited (they stay until they leave; /kick to remove): Mal",
    ]
    mal.say("still here")  # kept, as ssh keeps its sessions
    assert ann.expect(protocol.ChatMessage) == protocol.ChatMessage("Mal", "still here")
    again = ChatTestClient(server.server_address)
    clients.append(again)
    again.identity = MALLORY
    assert everything_until_closed(again)[-1] == protocol.Goodbye(INVITED_ONLY)


def test_the_console_without_allow_says_how_to_have_one_and_marks_guests(running_server):
    console = OperatorConsole(running_server)
    assert console.execute(f"/invite {ANN.fingerprint}") == [
        "This server admits everyone: start it with --allow FILE to admit only the keys in FILE."
    ]
    assert console.execute("/reload") == [
        "There is nothing to read again: start the server with --allow FILE (only its keys get in) "
        "or --operators FILE (its keys may run the operator's commands from their client)."
    ]
    assert console.execute("/invite") == ["Usage: /invite FINGERPRINT [NAME] or /invite ssh-ed25519 AAAA... [COMMENT]"]
    clients: list[ChatTestClient] = []
    try:
        connect(running_server.server_address, clients, ANN, "Ann")
        connect(running_server.server_address, clients, None, "bob")  # a guest
        shown = console.execute("/users")
        assert shown[0] == "2 online:" and shown[1].startswith("  Ann (") and shown[2].startswith("  bob (guest) (")
    finally:
        for client in clients:
            client.close()


def test_sighup_reads_the_allow_file_again_in_server_py(tmp_path, allow_path):
    """client.py refused (its line, exit 1), the file changed, SIGHUP, then let in."""
    server = procs.start_server(tmp_path, "--allow", str(allow_path))
    identity = tmp_path / "mal.pem"
    mal_key, _ = keystore.load_or_create_person_key(identity)
    try:
        server.stdout.expect(f"Admitting only the keys in {allow_path} (1 listed; SIGHUP or /reload reads it again)")
        refused = procs.start_client(tmp_path, server.port, "mal", "--name", "Mal", "--identity", str(identity))
        try:
            assert refused.wait() == 1
            assert INVITED_ONLY in refused.stdout.text() + refused.stderr.text()
        finally:
            refused.kill()
        with allow_path.open("a", encoding="utf-8") as file:
            file.write(f"{mal_key.fingerprint} Mal\n")
        server.signal(signal.SIGHUP)
        server.stderr.expect(re.compile(re.escape(f"INFO Reloaded the allow file {allow_path}: 2 keys let in.")))
        mal = procs.start_client(tmp_path, server.port, "mal", "--name", "Mal", "--identity", str(identity))
        try:
            mal.stdout.expect(re.compile(r"You are Mal\."))
        finally:
            mal.kill()
    finally:
        server.kill()


def test_a_bad_allow_file_stops_server_py_with_its_line(tmp_path, allow_path):
    allow_path.write_text(f"{ANN.fingerprint} Ann\nssh-rsa AAAAB3NzaC1yc2E\n", encoding="utf-8")
    err = procs.server_py_stops(tmp_path / "data", "--allow", str(allow_path))
    assert f"The allow file {allow_path}, line 2: the key cannot be used: its type is ssh-rsa" in err


def test_allow_and_guests_yes_is_a_usage_error(tmp_path, allow_path):
    err = procs.server_py_stops(tmp_path / "data", "--allow", str(allow_path), "--guests", "yes", status=2)
    assert "--allow admits only the keys in its file: it cannot be used with --guests yes" in err


def test_invite_takes_an_openssh_key_line_with_its_comment(private_server, allow_path):
    server, clients = private_server
    console = OperatorConsole(server)
    pub = f"ssh-ed25519 {base64.b64encode(ssh_key_blob(MALLORY.public_bytes)).decode()}"
    assert console.execute(f"/invite {pub} mal@laptop") == [f"Invited {MALLORY.fingerprint}: 2 keys let in now."]
    assert allow_path.read_text(encoding="utf-8").endswith(f"{pub}  # mal@laptop, added by /invite\n")
    connect(server.server_address, clients, MALLORY, ["mal", "laptop"][0])
    assert console.execute(f"/invite {pub}") == [f"{MALLORY.fingerprint} is invited already."]
    assert console.execute("/invite ssh-rsa AAAAB3NzaC1yc2E x") == [
        "Not invited: the key cannot be used: its type is ssh-rsa, and only ssh-ed25519 keys are taken"
    ]
