"""Load: many clients at once, nothing lost, one order. Marked slow."""

from __future__ import annotations

import selectors
import threading
import time

import pytest

from socket_chat import protocol
from socket_chat.protocol import ChatLine, ChatMessage, UserJoined
from tests import procs
from tests.helpers import ChatTestClient

CLIENTS = 20
SENDERS = 5
MESSAGES_EACH = 100


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_many_clients_receive_every_message_once_in_one_order(own_server):
    own_server.start(rate=0)  # these senders are tests, not people: no flood control
    clients = [own_server.client(f"user{i}") for i in range(CLIENTS)]
    for index, client in enumerate(clients):
        # Each client hears about everyone who joined after it.
        for _ in range(CLIENTS - 1 - index):
            client.expect(UserJoined)
    senders = clients[:SENDERS]
    start = threading.Barrier(SENDERS)

    def send_all(client, name):
        start.wait(timeout=10)
        for n in range(MESSAGES_EACH):
            client.say(f"{name} {n}")

    threads = [threading.Thread(target=send_all, args=(c, f"user{i}")) for i, c in enumerate(senders)]
    for thread in threads:
        thread.start()
    received = {}
    for index, client in enumerate(clients):
        expected = MESSAGES_EACH * (SENDERS - 1 if index < SENDERS else SENDERS)
        received[index] = [client.expect(ChatMessage, timeout=30) for _ in range(expected)]
    for thread in threads:
        thread.join(10)

    everything = received[SENDERS]  # a client that only listens sees all of it
    assert len(everything) == len(set(everything)) == SENDERS * MESSAGES_EACH
    for index, messages in received.items():
        own = f"user{index}"
        assert own not in {m.sender for m in messages}
        # One order: each client's view is the full order minus its own lines.
        assert messages == [m for m in everything if m.sender != own]
    for sender in range(SENDERS):
        texts = [m.text for m in everything if m.sender == f"user{sender}"]
        assert texts == [f"user{sender} {n}" for n in range(MESSAGES_EACH)]


# --- everyone sends at once --------------------------------------------------


class Swarm:
    """Many joined clients driven by one thread with a selector: each sends
    its lines as fast as the socket takes them and reads all the while, so
    that no client falls behind for want of a thread."""

    def __init__(self, clients: list[ChatTestClient], lines: dict[int, list[str]]) -> None:
        self.clients = clients
        self.received: list[list[ChatMessage]] = [[] for _ in clients]
        self._pending = {}
        for index, client in enumerate(clients):
            for text in lines[index]:
                client.conn.send(ChatLine(text))
            self._pending[index] = memoryview(client.conn.data_to_send())
            client.sock.setblocking(False)

    def run(self, expected_each: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for index, client in enumerate(self.clients):
                selector.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
            while any(len(got) < want for got, want in zip(self.received, expected_each)):
                assert time.monotonic() < deadline, "the messages did not all arrive in time"
                for key, mask in selector.select(timeout=1.0):
                    if mask & selectors.EVENT_WRITE:
                        self._write(selector, key.data)
                    if mask & selectors.EVENT_READ:
                        self._read(key.data)

    def _write(self, selector, index: int) -> None:
        sent = self.clients[index].sock.send(self._pending[index])
        self._pending[index] = self._pending[index][sent:]
        if not self._pending[index]:
            selector.modify(self.clients[index].sock, selectors.EVENT_READ, index)

    def _read(self, index: int) -> None:
        client = self.clients[index]
        data = client.sock.recv(1 << 20)
        assert data, f"the server closed client {index}"
        client.conn.receive_data(data)
        while (event := client.conn.next_event()) is not protocol.NEED_DATA:
            if isinstance(event, ChatMessage):
                self.received[index].append(event)


FLOCK, LINES_EACH = 50, 200


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fifty_clients_sending_at_once_lose_nothing_and_see_one_order(tmp_path):
    # The server runs as its own process, so that it and this swarm of clients
    # each have a core. No flood control (the senders are tests), and send
    # queues large enough for a swarm that reads in one thread; the swarm
    # comes from one address, so no per-address limits either.
    server = procs.start_server(
        tmp_path, "--rate", "0", "--sendq", str(64 * 1024 * 1024), "--max-per-address", "0", "--handshake-rate", "0"
    )
    clients: list[ChatTestClient] = []
    try:
        for index in range(FLOCK):
            client = ChatTestClient(("127.0.0.1", server.port))
            clients.append(client)
            client.handshake()
            client.join(f"user{index}")
        lines = {i: [f"user{i} {n}" for n in range(LINES_EACH)] for i in range(FLOCK)}
        swarm = Swarm(clients, lines)
        swarm.run([LINES_EACH * (FLOCK - 1)] * FLOCK, timeout=200)
    finally:
        for client in clients:
            client.close()
        server.kill()

    for index, received in enumerate(swarm.received):
        # Exactly once: every other client's every line, none of its own.
        expected = {text for i, texts in lines.items() if i != index for text in texts}
        assert len(received) == len(expected) and {m.text for m in received} == expected
        # Each sender's lines in sending order.
        for sender in range(FLOCK):
            if sender != index:
                assert [m.text for m in received if m.sender == f"user{sender}"] == lines[sender]
    # One order: any two clients see the lines they both receive in the same order.
    reference = [m.text for m in swarm.received[0]]
    for index in range(1, FLOCK):
        both = {m.text for m in swarm.received[index]} & set(reference)
        assert [t for t in reference if t in both] == [m.text for m in swarm.received[index] if m.text in both]
