"""client.py without a network: known hosts (trust on first use), how events
are shown, and the terminal off a tty."""

from __future__ import annotations

import argparse
import stat

import pytest

import cli
import client
import client_ui
import crypto_utils
import keystore
import terminal
import transport
from protocol import ChatMessage, ErrorNotice, Notice, UserJoined, UserLeft

SERVER = "127.0.0.1:8756"
HOSTILE = "\x1b[2J\x9b31m"  # clear screen (ESC), then a C1 CSI


def fingerprint_of(key) -> str:
    return crypto_utils.fingerprint(crypto_utils.export_public_key(key))


@pytest.fixture
def real_fp(identity_key):
    return fingerprint_of(identity_key)


@pytest.fixture
def other_fp(impostor_key):
    return fingerprint_of(impostor_key)


@pytest.fixture
def known(tmp_path):
    return keystore.KnownHosts(tmp_path / "socket-chat" / "known_hosts")


def entries(known) -> list[str]:
    return known.path.read_text(encoding="utf-8").splitlines()


# --- known hosts ---------------------------------------------------------------


def test_first_contact_records_key_and_shows_fingerprint(known, real_fp):
    note = keystore.check_server_key(known, SERVER, real_fp, None)

    assert real_fp in note
    assert entries(known) == [f"{SERVER} {real_fp}"]
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600


def test_same_key_again_is_accepted_silently(known, real_fp):
    keystore.check_server_key(known, SERVER, real_fp, None)

    assert keystore.check_server_key(known, SERVER, real_fp, None) is None
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_changed_key_is_refused_with_both_fingerprints(known, real_fp, other_fp):
    keystore.check_server_key(known, SERVER, real_fp, None)

    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, None)

    text = str(refused.value)
    assert real_fp in text and other_fp in text and "--fingerprint" in text
    assert entries(known) == [f"{SERVER} {real_fp}"]  # the recorded key stays


def test_pin_that_differs_is_refused_on_first_contact(known, real_fp, other_fp):
    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, pinned=real_fp)

    text = str(refused.value)
    assert real_fp in text and other_fp in text
    assert not known.path.exists()  # nothing recorded


def test_pin_that_matches_replaces_a_stale_entry(known, real_fp, other_fp):
    known.remember(SERVER, other_fp)

    assert keystore.check_server_key(known, SERVER, real_fp, pinned=real_fp) is None
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_entries_for_other_hosts_are_kept(known, real_fp, other_fp):
    known.remember("10.0.0.1:8756", other_fp)
    known.remember(SERVER, other_fp)
    known.remember("[::1]:9000", other_fp)

    keystore.check_server_key(known, SERVER, real_fp, pinned=real_fp)

    assert sorted(entries(known)) == sorted(
        [f"10.0.0.1:8756 {other_fp}", f"[::1]:9000 {other_fp}", f"{SERVER} {real_fp}"]
    )


def test_host_id_brackets_ipv6_only():
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
    assert client.fingerprint_text(printed) == printed


@pytest.mark.parametrize(
    "text", ["abc", "SHA256:", "sha256:" + "A" * 43, "SHA256:" + "A" * 42, "SHA256:" + "A" * 43 + "="]
)
def test_fingerprint_option_refuses_malformed_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a fingerprint"):
        client.fingerprint_text(text)
