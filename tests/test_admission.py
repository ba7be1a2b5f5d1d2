"""Denial of service before the handshake (server/admission.py, after sshd's
MaxStartups, PerSourceMaxStartups and PerSourcePenalties): the policy with
an injected clock and random source, then floods on loopback from
127.0.0.1 while a person connects from 127.0.0.2."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time

import pytest

from socket_chat.chat.limits import Limits, Startups, startups_type
from socket_chat.protocol import ChatMessage, Goodbye, HandshakeComplete, ServerHello, ServerRefused, UserJoined
from socket_chat.server.admission import (
    TABLE_SIZE,
    Admission,
    RefusalLog,
    Refused,
    Ticket,
    Why,
    source_of,
)
from socket_chat.server.handler import server_full
from tests.helpers import DEADLINE, OPEN_DOOR, ChatTestClient, wait_until
from tests.test_hostile import reset

#: The per-address limits as a server has them by default (the other tests
#: turn them off: see ``tests.helpers.OPEN_DOOR``).
DEFAULT_DOOR = {name: getattr(Limits(), name) for name in OPEN_DOOR}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock=None, chance=lambda: 0.99, **options) -> Admission:
    options.setdefault("max_established", 100)
    return Admission(clock=clock or Clock(), chance=chance, **options)


def admitted(decision) -> Ticket:
    assert isinstance(decision, Ticket), decision
    return decision


# --- the policy --------------------------------------------------------------


def test_an_address_may_hold_max_per_source_connections_and_others_are_not_affected():
    door = policy(max_per_source=3, rate=0)
    tickets = [admitted(door.admit("192.0.2.1")) for _ in range(3)]
    assert door.admit("192.0.2.1") == Refused(Why.SOURCE_CONNECTIONS, "192.0.2.1")
    admitted(door.admit("192.0.2.2"))
    door.release(tickets[0])
    door.release(tickets[0])  # twice is once
    admitted(door.admit("192.0.2.1"))
    assert door.open_from("192.0.2.1") == 3


def test_ipv6_addresses_count_per_64_and_ipv4_mapped_ones_as_ipv4():
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("fe80::1%eth0") == "fe80::/64"
    # IPv4 (the fast path: no parsing) and what is not an address are themselves.
    assert source_of("192.0.2.7") == "192.0.2.7" == source_of("192.0.2.7%eth0")
    assert source_of("/run/chat.sock") == "/run/chat.sock"
    door = policy(max_per_source=2, rate=0)
    admitted(door.admit("2001:db8:1:2::1"))
    admitted(door.admit("2001:db8:1:2::2"))
    assert door.admit("2001:db8:1:2:ffff::3").why is Why.SOURCE_CONNECTIONS
    admitted(door.admit("2001:db8:1:3::1"))  # the next /64 is another source


def test_new_connections_past_the_burst_wait_for_the_rate_and_are_told_how_long():
    clock = Clock()
    door = policy(clock, max_per_source=0, rate=2.0, burst=4)
    for _ in range(4):
        door.release(admitted(door.admit("192.0.2.1")))
    refused = door.admit("192.0.2.1")
    assert isinstance(refused, Refused) and refused.why is Why.SOURCE_RATE
    assert refused.retry_after == pytest.approx(0.5)
    admitted(door.admit("192.0.2.9"))  # another address has its own bucket
    clock.now += 0.5
    admitted(door.admit("192.0.2.1"))
    assert door.admit("192.0.2.1").why is Why.SOURCE_RATE


def test_a_failed_handshake_costs_its_address_more_than_a_good_one():
    clock = Clock()
    door = policy(clock, max_per_source=0, rate=1.0, burst=10, penalty=2.0)
    for _ in range(3):
        ticket = admitted(door.admit("192.0.2.1"))
        door.penalize(ticket)
        door.release(ticket)
    admitted(door.admit("192.0.2.1"))  # 3 x 3 tokens spent, then the tenth
    refused = door.admit("192.0.2.1")
    assert refused.why is Why.SOURCE_RATE
    for _ in range(10):  # penalties go into debt, down to one burst
        door.penalize(ticket)
    assert door.admit("192.0.2.1").retry_after == pytest.approx(11.0)


def test_the_rate_table_stays_bounded_however_many_addresses_come():
    door = policy(max_per_source=0, rate=1.0, burst=2)
    for n in range(TABLE_SIZE + 500):
        door.release(admitted(door.admit(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")))
    assert door.sources_remembered == TABLE_SIZE
    door.admit("192.0.2.1")
    door.admit("192.0.2.1")
    assert door.admit("192.0.2.1").why is Why.SOURCE_RATE  # the newest are remembered


def test_random_early_drop_between_start_and_full():
    startups = Startups(start=10, rate=30, full=100)
    assert startups.drop_chance(9) == 0.0
    assert startups.drop_chance(10) == pytest.approx(0.30)
    assert startups.drop_chance(55) == pytest.approx(0.65)
    assert startups.drop_chance(100) == 1.0
    assert Startups(0, 100, 0).drop_chance(10_000) == 0.0  # 0: no cap

    rolls = iter([0.5, 0.2])  # the first roll passes 30 %, the second does not
    door = policy(max_per_source=0, rate=0, startups=Startups(2, 30, 4), chance=lambda: next(rolls))
    first, second = admitted(door.admit("192.0.2.1")), admitted(door.admit("192.0.2.2"))
    admitted(door.admit("192.0.2.3"))  # 2 in their handshake: 30 %, rolled 0.5
    assert door.admit("192.0.2.4") == Refused(Why.STARTUPS, "192.0.2.4")  # 3: 65 %, rolled 0.2
    door.establish(first)
    door.release(second)
    assert door.in_handshake == 1  # finished or gone: no longer a startup


def test_places_are_for_finished_handshakes_only():
    door = policy(max_established=2, max_per_source=0, rate=0)
    waiting = [admitted(door.admit(f"192.0.2.{n}")) for n in range(1, 6)]
    assert door.established == 0 and door.in_handshake == 5  # none of them holds a place
    assert door.establish(waiting[0]) and door.establish(waiting[1])
    assert door.admit("192.0.2.9") == Refused(Why.FULL, "192.0.2.9")
    assert not door.establish(waiting[2])  # finished too late: it must be closed
    door.release(waiting[0])
    assert door.establish(waiting[3])


def test_refusals_are_logged_once_then_counted_every_interval():
    clock = Clock()
    log = RefusalLog(interval=10, clock=clock)
    flood = Refused(Why.SOURCE_RATE, "192.0.2.1")
    assert log.note(flood) == 1
    assert [log.note(flood) for _ in range(5)] == [0] * 5
    assert log.note(Refused(Why.STARTUPS, "192.0.2.1")) == 1  # another reason: its own line
    clock.now += 10
    assert log.note(flood) == 6  # this one and the five held back


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10:30:100", Startups(10, 30, 100)), ("5", Startups(5, 100, 5)), ("0", Startups(0, 100, 0))],
)
def test_max_startups_reads_as_sshds(text, expected):
    assert startups_type(text) == expected


# --- on loopback -------------------------------------------------------------


def refused_or_hello(address, source: str = "127.0.0.1"):
    """Connect from ``source``: the server's first word, and the client."""
    client = ChatTestClient(address, source=source)
    return client.next_event(), client


