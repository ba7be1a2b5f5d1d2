"""server.py under a reconnect storm: a handshake's cryptography runs under
the server's ``handshaking`` lock, one at a time, and never while it waits
for the network."""

from __future__ import annotations

import threading

from socket_chat.protocol import ChatMessage
from tests.helpers import run_threads


class Gate:
    """A lock that notes who holds it, and how many at most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.holders = 0
        self.most = 0
        self.entered = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        with self._count:
            self.holders += 1
            self.entered += 1
            self.most = max(self.most, self.holders)

    def __exit__(self, *exc_info) -> None:
        with self._count:
            self.holders -= 1
        self._lock.release()


def test_handshakes_take_the_gate_one_at_a_time_and_chat_never_does(own_server):
    server = own_server.start(rate=0)
    gate = Gate()
    server.handshaking = gate
    clients = []
    lock = threading.Lock()

    def connect(index: int):
        client = own_server.client(f"storm{index}")
        with lock:
            clients.append((f"storm{index}", client))

    run_threads([lambda index=index: connect(index) for index in range(8)])
    assert gate.most == 1
    during_handshakes = gate.entered
    assert during_handshakes >= 8  # each handshake's key exchange at least
    (name, sender), (_, listener) = clients[0], clients[1]
    sender.say("after the storm")
    while not isinstance(event := listener.next_event(), ChatMessage):
        pass  # the joins of those after it
    assert event == ChatMessage(name, "after the storm")
    assert gate.entered == during_handshakes  # a chat line does not take it
    # Someone who connects and sends nothing does not hold it.
    silent = own_server.client(handshake=False)
    late = own_server.client("late")
    assert late is not None and gate.holders == 0
    silent.close()
