"""server/handshakes.py: the one thread that works out every connection's
handshake cryptography for the readers, one call at a time."""

from __future__ import annotations

import contextlib
import threading

import pytest

from socket_chat.protocol import RemoteProtocolError
from socket_chat.server.handshakes import HandshakeThread


class NamingGate:
    """A gate that notes which thread took it, and whether it is held."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.held = False

    def __enter__(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.held = True

    def __exit__(self, *exc_info) -> None:
        self.held = False


def test_a_call_runs_in_the_handshake_thread_under_the_gate_and_its_result_comes_back():
    gate = NamingGate()
    worker = HandshakeThread(lambda: gate)
    try:
        assert worker.run(lambda: (threading.current_thread().name, gate.held)) == ("handshakes", True)
        assert worker.run(lambda: 7) == 7
        assert gate.threads == ["handshakes", "handshakes"]
    finally:
        worker.stop()


def test_a_calls_exception_is_raised_in_the_callers_thread_and_the_thread_goes_on():
    worker = HandshakeThread(contextlib.nullcontext)

    def bad():
        raise RemoteProtocolError("bad key exchange")

    try:
        with pytest.raises(RemoteProtocolError, match="bad key exchange"):
            worker.run(bad)
        assert worker.run(lambda: "next") == "next"
    finally:
        worker.stop()


def test_after_stop_a_call_runs_in_the_callers_thread_still_under_the_gate():
    gate = NamingGate()
    worker = HandshakeThread(lambda: gate)
    worker.run(lambda: None)
    worker.stop()
    assert worker.run(lambda: threading.current_thread().name) == threading.current_thread().name
    assert gate.threads == ["handshakes", threading.current_thread().name]
    assert not any(t.name == "handshakes" and t.is_alive() for t in threading.enumerate())


def test_the_servers_readers_hand_their_handshakes_to_the_handshake_thread(own_server):
    server = own_server.start(rate=0)
    gate = NamingGate()
    server.handshaking = gate
    first, second = own_server.client("first"), own_server.client("second")
    assert first is not None and second is not None
    assert gate.threads and set(gate.threads) == {"handshakes"}  # never a reader's own thread


def test_only_the_step_that_needs_the_servers_key_is_handed_over(own_server, monkeypatch):
    # Issue 22, part 3: a hand-off costs thread switches, so the reader keeps
    # what needs no RSA (an empty buffer's NEED_DATA, the client's HI): a
    # full handshake hands over one call (three before), two at most if its
    # key exchange came in pieces.
    from socket_chat import crypto as crypto_utils

    unwrapped_in: list[str] = []
    unwrap = crypto_utils.unwrap_key

    def spy_unwrap(*args):
        unwrapped_in.append(threading.current_thread().name)
        return unwrap(*args)

    monkeypatch.setattr(crypto_utils, "unwrap_key", spy_unwrap)
    server = own_server.start(rate=0)
    gate = NamingGate()
    server.handshaking = gate
    assert own_server.client("first") is not None and own_server.client("second") is not None
    assert unwrapped_in == ["handshakes", "handshakes"]
    assert set(gate.threads) == {"handshakes"} and 2 <= len(gate.threads) <= 4