def test_idle_sockets_from_one_address_do_not_lock_out_another(own_server):
    # The case: 20 idle sockets filled a server with --max-clients 20.
    # A long handshake deadline: the idle ones must still be there when the
    # person comes, however slow this machine is today.
    chat = own_server.start(max_clients=20, handshake_timeout=60, **DEFAULT_DOOR)
    idle = [ChatTestClient(chat.server_address) for _ in range(20)]  # they never answer the hello
    try:
        first_words = [type(client.next_event()) for client in idle]
        assert first_words == [ServerHello] * 10 + [ServerRefused] * 10
        person = own_server.client("Person", source="127.0.0.2")
        friend = own_server.client("Friend", source="127.0.0.3")
        person.expect(UserJoined)
        friend.say("hello")
        assert person.expect(ChatMessage) == ChatMessage("Friend", "hello")
    finally:
        for client in idle:
            client.close()


def test_a_flood_of_handshakes_and_idle_sockets_does_not_keep_a_person_from_chatting(own_server):
    chat = own_server.start(**DEFAULT_DOOR)
    stop = threading.Event()
    seen = {"refused": 0, "done": 0}
    idle: list[socket.socket] = []

    def flood_handshakes():
        # Bounded in count and time: at most 2,000 connections, within the test.
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                first, client = refused_or_hello(chat.server_address)
            except OSError:  # the listen queue overflowed: try again
                continue
            try:
                if isinstance(first, ServerHello):
                    client.conn.accept_server_key()
                    client.flush()
                    seen["done"] += isinstance(client.next_event(), HandshakeComplete)
                elif isinstance(first, ServerRefused):
                    seen["refused"] += 1
            except OSError:
                pass
            finally:
                client.close()

    def flood_idle():
        for _ in range(200):
            if stop.is_set():
                return
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(chat.server_address, timeout=DEADLINE))

    flooders = [threading.Thread(target=flood_handshakes, daemon=True) for _ in range(2)]
    flooders.append(threading.Thread(target=flood_idle, daemon=True))
    begin = time.monotonic()
    for thread in flooders:
        thread.start()
    try:
        assert wait_until(lambda: seen["refused"] > 20)  # the flood is on and being refused
        person = own_server.client("Person", source="127.0.0.2")
        friend = own_server.client("Friend", source="127.0.0.3")
        person.expect(UserJoined)
        friend.say("can you hear me?")
        assert person.expect(ChatMessage) == ChatMessage("Friend", "can you hear me?")
        person.say("yes")
        assert friend.expect(ChatMessage) == ChatMessage("Person", "yes")
    finally:
        stop.set()
        for thread in flooders:
            thread.join(DEADLINE * 2)
        for sock in idle:
            sock.close()
    elapsed = time.monotonic() - begin
    # The bucket allows 10 at once, then 1 a second: that bounds the RSA
    # decryptions one address can force, whatever it sends.
    assert seen["done"] <= 10 + elapsed * Limits().handshake_rate + 1
    assert chat.admission.open_from("127.0.0.1") <= Limits().max_per_address


