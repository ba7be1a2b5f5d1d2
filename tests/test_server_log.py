"""What the server's log and start-up say about people: chat text only with
--log-messages (who and how long otherwise), and a warning for a Redis
password put on the command line, where every user of the machine sees it."""

from __future__ import annotations

import logging

import pytest

from socket_chat.protocol import ActionLine, ChatMessage, PrivateLine
from socket_chat.server.command_line import parse_args
from tests.helpers import wait_until

SECRET_TEXT = "the plans are in the vault"


@pytest.fixture
def chat_log(caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    return caplog


def chat_and_wait(own_server, log_messages: bool) -> None:
    """Alice says a line, does an action and writes to Bob privately; Bob
    has them all (so the server has logged them)."""
    chat = own_server.start()
    chat.log_messages = log_messages
    alice, bob = own_server.client("Alice"), own_server.client("Bob")
    alice.say(SECRET_TEXT)
    alice.send(ActionLine(f"hides {SECRET_TEXT}"))
    alice.send(PrivateLine("Bob", f"psst {SECRET_TEXT}"))
    events = [bob.next_event() for _ in range(3)]
    assert ChatMessage("Alice", SECRET_TEXT) in events, events


def test_chat_text_stays_out_of_the_log_by_default(own_server, chat_log):
    chat_and_wait(own_server, log_messages=False)

    assert SECRET_TEXT not in chat_log.text
    assert f"Alice said a line ({len(SECRET_TEXT)} characters)" in chat_log.text
    assert "Alice did an action" in chat_log.text
    # Logged just after it was delivered: wait for it.
    assert wait_until(lambda: "Alice sent a private message to Bob" in chat_log.text)


def test_log_messages_puts_public_text_in_the_log_but_never_private_text(own_server, chat_log):
    chat_and_wait(own_server, log_messages=True)
    assert wait_until(lambda: "Alice sent a private message to Bob" in chat_log.text)

    assert f"Alice: {SECRET_TEXT}" in chat_log.text
    assert f"* Alice hides {SECRET_TEXT}" in chat_log.text
    assert f"psst {SECRET_TEXT}" not in chat_log.text


def test_log_messages_is_an_option_and_off_by_default(capsys):
    assert parse_args([]).log_messages is False
    assert parse_args(["--log-messages"]).log_messages is True
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--log-messages" in help_text
    assert "An address with a password belongs in $CHAT_CLUSTER" in help_text


def test_a_cluster_password_on_the_command_line_is_warned_about_and_not_shown(monkeypatch, capsys):
    pytest.importorskip("redis")
    monkeypatch.delenv("CHAT_CLUSTER", raising=False)

    parse_args(["--cluster", "redis://:hunter2@127.0.0.1:6379/0"])

    err = capsys.readouterr().err
    assert "CHAT_CLUSTER" in err and "ps" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("argv", "environment"),
    [
        (["--cluster", "redis://127.0.0.1:6379/0"], None),
        ([], "redis://:hunter2@127.0.0.1:6379/0"),
    ],
    ids=["no password", "password from CHAT_CLUSTER"],
)
def test_no_warning_without_a_password_on_the_command_line(monkeypatch, capsys, argv, environment):
    pytest.importorskip("redis")
    if environment is None:
        monkeypatch.delenv("CHAT_CLUSTER", raising=False)
    else:
        monkeypatch.setenv("CHAT_CLUSTER", environment)

    args = parse_args(argv)

    assert args.cluster
    assert capsys.readouterr().err == ""
