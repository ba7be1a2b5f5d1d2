"""Load: many clients at once, nothing lost, one order. Marked slow."""

from __future__ import annotations

import threading

import pytest

from protocol import ChatMessage, UserJoined

CLIENTS = 20
SENDERS = 5
MESSAGES_EACH = 100


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_many_clients_receive_every_message_once_in_one_order(connect):
    clients = [connect(f"user{i}") for i in range(CLIENTS)]
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
