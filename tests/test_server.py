"""The server: a real ChatServer on loopback, with protocol-level clients.

Every wait is bounded: socket reads time out (ChatTestClient), threads are
joined with a timeout, and polls have a deadline.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.chat import limits
from socket_chat.chat.member import USERNAME_INVALID, USERNAME_LOOKS_TAKEN, USERNAME_TAKEN
from socket_chat.protocol import (
    ChatMessage,
    ErrorNotice,
    Goodbye,
    UserJoined,
    UserLeft,
    Username,
    UsernameRequest,
    Welcome,
)
from socket_chat.server import app as server
from socket_chat.server.command_line import cannot_listen, main
from tests import procs
from tests.helpers import DEADLINE, ChatTestClient, run_threads, wait_until

# --- helpers -----------------------------------------------------------------


def next_event_skipping(client: ChatTestClient, *skipped):
    """The next event that is not of a type in ``skipped``."""
    while isinstance(event := client.next_event(), skipped):
        pass
    return event


def peer_name(client: ChatTestClient) -> str:
    """How the server names this client's connection (and its threads)."""
    host, port = client.sock.getsockname()[:2]
    return f"{host}:{port}"


@pytest.fixture
def alice_and_bob(connect):
    """Two joined clients; Alice has seen Bob join."""
    alice = connect("Alice")
    bob = connect("Bob")
    alice.expect(UserJoined)
    return alice, bob


# --- a real server: conversation and broadcast -------------------------------


def test_readme_conversation_between_two_people(connect):
    randall = connect("Randall Flagg")
    jaime = connect("Jaime Lannister")
    assert randall.expect(UserJoined) == UserJoined("Jaime Lannister")

    jaime.say("Hi")
    assert randall.next_event() == ChatMessage("Jaime Lannister", "Hi")
    randall.say("Hi")
    assert jaime.next_event() == ChatMessage("Randall Flagg", "Hi")
    jaime.say("How are you R.F.?")
    assert randall.next_event() == ChatMessage("Jaime Lannister", "How are you R.F.?")


def test_broadcast_reaches_every_other_client_once_and_never_the_sender(connect):
    a, b, c, d = (connect(n) for n in "ABCD")
    # Drain the join notices: A sees B, C, D join; B sees C, D; C sees D.
    for client, count in ((a, 3), (b, 2), (c, 1)):
        for _ in range(count):
            client.expect(UserJoined)

    a.say("hello")
    for client in (b, c, d):
        assert client.next_event() == ChatMessage("A", "hello")

    # The next thing each sees is a later message: nothing was sent twice,
    # and A never got its own "hello".
    b.say("second")
    for client in (a, c, d):
        assert client.next_event() == ChatMessage("B", "second")
    c.say("third")
    assert b.next_event() == ChatMessage("C", "third")


def test_all_clients_see_several_senders_in_one_order(connect):
    senders = [connect(f"Sender{i}") for i in range(3)]
    listeners = [connect(f"Listener{i}") for i in range(4)]
    everyone = senders + listeners
    # Drain join notices: each client sees everyone who joined after it.
    for i, client in enumerate(everyone):
        for _ in range(len(everyone) - 1 - i):
            client.expect(UserJoined)
    barrier = threading.Barrier(len(senders))

    def send_all(i, client):
        def run():
            barrier.wait(DEADLINE)
            for n in range(20):
                client.say(f"{i}:{n}")

        return run

    run_threads([send_all(i, c) for i, c in enumerate(senders)])

    seen = [[listener.expect(ChatMessage) for _ in range(60)] for listener in listeners]
    assert all(sequence == seen[0] for sequence in seen)
    for i, sender in enumerate(senders):
        name = f"Sender{i}"
        own = [m.text for m in seen[0] if m.sender == name]
        assert own == [f"{i}:{n}" for n in range(20)]
        received = [sender.expect(ChatMessage) for _ in range(40)]
        assert received == [m for m in seen[0] if m.sender != name]


# --- usernames ---------------------------------------------------------------


