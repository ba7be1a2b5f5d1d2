"""The client without a network: how events are shown, and the terminal off a
tty. Known hosts (trust on first use): test_keystore.py."""

from __future__ import annotations

import argparse

import pytest

from socket_chat import cli, transport
from socket_chat import crypto as crypto_utils
from socket_chat import tty as terminal
from socket_chat.client import __main__ as client_main
from socket_chat.client import ui as client_ui
from socket_chat.protocol import ChatMessage, ErrorNotice, Notice, UserJoined, UserLeft

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
