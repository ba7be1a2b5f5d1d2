"""The sender (server/sender.py): one thread that seals and writes for every client.

Over real loopback sockets, with connections whose handshake is done in
process; the last test runs a real server with a thousand clients."""

from __future__ import annotations

import resource
import select
import selectors
import socket
import threading
import time

import pytest

from socket_chat import protocol
from socket_chat.chat.limits import Outbox
from socket_chat.protocol import ChatMessage, ConnectionClosed, encode
from socket_chat.server import sender as sender_module
from socket_chat.server.sender import Outlet, Sender
from tests.wire import ConnectionPair, split_frames

TIMEOUT = 10.0
SMALL_BUFFER = 4096  # bytes asked for: the kernel doubles it; a few KiB in flight in all


def tcp_pair(small: bool) -> tuple[socket.socket, socket.socket]:
    """(the server's end, the client's end) of a loopback connection; with
    ``small``, buffers that hold far less than one full-sized record."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if small:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)  # inherited by accept()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        client.connect(listener.getsockname())
        ours, _ = listener.accept()
    client.settimeout(TIMEOUT)
    return ours, client


class Link:
    """One client of the sender: the server's outlet and a client reading."""

    def __init__(
        self, identity_key, sender: Sender, limit: int = 256 * 1024, small: bool = False, add: bool = True
    ) -> None:
        self.pair = ConnectionPair(identity_key)
        self.pair.handshake()
        self.server_sock, self.sock = tcp_pair(small)
        self.outbox = Outbox(limit, on_ready=self._wake)
        self.outlet = Outlet(self.server_sock, self.pair.server, self.outbox, used_up=protocol.Goodbye("used up"))
        self.sender = sender
        self.received = b""
        self.added = False
        if add:
            self.add()

    def add(self) -> None:
        """Hand the outlet to the sender, as the server does after the handshake."""
        self.added = True
        self.sender.add(self.outlet)

    def _wake(self) -> None:
        if self.added:
            self.sender.wake(self.outlet)

    def cut(self) -> None:
        """What the server's abort does: cut, shut the socket, wake the sender."""
        self.outbox.close()
        self.outlet.cut()
        self.server_sock.shutdown(socket.SHUT_RDWR)
        self.sender.wake(self.outlet)

    def receive(self, count: int) -> list:
        """The next ``count`` events, reading as needed."""
        events: list = []
        while len(events) < count:
            event = self.pair.client.next_event()
            if event is protocol.NEED_DATA:
                data = self.sock.recv(65536)
                self.received += data
                self.pair.client.receive_data(data)
            else:
                events.append(event)
        return events

    def close(self) -> None:
        assert self.outlet.finished.wait(TIMEOUT), "the sender did not let go"
        self.server_sock.close()
        self.sock.close()


@pytest.fixture
def sender():
    sender = Sender()
    sender.start()
    yield sender
    sender.stop()


def chat(n: int, size: int = 20) -> protocol.Encoded:
    return encode(ChatMessage("alice", f"{n:05d} " + "x" * size))


def test_what_is_queued_goes_out_as_one_record(identity_key, sender):
    link = Link(identity_key, sender, add=False)
    burst = [chat(n) for n in range(50)]
    for item in burst:  # all queued before the sender first looks
        link.outbox.put(item)
    link.outbox.close()  # nothing more: the sender sends what is queued, then lets go

    link.add()
    events = link.receive(len(burst))

    assert events == [item.message for item in burst]
    assert len(split_frames(link.received)) == 1  # one Batch record
    link.close()


def test_a_client_that_never_reads_slows_no_one_and_is_cut_off_when_its_queue_overflows(identity_key, sender):
    stalled = Link(identity_key, sender, limit=64 * 1024, small=True)  # never reads
    live = Link(identity_key, sender)
    cut_at = None
    for n in range(300):  # 600 KB for each: far past the stalled one's buffers and queue
        item = chat(n, size=2000)
        if cut_at is None and not stalled.outbox.put(item):
            cut_at = n
            stalled.cut()
        live.outbox.put(item)
        # Lock-step: the live client has each message before the next is
        # queued, so a sender stuck on the stalled socket would fail here.
        assert live.receive(1) == [item.message]

    assert cut_at is not None and cut_at < 300
    assert stalled.outlet.finished.wait(TIMEOUT)
    stalled.close()
    live.outbox.close()
    live.close()


def test_a_client_cut_off_in_the_middle_of_a_record_sees_a_lost_connection(identity_key, sender):
    stalled = Link(identity_key, sender, small=True)
    other = Link(identity_key, sender)
    big = encode(ChatMessage("alice", "y" * 60_000))  # one record, several times what the buffers hold
    stalled.outbox.put(big)
    assert select.select([stalled.sock], [], [], TIMEOUT)[0], "nothing was sent"

    stalled.cut()  # while the rest of the record waits for room

    assert stalled.outlet.finished.wait(TIMEOUT)
    data = b""
    while chunk := stalled.sock.recv(65536):
        data += chunk
    assert 0 < len(data) < len(big.payload)  # a record begun, not finished
    stalled.pair.client.receive_data(data)
    stalled.pair.client.receive_data(b"")
    assert stalled.pair.client.next_event() == ConnectionClosed(clean=False)  # lost, not an attack
    # The sender goes on with the others.
    other.outbox.put(chat(1))
    assert other.receive(1) == [chat(1).message]
    stalled.close()
    other.outbox.close()
    other.close()


