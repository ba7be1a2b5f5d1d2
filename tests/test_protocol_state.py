"""The state machine: the states follow the handshake in order, and a call
in the wrong state is a ``LocalProtocolError`` that leaves the state as it
was (as h11's test_state.py checks after every ``pytest.raises``)."""

from __future__ import annotations

import pytest

from socket_chat.protocol import (
    ChatLine,
    ConnectionClosed,
    ConnectionState,
    Goodbye,
    HandshakeComplete,
    LocalProtocolError,
    Notice,
)
from socket_chat.protocol.state import TRANSITIONS, Step, allows, next_state
from tests.wire import (
    CLOSED,
    OPEN,
    ConnectionPair,
    both_directions,
    drain,
    line,
    pair,  # noqa: F401  (the fixture: a pair with the handshake done)
)


def test_handshake_states_in_order(identity_key):
    pair = ConnectionPair(identity_key)
    seen = [(pair.client.state.name, pair.server.state.name) for _ in pair.steps()]
    assert seen == [
        ("AWAIT_SERVER_HELLO", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_TRUST", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_SERVER_HI", "AWAIT_KEY_EXCHANGE"),
        ("AWAIT_SERVER_HI", "AWAIT_CLIENT_HI"),
        ("AWAIT_SERVER_OK", "AWAIT_CLIENT_HI"),
        ("AWAIT_SERVER_OK", "OPEN"),
    ]
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)


SEND_TOO_EARLY = [
    ("client", ConnectionState.AWAIT_SERVER_HELLO),
    ("client", ConnectionState.AWAIT_TRUST),
    ("client", ConnectionState.AWAIT_SERVER_HI),
    ("client", ConnectionState.AWAIT_SERVER_OK),
    ("server", ConnectionState.AWAIT_KEY_EXCHANGE),
    ("server", ConnectionState.AWAIT_CLIENT_HI),
]


@pytest.mark.parametrize("role, state", SEND_TOO_EARLY, ids=[f"{r}-{s.name}" for r, s in SEND_TOO_EARLY])
def test_send_before_open_is_refused(identity_key, role, state):
    pair = ConnectionPair(identity_key)
    steps = pair.steps()
    next(steps)
    conn = getattr(pair, role)
    while conn.state is not state:
        next(steps)
    with pytest.raises(LocalProtocolError):
        conn.send(ChatLine("early") if role == "client" else Notice("early"))
    assert conn.state is state
    # The misuse left nothing on the wire: the handshake still completes.
    for _ in steps:
        pass
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)
    assert pair.received[pair.client][-1] == HandshakeComplete()


ACCEPT_TOO_EARLY_OR_LATE = [
    ConnectionState.AWAIT_SERVER_HELLO,
    ConnectionState.AWAIT_SERVER_HI,
    ConnectionState.AWAIT_SERVER_OK,
]


@pytest.mark.parametrize("state", ACCEPT_TOO_EARLY_OR_LATE, ids=[s.name for s in ACCEPT_TOO_EARLY_OR_LATE])
def test_accept_server_key_in_wrong_state_is_refused(identity_key, state):
    pair = ConnectionPair(identity_key)
    steps = pair.steps()
    next(steps)
    while pair.client.state is not state:
        next(steps)
    with pytest.raises(LocalProtocolError):
        pair.client.accept_server_key()
    assert pair.client.state is state
    for _ in steps:
        pass
    assert (pair.client.state, pair.server.state) == (OPEN, OPEN)


def test_accept_server_key_when_open_is_refused(pair):
    with pytest.raises(LocalProtocolError):
        pair.client.accept_server_key()
    assert pair.client.state is OPEN
    assert pair.client.data_to_send() == b""


@both_directions
def test_send_after_goodbye_is_refused(pair, client_sends):
    sender, _ = pair.sender_receiver(client_sends)
    sender.send(Goodbye("bye"))
    with pytest.raises(LocalProtocolError):
        sender.send(line(client_sends, "one more thing"))
    assert sender.state is OPEN
    assert pair.deliver(sender) == [Goodbye("bye")]


def test_send_after_peer_closed_is_refused(pair):
    pair.client.receive_data(b"")
    assert drain(pair.client) == [ConnectionClosed(clean=False)]
    with pytest.raises(LocalProtocolError):
        pair.client.send(ChatLine("anyone?"))
    assert pair.client.state is CLOSED


