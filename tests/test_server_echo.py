"""The server's side of showing a person their own lines as the others see
them (EchoOwnLines) and of telling the client its username deadline
(UsernameDeadline): PROTOCOL.md, section 4."""

from __future__ import annotations

import pytest

from socket_chat.protocol import (
    ActionLine,
    ActionMessage,
    ChatMessage,
    EchoOwnLines,
    ErrorNotice,
    PrivateLine,
    PrivateMessage,
    UserJoined,
    UsernameDeadline,
)

pytestmark = pytest.mark.timeout(30)


def test_a_client_that_asks_gets_its_own_lines_back_in_the_rooms_order(own_server):
    own_server.start()
    other = own_server.client("Other")
    ann = own_server.client()
    ann.send(EchoOwnLines())
    assert ann.next_event() == EchoOwnLines()  # the answer: from here on
    ann.join("Ann")
    other.expect(UserJoined)

    ann.say("hello")
    ann.send(ActionLine("waves"))
    assert other.expect(ChatMessage) == ChatMessage("Ann", "hello")  # the others see it once, as before
    assert other.expect(ActionMessage) == ActionMessage("Ann", "waves")
    other.say("hi Ann")

    assert ann.next_event() == ChatMessage("Ann", "hello")
    assert ann.next_event() == ActionMessage("Ann", "waves")
    assert ann.next_event() == ChatMessage("Other", "hi Ann")


def test_a_client_that_does_not_ask_gets_no_echo(own_server):
    own_server.start()
    other = own_server.client("Other")
    ann = own_server.client("Ann")
    other.expect(UserJoined)

    ann.say("hello")
    ann.send(PrivateLine("Other", "psst"))

    assert other.expect(ChatMessage) == ChatMessage("Ann", "hello")
    assert ann.next_event() == PrivateMessage("Ann", "Other", "psst")  # the receipt, as before; no echo first


def test_an_echoed_line_still_passes_the_checks(own_server):
    own_server.start(max_message_bytes=10)
    ann = own_server.client("Ann")
    ann.send(EchoOwnLines())
    ann.expect(EchoOwnLines)

    ann.say("x" * 11)
    ann.say("short")

    assert "not sent" in ann.expect(ErrorNotice).text  # the refusal, and no echo of the refused line
    assert ann.next_event() == ChatMessage("Ann", "short")


def test_the_username_deadline_is_told_before_the_first_request(own_server):
    own_server.start(username_timeout=42.5)
    client = own_server.client()  # handshake() expects RateLimit, UsernameDeadline, UsernameRequest
    assert client.username_deadline == UsernameDeadline(43)  # whole seconds, rounded up


def test_the_default_username_deadline_leaves_time_to_check_a_fingerprint():
    from socket_chat.chat import limits

    assert limits.Limits().username_timeout >= 300  # a phone call to the operator, not a race