def test_taken_name_is_asked_again_then_another_is_accepted(connect):
    alice = connect("Alice")
    other = connect()

    other.send(Username("ALICE"))
    assert other.next_event() == UsernameRequest(USERNAME_TAKEN)
    other.send(Username("Bob"))
    assert other.next_event() == Welcome("Bob")
    assert alice.next_event() == UserJoined("Bob")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("x" * 33, "is longer than 32 characters"),
        ("bad\x1bname", "contains a character that cannot be shown (U+001B)"),
        ("zero\u200bwidth", "contains an invisible character (U+200B)"),
    ],
)
def test_invalid_name_is_asked_again(connect, name, reason):
    client = connect()
    client.send(Username(name))
    assert client.next_event() == UsernameRequest(USERNAME_INVALID.format(reason=reason))
    assert client.join("x" * 32) == Welcome("x" * 32)


def invalid(reason: str) -> UsernameRequest:
    return UsernameRequest(USERNAME_INVALID.format(reason=reason))


# Issue 13: each was accepted while admin was online.
IMPERSONATIONS_OF_ADMIN = [
    ("\u0430dmin", invalid("mixes Cyrillic and Latin letters")),
    ("ａｄｍｉｎ", UsernameRequest(USERNAME_LOOKS_TAKEN.format(holder="admin"))),
    ("admin\ufe0f", invalid("contains an invisible character (U+FE0F)")),
    ("admin\u034f", invalid("contains an invisible character (U+034F)")),
    ("admin\u3164", invalid("contains an invisible character (U+3164)")),
    ("\u3164", invalid("contains an invisible character (U+3164)")),
    ("admin: hi", invalid("may not contain ':'")),
    ("[admin -> me] psst", invalid("may not start with '['")),
    ("ADMIN", UsernameRequest(USERNAME_TAKEN)),
]


@pytest.mark.parametrize(
    ("impostor", "answer"),
    IMPERSONATIONS_OF_ADMIN,
    ids=["cyrillic", "fullwidth", "fe0f", "034f", "3164", "filler", "colon", "private-format", "capitals"],
)
def test_look_alike_names_are_refused_while_admin_is_online(connect, impostor, answer):
    admin = connect("admin")
    client = connect()

    client.send(Username(impostor))

    assert client.next_event() == answer
    assert client.join("Randall Flagg") == Welcome("Randall Flagg")  # asked again, and a real name is fine
    assert admin.expect(UserJoined) == UserJoined("Randall Flagg")


@pytest.mark.parametrize("name", ["Randall Flagg", "Дмитрий", "佐藤", "محمد", "हिन्दी", "Ann 🦊"])
def test_names_in_one_script_and_with_spaces_are_welcomed(connect, name):
    connect("admin")
    assert connect().join(name) == Welcome(name)


def test_name_is_trimmed_and_nfc_normalized(connect):
    first = connect()
    assert first.join("  Jose\u0301  ") == Welcome("Jos\u00e9")
    second = connect()
    second.send(Username("JOS\u00c9"))
    assert second.next_event() == UsernameRequest(USERNAME_TAKEN)