def test_stop_lets_go_of_every_client(identity_key):
    sender = Sender()
    sender.start()
    stalled = Link(identity_key, sender, small=True)
    stalled.outbox.put(encode(ChatMessage("alice", "y" * 60_000)))  # waits for room forever
    assert select.select([stalled.sock], [], [], TIMEOUT)[0]

    sender.stop()

    assert stalled.outlet.finished.is_set()
    stalled.close()


@pytest.mark.parametrize("lock_free", [True, False], ids=["under-the-gil", "free-threaded"])
def test_wakes_from_many_threads_lose_none_while_the_sender_sleeps_and_wakes(
    identity_key, sender, monkeypatch, lock_free
):
    # A wake takes no lock unless the sender sleeps (or, on a free-threaded
    # Python, always takes it): four readers queue one message at a time,
    # each the next only once the last was read, so the sender falls asleep
    # between almost every two; a wake-up lost in that race would leave a
    # message unsent and fail the read's timeout.
    monkeypatch.setattr(sender_module, "LOCK_FREE_WAKE", lock_free)
    links = [Link(identity_key, sender) for _ in range(4)]
    failures: list[str] = []

    def queue_and_read(link: Link) -> None:
        try:
            for n in range(150):
                link.outbox.put(chat(n))
                assert link.receive(1) == [chat(n).message]
        except (AssertionError, OSError) as exc:  # socket.timeout is an OSError
            failures.append(repr(exc))

    threads = [threading.Thread(target=queue_and_read, args=(link,)) for link in links]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads) and failures == []
    for link in links:
        link.outbox.close()
        link.close()


def test_a_wake_byte_that_comes_late_is_read_and_the_sender_sleeps_again():
    # A waker sets _woken, the sender wakes for another reason and clears
    # it, then the waker's byte arrives: forced here as a byte with _woken
    # False. One turn of the loop (it stops after its first select) must
    # read it, or every select would return at once from then on.
    sender = Sender()
    select_once = sender._selector.select

    def select_then_stop(timeout=None):
        sender._stopping = True
        return select_once(timeout)

    sender._wake_writer.send(b"\0")
    sender._selector.select = select_then_stop
    sender._run()
    assert select.select([sender._wake_reader], [], [], 0)[0] == []  # drained: the next select sleeps
    sender.stop()


def test_wakes_while_the_sender_stops_are_safe_and_the_outlet_is_let_go(identity_key):
    # stop() while another thread keeps waking: no error in either, and a
    # wake once stopped releases the outlet itself (no one will send).
    sender = Sender()
    sender.start()
    link = Link(identity_key, sender, add=False)
    waking, stopped, errors = threading.Event(), threading.Event(), []

    def wake_until_stopped() -> None:
        try:
            while not stopped.is_set():
                sender.wake(link.outlet)
                waking.set()
            sender.wake(link.outlet)  # one more, after stop() returned
        except Exception as exc:  # anything at all is the failure
            errors.append(repr(exc))

    waker = threading.Thread(target=wake_until_stopped)
    waker.start()
    assert waking.wait(TIMEOUT)
    sender.stop()
    stopped.set()
    waker.join(TIMEOUT)
    assert not waker.is_alive() and errors == []
    assert link.outlet.finished.is_set()
    link.server_sock.close()
    link.sock.close()


# --- a thousand clients -----------------------------------------------------------

THOUSAND, MESSAGES = 1000, 20


def enough_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"{needed} file descriptors needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def read_all(links: list[Link], count: int, deadline: float) -> None:
    """Read every link's socket until each has ``count`` events (in ``link.events``)."""
    with selectors.DefaultSelector() as selector:
        for link in links:
            link.events = []
            link.sock.setblocking(False)
            selector.register(link.sock, selectors.EVENT_READ, link)
        waiting = len(links)
        while waiting:
            assert time.monotonic() < deadline, f"{waiting} clients still waiting"
            for key, _ in selector.select(1.0):
                link = key.data
                link.pair.client.receive_data(link.sock.recv(65536))
                while (event := link.pair.client.next_event()) is not protocol.NEED_DATA:
                    link.events.append(event)
                if len(link.events) >= count:
                    selector.unregister(link.sock)
                    waiting -= 1


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_thousand_clients_each_get_every_message_once_in_order(identity_key, sender):
    enough_descriptors(2 * THOUSAND + 100)
    deadline = time.monotonic() + 150
    links = []
    try:
        for _ in range(THOUSAND):
            links.append(Link(identity_key, sender))
            assert time.monotonic() < deadline, "handshakes too slow"
        messages = [chat(n) for n in range(MESSAGES)]
        for item in messages:  # the room's part: each message into every outbox, in one order
            for link in links:
                assert link.outbox.put(item)
        for link in links:
            link.outbox.close()  # so that a duplicate would have to come before the end

        read_all(links, MESSAGES, deadline)

        for link in links:
            assert link.events == [item.message for item in messages]
            assert link.outlet.finished.wait(TIMEOUT)  # all sent: the sender let go
            link.sock.settimeout(TIMEOUT)
            assert link.sock.recv(65536) == b""  # and nothing after them
    finally:
        for link in links:
            link.outlet.cut()
            sender.wake(link.outlet)
            link.outlet.finished.wait(TIMEOUT)
            link.server_sock.close()
            link.sock.close()