def test_data_after_eof_is_a_local_error(pair):
    pair.server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        pair.server.receive_data(b"more")
    assert pair.server.next_event() == ConnectionClosed(clean=False)


# --- the table ----------------------------------------------------------------

S = ConnectionState
CLIENT_HANDSHAKE = [Step.RECEIVE_HELLO, Step.SEND_KEY_EXCHANGE, Step.RECEIVE_SERVER_HI, Step.RECEIVE_SERVER_OK]
SERVER_HANDSHAKE = [Step.RECEIVE_KEY_EXCHANGE, Step.RECEIVE_CLIENT_HI]


def walk(state: ConnectionState, steps: list[Step]) -> list[ConnectionState]:
    states = [state]
    for step in steps:
        states.append(next_state(states[-1], step))
    return states


def test_the_table_leads_each_side_through_its_handshake_to_open():
    assert walk(S.AWAIT_SERVER_HELLO, CLIENT_HANDSHAKE) == [
        S.AWAIT_SERVER_HELLO,
        S.AWAIT_TRUST,
        S.AWAIT_SERVER_HI,
        S.AWAIT_SERVER_OK,
        S.OPEN,
    ]
    assert walk(S.AWAIT_KEY_EXCHANGE, SERVER_HANDSHAKE) == [S.AWAIT_KEY_EXCHANGE, S.AWAIT_CLIENT_HI, S.OPEN]
    assert next_state(S.AWAIT_SERVER_HELLO, Step.RECEIVE_REFUSAL) is S.CLOSED


def test_a_busy_servers_proof_of_work_comes_before_the_rest_of_the_handshake():
    # The client: the refusal an older client stops at, the puzzle, then the hello.
    assert next_state(S.AWAIT_SERVER_HELLO, Step.RECEIVE_WORK_REFUSAL) is S.AWAIT_PUZZLE
    assert next_state(S.AWAIT_PUZZLE, Step.RECEIVE_PUZZLE) is S.AWAIT_SERVER_HELLO
    assert next_state(S.AWAIT_PUZZLE, Step.RECEIVE_EOF) is S.CLOSED  # no puzzle: the refusal stands
    # The server: the proof, then the key exchange (or a resumption) as when idle.
    assert next_state(S.AWAIT_PROOF, Step.RECEIVE_PROOF) is S.AWAIT_KEY_EXCHANGE
    assert not allows(S.AWAIT_PROOF, Step.RECEIVE_KEY_EXCHANGE)


def test_every_state_is_in_the_table_and_reached_from_a_first_state():
    assert set(TRANSITIONS) == set(ConnectionState)
    # A server's first state: AWAIT_KEY_EXCHANGE, or AWAIT_PROOF when busy.
    reached, todo = set(), [S.AWAIT_SERVER_HELLO, S.AWAIT_KEY_EXCHANGE, S.AWAIT_PROOF]
    while todo:
        state = todo.pop()
        if state not in reached:
            reached.add(state)
            todo += TRANSITIONS[state].values()
    assert reached == set(ConnectionState)


@pytest.mark.parametrize("state", [s for s in ConnectionState if s not in (S.CLOSED, S.ERROR)], ids=lambda s: s.name)
def test_until_the_end_eof_closes_and_a_fault_fails_from_any_state(state):
    assert next_state(state, Step.RECEIVE_EOF) is S.CLOSED
    assert next_state(state, Step.PEER_FAILED) is S.ERROR


@pytest.mark.parametrize("state", [S.CLOSED, S.ERROR], ids=lambda s: s.name)
def test_closed_and_error_lead_nowhere(state):
    assert not any(allows(state, step) for step in Step)
    with pytest.raises(AssertionError):
        next_state(state, Step.RECEIVE_EOF)


def test_the_key_exchange_may_be_sent_in_await_trust_only():
    assert [s for s in ConnectionState if allows(s, Step.SEND_KEY_EXCHANGE)] == [S.AWAIT_TRUST]


def test_the_table_cannot_be_changed():
    with pytest.raises(TypeError):
        TRANSITIONS[S.OPEN] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        TRANSITIONS[S.OPEN][Step.RECEIVE_EOF] = S.OPEN  # type: ignore[index]
