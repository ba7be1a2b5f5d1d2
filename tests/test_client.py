"""The client without a network: how events are shown, the terminal off a
tty, and the link's two threads over a socket pair. Known hosts (trust on
first use): test_keystore.py."""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import types

import pytest

from socket_chat import cli, protocol, transport
from socket_chat import crypto as crypto_utils
from socket_chat import tty as terminal
from socket_chat.client import __main__ as client_main
from socket_chat.client import conversation, session
from socket_chat.client import ui as client_ui
from socket_chat.client.link import ClientError, ServerLink, establish
from socket_chat.client.rooms import RoomState
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    ErrorNotice,
    HandshakeComplete,
    Notice,
    ServerConnection,
    ServerIdentity,
    UserJoined,
    UserLeft,
)
from tests.helpers import TIMEOUT

SERVER = "127.0.0.1:8756"
HOSTILE = "\x1b[2J\x9b31m"  # clear screen (ESC), then a C1 CSI


def test_an_address_brackets_ipv6_only():
    assert transport.format_address("::1", 8756) == "[::1]:8756"
    assert transport.format_address("127.0.0.1", 8756) == "127.0.0.1:8756"


# --- what is shown -------------------------------------------------------------


def test_chat_message_is_shown_as_name_colon_text():
    assert client_ui.render(ChatMessage("Jaime Lannister", "Hi")) == ["Jaime Lannister: Hi"]


@pytest.mark.parametrize(
    "event",
    [
        ChatMessage(f"evil{HOSTILE}", f"text{HOSTILE}"),
        UserJoined(HOSTILE),
        UserLeft(HOSTILE),
        Notice(HOSTILE),
        ErrorNotice(HOSTILE),
    ],
    ids=lambda event: type(event).__name__,
)
def test_escape_and_c1_controls_never_reach_the_terminal(event):
    shown = "\n".join(client_ui.render(event))

    assert shown
    assert not [ch for ch in shown if ch == "\x1b" or 0x80 <= ord(ch) <= 0x9F]


def test_terminal_off_a_tty_prints_plain_lines(capsys):
    screen = terminal.Terminal(interactive=False)

    screen.show("Jaime Lannister: Hi")
    screen.error("Connection to server lost.")

    out, err = capsys.readouterr()
    assert out == "Jaime Lannister: Hi\n"
    assert err == "Connection to server lost.\n"


@pytest.mark.parametrize("text", ["0", "8756", "65535"])
def test_port_number_accepts_ports(text):
    assert cli.port_number(text) == int(text)


@pytest.mark.parametrize("text", ["-1", "65536", "x", "", "80.5"])
def test_port_number_refuses_what_is_not_a_port(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a port number"):
        cli.port_number(text)


def test_fingerprint_option_takes_what_the_server_prints(identity_key):
    printed = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
    assert client_main.fingerprint_text(printed) == printed


@pytest.mark.parametrize(
    "text", ["abc", "SHA256:", "sha256:" + "A" * 43, "SHA256:" + "A" * 42, "SHA256:" + "A" * 43 + "="]
)
def test_fingerprint_option_refuses_malformed_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a fingerprint"):
        client_main.fingerprint_text(text)


# --- the link's two threads ------------------------------------------------------


def serve_handshake(conn: ServerConnection, sock: socket.socket) -> None:
    """The server's end of the handshake, over ``sock``."""
    sock.sendall(conn.data_to_send())  # the hello
    while not isinstance(event := conn.next_event(), HandshakeComplete):
        sock.sendall(conn.data_to_send())  # the answer to what it read, if any
        if event is protocol.NEED_DATA:
            conn.receive_data(sock.recv(transport.RECV_SIZE))
    sock.sendall(conn.data_to_send())


@contextlib.contextmanager
def linked(identity_key):
    """A client link and the server's end over a socket pair, the handshake
    done: (link, the server's connection, our socket, theirs)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        server = ServerConnection(ServerIdentity.of(identity_key))
        server_side = threading.Thread(target=serve_handshake, args=(server, theirs))
        server_side.start()
        link = ServerLink(ours)
        establish(link, trust=lambda hello: None)
        server_side.join(TIMEOUT)
        ours.settimeout(TIMEOUT)
        yield link, server, ours, theirs


class StuckSocket:
    """The client's socket, with a ``sendall`` that waits (for ``TIMEOUT`` at
    most) as one does when the server has stopped reading."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sending = threading.Event()
        self.release = threading.Event()

    def sendall(self, data: bytes) -> None:
        self.sending.set()
        self.release.wait(TIMEOUT)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)


def test_the_receiver_reads_while_the_main_thread_is_stuck_sending(identity_key):
    # Reading takes no lock that a send holds: what the server says is shown
    # even while a line waits for the socket.
    with linked(identity_key) as (link, server, ours, theirs):
        link.sock = stuck = StuckSocket(ours)  # type: ignore[assignment]
        sending = threading.Thread(target=link.send, args=(ChatLine("a line the server does not take"),))
        sending.start()
        assert stuck.sending.wait(TIMEOUT)

        server.send(Notice("still heard"))
        theirs.sendall(server.data_to_send())

        assert link.next_event() == Notice("still heard")
        assert sending.is_alive()  # the send still waits: the read did not wait for it
        stuck.release.set()
        sending.join(TIMEOUT)


def test_reconnecting_gives_up_when_the_name_stays_taken(monkeypatch):
    """Back on the server, but someone else holds the name for longer than
    NAME_RETRY: the person is told, instead of trying for ever."""
    now = [0.0]
    tries = []

    def wait(display, seconds):
        assert len(tries) < 1000, "never gave up"
        now[0] += seconds
        return False

    def connect(host, port):
        tries.append(now[0])
        return types.SimpleNamespace(sock=socket.socket())

    monkeypatch.setattr(session, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(session, "wait_or_leave", wait)
    monkeypatch.setattr(session, "connect", connect)
    monkeypatch.setattr(session, "trust_server", lambda link, args, terminal: None)
    monkeypatch.setattr(session, "take_back_name", lambda link, display, name: False)
    display = types.SimpleNamespace(terminal=None, session=types.SimpleNamespace(own_name="Ann", rooms=RoomState()))
    with pytest.raises(ClientError, match=r"Reconnected, but the name Ann stays taken: giving up\."):
        session.reconnect(types.SimpleNamespace(host="127.0.0.1", port=1), display)
    assert tries[-2] - tries[0] <= session.NAME_RETRY < tries[-1] - tries[0]  # it gave up at the first try past it


def test_a_line_sent_once_the_receiver_saw_the_end_ends_the_conversation_without_a_not_sent(identity_key, capsys):
    """The server closed; the receiver has seen it, and the main thread
    sends a line before it is woken: that is the end of the session (told
    as such by converse), not "Not sent: can't send ChatLine in state CLOSED"."""
    with linked(identity_key) as (link, _, _, theirs):
        theirs.shutdown(socket.SHUT_WR)
        assert isinstance(link.next_event(), protocol.ConnectionClosed)  # the receiver's read
        display = types.SimpleNamespace(terminal=terminal.Terminal(interactive=False))
        with pytest.raises(protocol.ProtocolError):
            conversation.send_message(link, display, ChatLine("one more"))
    assert "Not sent" not in capsys.readouterr().err