def test_new_connections_from_one_address_past_its_rate_are_refused_with_the_wait(own_server):
    chat = own_server.start(max_per_address=0, handshake_rate=0.01, max_startups=Limits().max_startups)
    answers, clients = [], []
    for _ in range(12):  # kept open: a handshake given up would cost more (a penalty)
        first, client = refused_or_hello(chat.server_address)
        answers.append(first)
        clients.append(client)
    assert all(isinstance(answer, ServerHello) for answer in answers[:10])
    # 1 token a 100 s, less what came back while the ten connected:
    assert re.fullmatch(r"Too many new connections from your address\. Try again in (9\d|100) s\.", answers[10].reason)
    first, other = refused_or_hello(chat.server_address, source="127.0.0.2")
    assert isinstance(first, ServerHello)
    for client in [*clients, other]:
        client.close()


def test_failed_handshakes_cost_their_address_more(own_server):
    chat = own_server.start(max_per_address=0, handshake_rate=0.01, max_startups=Limits().max_startups)
    for _ in range(3):
        first, client = refused_or_hello(chat.server_address)
        assert isinstance(first, ServerHello)
        client.sock.sendall(b"\x00\x00\x00\x08" + os.urandom(8))  # not a key exchange
        client.wait_closed()
    assert wait_until(lambda: chat.connection_count() == 0)
    first, _ = refused_or_hello(chat.server_address)  # 9 of the 10 tokens are spent
    assert isinstance(first, ServerHello)
    first, _ = refused_or_hello(chat.server_address)
    assert isinstance(first, ServerRefused)


def test_a_key_exchange_then_a_reset_costs_its_address_more(own_server):
    """The server has spent its RSA decryption once it answers the key
    exchange: a reset then is a failed handshake too, not a free one."""
    chat = own_server.start(max_per_address=0, handshake_rate=0.01, max_startups=Limits().max_startups)
    for _ in range(3):
        first, client = refused_or_hello(chat.server_address)
        assert isinstance(first, ServerHello)
        client.conn.accept_server_key()
        client.flush()  # the key exchange
        assert client.sock.recv(1, socket.MSG_PEEK)  # the server's HI: the RSA is spent
        reset(client.sock)
    assert wait_until(lambda: chat.connection_count() == 0)
    first, _ = refused_or_hello(chat.server_address)  # 9 of the 10 tokens are spent
    assert isinstance(first, ServerHello)
    first, _ = refused_or_hello(chat.server_address)
    assert isinstance(first, ServerRefused)


def test_a_handshake_finished_once_the_places_are_gone_gets_an_authenticated_goodbye(own_server):
    chat = own_server.start(max_clients=1)
    late = own_server.client(handshake=False)
    assert isinstance(late.next_event(), ServerHello)  # in its handshake: holds no place
    own_server.client("Alice")  # takes the only place
    late.conn.accept_server_key()
    late.flush()
    late.next_event()  # the handshake completes: keys, so the goodbye is authentic
    full = server_full(1)
    while not isinstance(event := late.next_event(), Goodbye):
        pass
    assert event == Goodbye(full)
    assert late.wait_closed().clean
    assert wait_until(lambda: chat.connection_count() == 1)