def test_concurrent_claims_of_one_name_let_exactly_one_in(connect):
    clients = [connect() for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    answers: dict[int, object] = {}

    def claim(i, client):
        def run():
            barrier.wait(DEADLINE)
            client.send(Username("Highlander"))
            answers[i] = client.next_event()

        return run

    run_threads([claim(i, c) for i, c in enumerate(clients)])

    assert len(answers) == 8
    welcomes = [a for a in answers.values() if isinstance(a, Welcome)]
    assert welcomes == [Welcome("Highlander")]
    refusals = [a for a in answers.values() if not isinstance(a, Welcome)]
    assert refusals == [UsernameRequest(USERNAME_TAKEN)] * 7


# --- joining and leaving -----------------------------------------------------


def test_others_are_told_of_joins_and_goodbyes(connect):
    alice = connect("Alice")
    bob = connect("Bob")
    assert alice.next_event() == UserJoined("Bob")
    alice.say("hi Bob")
    assert bob.next_event() == ChatMessage("Alice", "hi Bob")  # no notice of its own join

    bob.send(Goodbye(""))
    assert alice.next_event() == UserLeft("Bob")
    bob.wait_closed()

    carol = connect("Carol")
    assert alice.next_event() == UserJoined("Carol")
    carol.say("Bob is gone")
    assert alice.next_event() == ChatMessage("Carol", "Bob is gone")


def _close_plainly(sock: socket.socket) -> None:
    sock.close()


def _close_with_reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("close", [_close_plainly, _close_with_reset], ids=["fin", "rst"])
def test_abrupt_disconnect_frees_the_name_and_tells_the_others(connect, close):
    alice = connect("Alice")
    bob = connect("Bob")
    assert alice.next_event() == UserJoined("Bob")

    close(bob.sock)  # no Goodbye

    assert alice.next_event() == UserLeft("Bob")
    assert connect().join("Bob") == Welcome("Bob")
    assert alice.next_event() == UserJoined("Bob")


# --- what the server refuses -------------------------------------------------


def test_chat_line_before_a_username_gets_an_error_and_the_connection_stays_usable(connect):
    alice = connect("Alice")
    early = connect()

    early.say("too soon")
    assert isinstance(early.next_event(), ErrorNotice)
    early.join("Early")
    assert alice.next_event() == UserJoined("Early")  # "too soon" was never relayed
    early.say("now")
    assert alice.next_event() == ChatMessage("Early", "now")


def test_malformed_message_gets_an_error_and_the_connection_stays_up(alice_and_bob):
    alice, bob = alice_and_bob

    # No typed message has an unknown type: seal the bytes as they are.
    bob.conn.send_raw_record(bytes([0x7F]))
    bob.flush()

    notice = bob.expect(ErrorNotice)
    assert "127" in notice.text
    bob.say("still here")
    assert alice.next_event() == ChatMessage("Bob", "still here")


def test_malformed_message_before_a_username_gets_an_error(connect):
    client = connect()
    client.conn.send_raw_record(bytes([0x7F]))  # see the test above
    client.flush()
    client.expect(ErrorNotice)
    assert client.join("Alice") == Welcome("Alice")


def test_username_after_joining_gets_an_error_and_the_name_stays(alice_and_bob):
    alice, bob = alice_and_bob

    bob.send(Username("Robert"))
    bob.expect(ErrorNotice)
    bob.say("same name")
    assert alice.next_event() == ChatMessage("Bob", "same name")


@pytest.mark.parametrize("text", ["", "   ", "\t \n"])
def test_blank_chat_line_gets_an_error_and_is_not_broadcast(alice_and_bob, text):
    alice, bob = alice_and_bob

    bob.say(text)
    bob.expect(ErrorNotice)
    bob.say("real")
    assert alice.next_event() == ChatMessage("Bob", "real")


def test_longest_chat_line_does_not_disconnect_the_receivers(alice_and_bob):
    alice, bob = alice_and_bob
    # The longest text one ChatLine record can carry (type byte, u16 length, tag).
    longest = "x" * (protocol.MAX_FRAME_SIZE - crypto_utils.TAG_SIZE - 3)

    bob.say(longest)
    bob.say("after")

    # Alice may get the long line or not (the sender may be told it is too
    # long), but she stays connected and gets the next message.
    event = alice.next_event()
    if event == ChatMessage("Bob", longest):
        event = alice.next_event()
    assert event == ChatMessage("Bob", "after")


def test_message_over_the_size_limit_is_refused_with_the_limit_named(alice_and_bob):
    alice, bob = alice_and_bob
    at_limit = "é" * (limits.Limits().max_message_bytes // 2)  # two bytes of UTF-8 each
    over_limit = at_limit + "x"

    bob.say(at_limit)
    bob.say(over_limit)

    assert alice.next_event() == ChatMessage("Bob", at_limit)
    refusal = bob.expect(ErrorNotice)
    assert str(limits.Limits().max_message_bytes) in refusal.text
    bob.say("after")
    assert alice.next_event() == ChatMessage("Bob", "after")


# --- shutdown ----------------------------------------------------------------


def test_shutdown_says_goodbye_to_everyone_and_leaves_no_threads(own_server):
    chat = own_server.start()
    clients = [own_server.client(f"User{i}") for i in range(3)]
    clients[0].expect(UserJoined)
    clients[0].expect(UserJoined)
    clients[1].expect(UserJoined)
    peers = {peer_name(c) for c in clients}

    own_server.stop()

    for client in clients:
        # A UserLeft for a client whose goodbye went out first is harmless.
        assert next_event_skipping(client, UserLeft) == Goodbye(server.SHUTTING_DOWN)
        assert client.wait_closed().clean
    leftovers = [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(("reader ", "writer ")) and t.name.split(" ", 1)[1] in peers
    ]
    assert leftovers == []
    assert chat.connection_count() == 0


def test_shutdown_closes_a_client_in_the_middle_of_the_handshake(own_server, monkeypatch):
    # Long enough that the fallback abort after the grace period cannot be
    # what closes it within the test's timeouts.
    monkeypatch.setattr(server, "SHUTDOWN_GRACE", 30.0)
    chat = own_server.start()
    joined = own_server.client("Alice")
    silent = own_server.client(handshake=False)
    silent.next_event()  # the ServerHello: the server has accepted it; no key exchange follows

    stopper = threading.Thread(target=own_server.stop, daemon=True)
    stopper.start()

    assert silent.wait_closed().clean is False
    assert next_event_skipping(joined, UserLeft) == Goodbye(server.SHUTTING_DOWN)
    stopper.join(DEADLINE)
    assert not stopper.is_alive()
    assert chat.connection_count() == 0


def test_no_new_connections_after_shutdown(own_server):
    chat = own_server.start()
    address = chat.server_address
    own_server.stop()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=DEADLINE).close()


# --- deadlines ---------------------------------------------------------------


def test_client_that_never_speaks_is_closed_after_the_handshake_deadline(own_server):
    chat = own_server.start(handshake_timeout=0.2)
    sock = socket.create_connection(chat.server_address, timeout=DEADLINE)
    try:
        deadline = time.monotonic() + DEADLINE
        while sock.recv(65536):  # the hello, then EOF
            assert time.monotonic() < deadline, "the server did not close the connection"
    finally:
        sock.close()
    assert wait_until(lambda: chat.connection_count() == 0)


def test_client_that_never_chooses_a_name_is_told_and_closed(own_server):
    chat = own_server.start(username_timeout=0.2)
    client = own_server.client()  # handshake done, UsernameRequest read

    assert client.expect(Goodbye) == Goodbye("Timed out waiting for a username.")
    assert client.wait_closed().clean
    assert wait_until(lambda: chat.connection_count() == 0)


def test_joined_client_may_stay_idle_past_the_deadlines(own_server):
    own_server.start(handshake_timeout=0.3, username_timeout=0.3, frame_timeout=0.3)
    alice = own_server.client("Alice")
    bob = own_server.client("Bob")
    alice.expect(UserJoined)
    laggard = own_server.client()  # its deadlines began after Alice's

    assert laggard.expect(Goodbye) == Goodbye("Timed out waiting for a username.")

    bob.say("still there?")  # Alice, idle since before it, is still in
    assert alice.next_event() == ChatMessage("Bob", "still there?")


# --- a slow reader -----------------------------------------------------------


def test_slow_reader_is_cut_off_without_stalling_the_others(own_server):
    longest = limits.Limits().max_message_bytes
    # A send queue of 8 long lines; no flood control: this sender is a test.
    chat = own_server.start(sendq_bytes=8 * (longest + 100), rate=0)
    own_server.client("Stalled")  # joins, then never reads again
    sender = own_server.client("Sender")
    reader = own_server.client("Reader")
    sender.expect(UserJoined)
    for client in (sender, reader):  # lock-step below: no Nagle delays
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # The sender stays at most `window` lines ahead of the reader, fewer than
    # an outbox holds, so the reader is never the slow one. It sends until
    # the reader has seen Stalled cut off: once the socket buffers between
    # them are full (about 4 MB on Linux loopback), then its outbox.
    line, most = "y" * (longest - 5), 5000
    window = threading.Semaphore(7)
    stop = threading.Event()
    sent: list[int] = []

    def send_all():
        for n in range(most):
            assert window.acquire(timeout=DEADLINE), "the reader stopped receiving"
            if stop.is_set():
                break
            sender.say(f"{n:05d}{line}")
            sent.append(n)

    thread = threading.Thread(target=send_all, daemon=True)
    thread.start()
    texts, notices = [], []
    try:
        while not notices and len(texts) < most:
            event = reader.next_event()
            if isinstance(event, ChatMessage):
                texts.append(event.text)
                window.release()
            else:
                notices.append(event)
    finally:
        stop.set()
        window.release()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    while len(texts) < len(sent):
        texts.append(reader.expect(ChatMessage).text)

    assert notices == [UserLeft("Stalled")]
    assert 0 < len(sent) < most
    assert texts == [f"{n:05d}{line}" for n in range(len(sent))]
    assert sender.next_event() == UserLeft("Stalled")
    assert wait_until(lambda: chat.connection_count() == 2)
    sender.say("after")
    assert reader.next_event() == ChatMessage("Sender", "after")


def test_a_busy_port_is_one_clear_line(tmp_path, capsys, xdg_data_home):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        key = procs.private_key_copy(tmp_path)
        status = main(["--key", str(key), "--host", "127.0.0.1", "--port", str(port)])
    assert status == 1
    assert capsys.readouterr().err == (
        f"Port {port} is already in use on 127.0.0.1: is another server running? Choose another with --port.\n"
    )


def test_other_listen_failures_are_one_line_without_pythons_address_tuple():
    python_says = OSError(
        errno.EADDRNOTAVAIL,
        "Cannot assign requested address (while attempting to bind on address ('192.0.2.1', 8756))",
    )
    assert cannot_listen("192.0.2.1", 8756, python_says) == (
        "Cannot listen at 192.0.2.1:8756: Cannot assign requested address"
    )
    assert cannot_listen("::1", 80, PermissionError(errno.EACCES, "Permission denied")) == (
        "Cannot listen at [::1]:80: Permission denied"
    )


# --- the accepted socket's options (issue 22: tuned once, on the listener) ---

SERVER_SIDE_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *[
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
        if hasattr(socket, name)
    ],
]


@pytest.mark.parametrize("inherited", [True, False], ids=["inherited from the listener", "tuned per socket"])
def test_every_accepted_socket_has_nodelay_and_keepalive(connect, running_server, monkeypatch, inherited):
    """Whether the system passes the listener's options on (Linux does) or
    not (simulated: each accepted socket then gets them itself), every
    client's socket on the server's side has them, the first and later ones."""
    if not inherited:
        real_accept = socket.socket._accept

        def accept_untuned(listener):
            fd, address = real_accept(listener)
            with socket.socket(fileno=socket.dup(fd)) as same:  # the same socket: undo what it inherited
                for level, option, value in SERVER_SIDE_OPTIONS:
                    same.setsockopt(level, option, 0 if value == 1 else 1)
            return fd, address

        monkeypatch.setattr(socket.socket, "_accept", accept_untuned)
    for name in ("Alice", "Bob"):
        connect(name)
    handlers = running_server._handlers_now()
    assert len(handlers) == 2
    assert running_server._tune_each is (not inherited)
    for handler in handlers:
        assert [handler.sock.getsockopt(level, option) for level, option, _ in SERVER_SIDE_OPTIONS] == [
            value for _, _, value in SERVER_SIDE_OPTIONS
        ]
