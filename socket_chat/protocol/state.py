"""When each step is legal: the connection's states and its transitions.

The rules, as h11's ``_state.py`` states its own:

- A connection is in one ``ConnectionState``. It moves only by a ``Step``,
  and only along ``TRANSITIONS[state][step]``; ``next_state`` looks it up.
- Client and server have their own handshake states, so the table needs no
  role: a state names the side it belongs to.
- Until a connection ends, EOF from the peer takes it to ``CLOSED`` and a
  fault of the peer to ``ERROR``, from whatever state it was in. ``CLOSED``
  and ``ERROR`` lead nowhere.
- Sending an application message is not a step: it happens in ``OPEN``
  and leaves the state as it is. (Once the connection is open, only its
  receiving half moves the state; see ``connection``.)

The connection (``connection``) decides what a frame means in its state
and takes the step; a step the table does not have there is a bug in the
connection, not something a peer can cause, or a misuse by the caller,
which the connection checks first with ``allows``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ConnectionState", "Step", "TRANSITIONS", "allows", "next_state"]


class ConnectionState(enum.Enum):
    """Where a connection is (``conn.state``, read-only)."""

    #: Client: waiting for the server's hello.
    AWAIT_SERVER_HELLO = enum.auto()
    #: Client: the server refused with ``WORK_REFUSAL``: its puzzle should
    #: follow (then its hello); at EOF the refusal stands.
    AWAIT_PUZZLE = enum.auto()
    #: Client: the server's key is known; the caller must call
    #: ``accept_server_key()`` if it trusts it, or close.
    AWAIT_TRUST = enum.auto()
    #: Client: resumption sent (a ticket, no RSA); waiting for the server's
    #: HI under the resumed keys, or its decline (then a full handshake).
    AWAIT_RESUMPTION = enum.auto()
    #: Client: key exchange sent; waiting for the server's encrypted HI.
    AWAIT_SERVER_HI = enum.auto()
    #: Client: HI sent back; waiting for the server's encrypted OK.
    AWAIT_SERVER_OK = enum.auto()
    #: Server: puzzle and hello sent; waiting for the client's proof of work.
    AWAIT_PROOF = enum.auto()
    #: Server: hello sent; waiting for the client's key exchange.
    AWAIT_KEY_EXCHANGE = enum.auto()
    #: Server: a resumption arrived; the caller must open its ticket and
    #: call ``resume(secret)`` or ``decline_resumption()``.
    AWAIT_TICKET_CHECK = enum.auto()
    #: Server: resumption declined; waiting for the client's key exchange.
    AWAIT_FULL_KEY_EXCHANGE = enum.auto()
    #: Server: HI sent; waiting for the client's encrypted HI.
    AWAIT_CLIENT_HI = enum.auto()
    #: Handshake done: application messages flow both ways.
    OPEN = enum.auto()
    #: The peer closed the connection (EOF at a frame boundary).
    CLOSED = enum.auto()
    #: The peer broke the protocol; nothing more can be done.
    ERROR = enum.auto()


class Step(enum.Enum):
    """What moves a connection on (PROTOCOL.md section 2 names the messages)."""

    #: Client: the server's hello arrived and checks out.
    RECEIVE_HELLO = "receive hello"
    #: Client: the server turned the connection away instead of a hello.
    RECEIVE_REFUSAL = "receive refusal"
    #: Client: a busy server's refusal, which a puzzle may follow.
    RECEIVE_WORK_REFUSAL = "receive refusal asking for work"
    #: Client: the busy server's puzzle arrived; its hello follows.
    RECEIVE_PUZZLE = "receive puzzle"
    #: Server: the client's proof of work checks out.
    RECEIVE_PROOF = "receive proof of work"
    #: Client: the caller trusts the server's key; the key exchange goes out.
    SEND_KEY_EXCHANGE = "send key exchange"
    #: Client: the caller trusts the server's key; a resumption goes out.
    SEND_RESUMPTION = "send resumption"
    #: Client: the server declined the resumption; the key exchange goes out.
    RECEIVE_DECLINE = "receive decline, send key exchange"
    #: Server: the client offered a ticket.
    RECEIVE_RESUMPTION = "receive resumption"
    #: Server: the ticket and its binder check out; the server's HI goes out.
    ACCEPT_RESUMPTION = "accept resumption, send HI"
    #: Server: the ticket is not taken; the decline goes out.
    DECLINE_RESUMPTION = "decline resumption"
    #: Server: the client's key exchange arrived; the server's HI goes out.
    RECEIVE_KEY_EXCHANGE = "receive key exchange, send HI"
    #: Client: the server's HI checks out; the client's HI goes back.
    RECEIVE_SERVER_HI = "receive HI, send HI"
    #: Server: the client's HI checks out; OK goes out.
    RECEIVE_CLIENT_HI = "receive HI, send OK"
    #: Client: the server's OK checks out.
    RECEIVE_SERVER_OK = "receive OK"
    #: Either side: the peer closed the connection.
    RECEIVE_EOF = "receive EOF"
    #: Either side: the peer broke the protocol.
    PEER_FAILED = "peer failed"


_S = ConnectionState

#: The handshake, each side's steps in order.
_HANDSHAKE: dict[ConnectionState, dict[Step, ConnectionState]] = {
    _S.AWAIT_SERVER_HELLO: {
        Step.RECEIVE_HELLO: _S.AWAIT_TRUST,
        Step.RECEIVE_REFUSAL: _S.CLOSED,
        Step.RECEIVE_WORK_REFUSAL: _S.AWAIT_PUZZLE,
    },
    _S.AWAIT_PUZZLE: {Step.RECEIVE_PUZZLE: _S.AWAIT_SERVER_HELLO},
    _S.AWAIT_TRUST: {Step.SEND_KEY_EXCHANGE: _S.AWAIT_SERVER_HI, Step.SEND_RESUMPTION: _S.AWAIT_RESUMPTION},
    _S.AWAIT_RESUMPTION: {Step.RECEIVE_DECLINE: _S.AWAIT_SERVER_HI, Step.RECEIVE_SERVER_HI: _S.AWAIT_SERVER_OK},
    _S.AWAIT_SERVER_HI: {Step.RECEIVE_SERVER_HI: _S.AWAIT_SERVER_OK},
    _S.AWAIT_SERVER_OK: {Step.RECEIVE_SERVER_OK: _S.OPEN},
    _S.AWAIT_PROOF: {Step.RECEIVE_PROOF: _S.AWAIT_KEY_EXCHANGE},
    _S.AWAIT_KEY_EXCHANGE: {
        Step.RECEIVE_KEY_EXCHANGE: _S.AWAIT_CLIENT_HI,
        Step.RECEIVE_RESUMPTION: _S.AWAIT_TICKET_CHECK,
    },
    _S.AWAIT_TICKET_CHECK: {
        Step.ACCEPT_RESUMPTION: _S.AWAIT_CLIENT_HI,
        Step.DECLINE_RESUMPTION: _S.AWAIT_FULL_KEY_EXCHANGE,
    },
    _S.AWAIT_FULL_KEY_EXCHANGE: {Step.RECEIVE_KEY_EXCHANGE: _S.AWAIT_CLIENT_HI},
    _S.AWAIT_CLIENT_HI: {Step.RECEIVE_CLIENT_HI: _S.OPEN},
    _S.OPEN: {},
}
_ENDS = {Step.RECEIVE_EOF: _S.CLOSED, Step.PEER_FAILED: _S.ERROR}

#: Every legal step: ``TRANSITIONS[state][step]`` is the next state.
TRANSITIONS: Mapping[ConnectionState, Mapping[Step, ConnectionState]] = MappingProxyType(
    {
        **{state: MappingProxyType(steps | _ENDS) for state, steps in _HANDSHAKE.items()},
        _S.CLOSED: MappingProxyType({}),
        _S.ERROR: MappingProxyType({}),
    }
)


def allows(state: ConnectionState, step: Step) -> bool:
    """Whether ``step`` may be taken in ``state``."""
    return step in TRANSITIONS[state]


def next_state(state: ConnectionState, step: Step) -> ConnectionState:
    """Where ``step`` leads from ``state``.

    Raises:
        AssertionError: the table has no such step: a bug in the caller,
            which must check first (``allows``) where the step is not
            certain.
    """
    following = TRANSITIONS[state].get(step)
    if following is None:  # not an assert: a wrong state must not survive -O
        raise AssertionError(f"no step {step.name} in state {state.name}")
    return following
