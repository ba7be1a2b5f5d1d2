"""Hostile and broken clients against a live server on loopback: whatever
one connection does, the others keep working, and the server frees what the
connection held (its name, its threads, its descriptors).

Every wait is bounded: socket reads time out, polls have a deadline.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import threading
import time

import pytest

from socket_chat import protocol
from socket_chat.protocol import (
    ChatMessage,
    ConnectionClosed,
    EchoOwnLines,
    ErrorNotice,
    Goodbye,
    ServerRefused,
    UserJoined,
    UserLeft,
)
from tests.helpers import DEADLINE, ChatTestClient, wait_until


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a killed process's connection may end."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raw_socket(chat) -> socket.socket:
    sock = socket.create_connection(chat.server_address, timeout=DEADLINE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """Everything the server sends until it closes; AssertionError if it
    does not close within ``timeout``."""
    deadline, data = time.monotonic() + timeout, b""
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError("the server did not close the connection") from None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def assert_served_normally(own_server, name: str = "Fresh") -> None:
    """A new pair of clients joins and talks: the server is unharmed."""
    first = own_server.client(f"{name}1")
    second = own_server.client(f"{name}2")
    first.expect(UserJoined)
    second.say("still serving?")
    assert first.next_event() == ChatMessage(f"{name}2", "still serving?")


# --- --max-clients -----------------------------------------------------------


def test_one_client_over_the_maximum_is_told_the_server_is_full(own_server, caplog):
    chat = own_server.start(max_clients=2)
    alice = own_server.client("Alice")
    own_server.client("Bob")

    third = ChatTestClient(chat.server_address)
    refusal = third.next_event()
    assert refusal == ServerRefused("The server is full (2 people). Try again later.")
    assert isinstance(third.next_event(), ConnectionClosed)
    assert "refused: The server is full" in caplog.text

    alice.send(Goodbye(""))
    assert wait_until(lambda: chat.connection_count() == 1)
    own_server.client("Carol")  # a place is free again


def test_a_full_server_spends_no_thread_on_the_ones_it_refuses(own_server):
    chat = own_server.start(max_clients=1)
    own_server.client("Alice")
    threads = threading.active_count()

    for _ in range(20):
        refused = ChatTestClient(chat.server_address)
        assert isinstance(refused.next_event(), ServerRefused)
        refused.close()

    assert threading.active_count() == threads
    assert chat.connection_count() == 1


# --- flood control -----------------------------------------------------------


def test_a_flood_is_refused_with_the_wait_named_while_others_still_talk(own_server):
    # One message per 100 s after the burst: no token comes back during the test.
    own_server.start(rate=0.01, burst=5)
    watcher = own_server.client("Watcher")
    flooder = own_server.client("Flooder")
    calm = own_server.client("Calm")
    watcher.expect(UserJoined)
    watcher.expect(UserJoined)
    flooder.expect(UserJoined)

    for n in range(15):
        flooder.say(f"flood {n}")
    refusals = [flooder.expect(ErrorNotice) for _ in range(10)]
    calm.say("hello, everyone")

    received = [watcher.expect(ChatMessage) for _ in range(6)]
    assert received == [ChatMessage("Flooder", f"flood {n}") for n in range(5)] + [
        ChatMessage("Calm", "hello, everyone")
    ]
    for n, refusal in enumerate(refusals, start=5):
        assert refusal.text.startswith(f'Slow down: "flood {n}" was not sent.')
        wait = float(re.search(r"wait (\d+\.\d) s\.$", refusal.text).group(1))
        assert 90 <= wait <= 100
    assert flooder.next_event() == ChatMessage("Calm", "hello, everyone")  # still connected


def test_a_paste_within_the_burst_goes_through_whole(own_server):
    own_server.start(rate=0.01, burst=20)
    watcher = own_server.client("Watcher")
    paster = own_server.client("Paster")
    watcher.expect(UserJoined)

    for n in range(20):
        paster.say(f"line {n}")

    assert [watcher.expect(ChatMessage).text for _ in range(20)] == [f"line {n}" for n in range(20)]
    paster.send(EchoOwnLines())  # answered at once, and free: after any refusal of the lines
    assert paster.events_until(EchoOwnLines()) == []  # no refusal came back


# --- deadlines against slowloris ---------------------------------------------


def test_a_dribbled_handshake_is_cut_off_by_the_frame_deadline(own_server):
    chat = own_server.start(handshake_timeout=60, frame_timeout=0.5)
    sock = raw_socket(chat)
    try:
        sock.recv(65536)  # the hello
        # One byte of a frame header every 0.1 s: a slowloris. Each recv below
        # waits for the server to give up, and sends the next byte if it has not.
        frame = struct.pack("!I", 1000) + b"x" * 1000
        closed_after = None
        for count in range(1, len(frame)):
            sock.sendall(frame[count - 1 : count])
            sock.settimeout(0.1)
            try:
                if sock.recv(65536) == b"":
                    closed_after = count
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed_after = count
                break
        assert closed_after is not None and closed_after < 60, "the dribbling client was not cut off"
    finally:
        sock.close()
    assert wait_until(lambda: chat.connection_count() == 0)


def test_a_frame_begun_and_never_finished_in_the_chat_is_cut_off(own_server, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    chat = own_server.start(frame_timeout=0.5)
    staller = own_server.client("Staller")
    watcher = own_server.client("Watcher")
    staller.expect(UserJoined)

    staller.sock.sendall(struct.pack("!I", 500) + b"half a record")

    assert staller.expect(Goodbye) == Goodbye("Timed out in the middle of a message.")
    assert watcher.expect(UserLeft) == UserLeft("Staller")
    assert wait_until(lambda: chat.connection_count() == 1)
    assert "timed out in the middle of a message" in caplog.text
    own_server.client("Staller")  # the name is free again


# --- faults at every step ----------------------------------------------------


def close_before_reading_the_hello(client: ChatTestClient) -> None:
    reset(client.sock)


def close_after_the_hello(client: ChatTestClient) -> None:
    client.next_event()
    client.sock.close()


def die_in_the_middle_of_the_key_exchange(client: ChatTestClient) -> None:
    client.next_event()
    client.conn.accept_server_key()
    data = client.conn.data_to_send()
    client.sock.sendall(data[: len(data) // 2])
    reset(client.sock)


def close_after_the_key_exchange(client: ChatTestClient) -> None:
    client.next_event()
    client.conn.accept_server_key()
    client.flush()
    client.sock.close()


def close_before_choosing_a_name(client: ChatTestClient) -> None:
    client.handshake()
    client.sock.close()


def die_in_the_middle_of_a_chat_record(client: ChatTestClient) -> None:
    client.handshake()
    client.join("Doomed")
    client.conn.send(protocol.ChatLine("never finished"))
    data = client.conn.data_to_send()
    client.sock.sendall(data[:-5])
    reset(client.sock)


def garbage_instead_of_the_key_exchange(client: ChatTestClient) -> None:
    client.next_event()
    client.sock.sendall(struct.pack("!I", 40) + os.urandom(40))


def an_oversized_frame_header(client: ChatTestClient) -> None:
    client.next_event()
    client.sock.sendall(struct.pack("!I", protocol.MAX_FRAME_SIZE + 1))


def garbage_instead_of_the_clients_hi(client: ChatTestClient) -> None:
    client.next_event()
    client.conn.accept_server_key()
    client.flush()
    client.sock.sendall(struct.pack("!I", 18) + os.urandom(18))


def a_forged_record_after_joining(client: ChatTestClient) -> None:
    client.handshake()
    client.join("Forger")
    client.sock.sendall(struct.pack("!I", 40) + os.urandom(40))


#: The faults after which the server hangs up at once, and the names of the
#: ones that had joined (the others see them leave).
HANGS_UP = {
    garbage_instead_of_the_key_exchange,
    an_oversized_frame_header,
    garbage_instead_of_the_clients_hi,
    a_forged_record_after_joining,
}
JOINED_AS = {die_in_the_middle_of_a_chat_record: "Doomed", a_forged_record_after_joining: "Forger"}
FAULTS = [
    close_before_reading_the_hello,
    close_after_the_hello,
    die_in_the_middle_of_the_key_exchange,
    close_after_the_key_exchange,
    close_before_choosing_a_name,
    die_in_the_middle_of_a_chat_record,
    garbage_instead_of_the_key_exchange,
    an_oversized_frame_header,
    garbage_instead_of_the_clients_hi,
    a_forged_record_after_joining,
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_fault_at_any_step_frees_everything_and_the_server_goes_on(own_server, fault, thread_errors):
    chat = own_server.start()
    watcher = own_server.client("Watcher")
    threads, fds = threading.active_count(), open_fds()

    faulty = ChatTestClient(chat.server_address)
    fault(faulty)
    if fault in HANGS_UP:
        read_until_closed(faulty.sock)
    faulty.close()

    assert wait_until(lambda: chat.connection_count() == 1)
    assert wait_until(lambda: threading.active_count() <= threads and open_fds() <= fds)
    if fault in JOINED_AS:
        assert watcher.expect(UserJoined) == UserJoined(JOINED_AS[fault])
        assert watcher.expect(UserLeft) == UserLeft(JOINED_AS[fault])
    assert_served_normally(own_server)
    assert thread_errors == []


@pytest.mark.parametrize(
    "reason, payload",
    [
        ("over the 65536-byte limit", struct.pack("!I", protocol.MAX_FRAME_SIZE + 1)),
        ("record failed authentication", struct.pack("!I", 40) + bytes(40)),
    ],
    ids=["oversized_frame", "forged_record"],
)
def test_a_connection_closed_for_a_bad_frame_is_logged_with_its_reason(own_server, caplog, reason, payload):
    chat = own_server.start()
    client = own_server.client("Mallory")
    client.sock.sendall(payload)
    read_until_closed(client.sock)
    assert wait_until(lambda: chat.connection_count() == 0)
    assert reason in caplog.text


# --- invalid messages keep the connection ------------------------------------


@pytest.mark.parametrize(
    "payload, reason",
    [
        (bytes([0x7F]) + b"anything", "unknown message type 127"),
        (bytes([protocol.ChatLine.TYPE, 0x00, 0x02, 0xFF, 0xFE]), "not valid UTF-8"),
    ],
    ids=["unknown_type", "invalid_utf8"],
)
def test_an_unreadable_message_gets_an_error_and_the_connection_stays(own_server, payload, reason):
    own_server.start()
    alice = own_server.client("Alice")
    bob = own_server.client("Bob")
    alice.expect(UserJoined)
    bob.conn.send_raw_record(payload)  # a valid record around it
    bob.flush()

    assert reason in bob.expect(ErrorNotice).text
    bob.say("after")
    assert alice.next_event() == ChatMessage("Bob", "after")


# --- a slow consumer ---------------------------------------------------------


class Window:
    """At most ``size`` messages on their way at once: a message is on its way
    until all of its ``readers`` have it. It keeps the chatters below, which
    share this process, from outrunning their own reading: here the slow one
    must be the client that never reads, not the test."""

    def __init__(self, size: int, readers: int) -> None:
        self._slots = threading.Semaphore(size)
        self._readers = readers
        self._unread: dict[str, int] = {}
        self._lock = threading.Lock()

    def sending(self, text: str) -> None:
        assert self._slots.acquire(timeout=30), "the chatters stopped receiving"
        with self._lock:
            self._unread[text] = self._readers

    def received(self, text: str) -> None:
        with self._lock:
            self._unread[text] -= 1
            done = self._unread[text] == 0
        if done:
            self._slots.release()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_client_that_never_reads_is_cut_off_while_ten_others_chat_at_full_speed(own_server, caplog):
    chat = own_server.start(rate=0, sendq_bytes=256 * 1024)
    stalled = own_server.client("Stalled")  # joins, then never reads again
    chatters = [own_server.client(f"chatter{i}") for i in range(10)]
    for index, chatter in enumerate(chatters):
        for _ in range(len(chatters) - 1 - index):
            chatter.expect(UserJoined)
    # 12 MB for the one that never reads: past the socket buffers (a few MB
    # on loopback) and its send queue.
    line, each = "z" * 4000, 300
    window = Window(size=40, readers=len(chatters) - 1)

    def chat_flat_out(index: int) -> None:
        for n in range(each):
            text = f"{index}:{n}:{line}"
            window.sending(text)
            chatters[index].say(text)

    def receive_all(index: int) -> None:
        received, others = [], []
        while len(received) < each * 9 or not others:  # all lines, and Stalled cut off
            event = chatters[index].next_event(timeout=30)
            if isinstance(event, ChatMessage):
                received.append(event)
                window.received(event.text)
            else:
                others.append(event)
        results[index] = received, others

    results: dict[int, tuple] = {}
    threads = [threading.Thread(target=chat_flat_out, args=(i,), daemon=True) for i in range(10)]
    threads += [threading.Thread(target=receive_all, args=(i,), daemon=True) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert not any(thread.is_alive() for thread in threads)

    assert "send queue over 262144 bytes" in caplog.text
    assert len(results) == 10
    for index, (received, others) in results.items():
        assert others == [UserLeft("Stalled")]  # the rest were never cut off
        for sender in range(10):
            if sender != index:
                texts = [m.text for m in received if m.sender == f"chatter{sender}"]
                assert texts == [f"{sender}:{n}:{line}" for n in range(each)]
    assert wait_until(lambda: chat.connection_count() == 10)
    stalled.close()


# --- leaks -------------------------------------------------------------------


def connect_and_reset(chat) -> None:
    reset(raw_socket(chat))


def read_the_hello_and_close(chat) -> None:
    sock = raw_socket(chat)
    sock.recv(65536)
    sock.close()


def join_and_say_goodbye(chat) -> None:
    client = ChatTestClient(chat.server_address)
    client.handshake()
    client.join("Cycler")
    client.send(Goodbye(""))
    client.wait_closed()  # the server hangs up once it has the goodbye
    client.close()


def join_and_reset(chat) -> None:
    client = ChatTestClient(chat.server_address)
    client.handshake()
    client.join("Cycler")
    reset(client.sock)
    # The name must be free again before the next cycle claims it.
    assert wait_until(lambda: "Cycler" not in chat.room.names())


CYCLES = [connect_and_reset, read_the_hello_and_close, join_and_say_goodbye, join_and_reset]


@pytest.mark.parametrize(
    "count",
    [
        40,
        pytest.param(500, marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
    ],
)
def test_connect_disconnect_cycles_return_threads_and_descriptors(own_server, thread_errors, count):
    chat = own_server.start()
    own_server.client("Resident")  # one who stays throughout
    threads, fds = threading.active_count(), open_fds()

    for n in range(count):
        CYCLES[n % len(CYCLES)](chat)

    assert wait_until(lambda: chat.connection_count() == 1)
    assert wait_until(lambda: threading.active_count() == threads), (threading.active_count(), threads)
    assert wait_until(lambda: open_fds() == fds), (open_fds(), fds)
    assert chat.room.names() == ["Resident"]
    assert thread_errors == []
