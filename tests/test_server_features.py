"""The server's side of the chat commands: private messages, actions, renames,
the user list, history, the message of the day and parting lines, on a real
ChatServer on loopback with protocol-level clients (every read has a
timeout). The room alone, with fake members: test_room.py; the operator
console: test_console.py."""

from __future__ import annotations

import threading

import pytest

from socket_chat.protocol import (
    ActionLine,
    ActionMessage,
    ChatMessage,
    ErrorNotice,
    Goodbye,
    HistoryMessage,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    UserJoined,
    UserLeft,
    UserList,
    UserListRequest,
    UserParted,
)
from socket_chat.server import app as server
from tests.helpers import ChatTestClient
from tests.test_server import alice_and_bob  # noqa: F401 (a fixture)

# --- over loopback ---------------------------------------------------------------


@pytest.fixture
def trio(connect):
    """Ann, Bob and Cat joined; each has seen the later ones join."""
    ann, bob, cat = connect("Ann"), connect("Bob"), connect("Cat")
    ann.expect(UserJoined)
    ann.expect(UserJoined)
    bob.expect(UserJoined)
    return ann, bob, cat


def test_private_message_goes_to_one_person_only(trio):
    ann, bob, cat = trio

    ann.send(PrivateLine("bob", "just between us"))

    assert bob.expect(PrivateMessage) == PrivateMessage("Ann", "Bob", "just between us")
    assert ann.expect(PrivateMessage) == PrivateMessage("Ann", "Bob", "just between us")
    ann.say("public")
    assert cat.expect(ChatMessage) == ChatMessage("Ann", "public")  # the first thing Cat gets


def test_private_message_to_an_unknown_name_is_a_clear_error(trio):
    ann, bob, _cat = trio

    ann.send(PrivateLine("Nobody", "hello?"))

    error = ann.expect(ErrorNotice)
    assert "No one called Nobody is online" in error.text
    ann.say("after")
    assert bob.expect(ChatMessage) == ChatMessage("Ann", "after")


def test_action_is_broadcast_to_the_others(trio):
    ann, bob, cat = trio
    ann.send(ActionLine("waves"))
    assert bob.expect(ActionMessage) == ActionMessage("Ann", "waves")
    assert cat.expect(ActionMessage) == ActionMessage("Ann", "waves")


def test_nick_change_is_told_to_everyone_and_used_from_then_on(trio):
    ann, bob, _cat = trio

    ann.send(NickRequest("  Annie "))

    for client in trio:
        assert client.expect(NickChanged) == NickChanged("Ann", "Annie")
    ann.say("renamed")
    assert bob.expect(ChatMessage) == ChatMessage("Annie", "renamed")


def test_nick_to_ones_own_name_tells_only_oneself(trio):
    ann, bob, _cat = trio

    ann.send(NickRequest(" Ann "))

    assert ann.expect(Notice) == Notice("You are already called Ann.")
    ann.say("same name")
    assert bob.expect(ChatMessage) == ChatMessage("Ann", "same name")  # no NickChanged before it
    ann.send(NickRequest("ANN"))  # a change of case is a change
    assert bob.expect(NickChanged) == NickChanged("Ann", "ANN")


@pytest.mark.parametrize(
    ("wanted", "why"),
    [
        ("BOB", "taken"),
        ("", "not a valid username"),
        ("bad\x1bname", "not a valid username"),
        ("x" * 33, "not a valid"),
    ],
)
def test_nick_change_follows_the_joining_rules(alice_and_bob, wanted, why):
    alice, bob = alice_and_bob

    alice.send(NickRequest(wanted))

    error = alice.expect(ErrorNotice)
    assert why in error.text and "\x1b" not in error.text
    alice.say("still Alice")
    assert bob.expect(ChatMessage) == ChatMessage("Alice", "still Alice")


@pytest.mark.parametrize(
    ("wanted", "error"),
    [
        ("ＢＯＢ", "The username ＢＯＢ looks the same as Bob, who is online."),
        ("\u0412ob", "That is not a valid username: it mixes Cyrillic and Latin letters. The name was not changed."),
        (
            "Bob\ufe0f",
            "That is not a valid username: it contains an invisible character (U+FE0F). The name was not changed.",
        ),
        (
            "\u3164",
            "That is not a valid username: it contains an invisible character (U+3164). The name was not changed.",
        ),
        ("Bob: hi", "That is not a valid username: it may not contain ':'. The name was not changed."),
        ("[Bob -> me] psst", "That is not a valid username: it may not start with '['. The name was not changed."),
    ],
    ids=["fullwidth", "cyrillic", "fe0f", "filler", "colon", "private-format"],
)
def test_nick_to_a_look_alike_is_refused_with_the_reason(alice_and_bob, wanted, error):
    alice, bob = alice_and_bob

    alice.send(NickRequest(wanted))

    assert alice.expect(ErrorNotice) == ErrorNotice(error)
    alice.say("still Alice")
    assert bob.expect(ChatMessage) == ChatMessage("Alice", "still Alice")


def test_user_list_names_everyone_with_time_online(trio):
    _ann, bob, _cat = trio
    bob.send(UserListRequest())
    listed = bob.expect(UserList).members()
    assert [name for name, _ in listed] == ["Ann", "Bob", "Cat"]
    assert all(0 <= seconds < 60 for _, seconds in listed)


def test_quit_with_a_parting_line_shows_it_to_the_others(alice_and_bob):
    alice, bob = alice_and_bob
    bob.send(Goodbye("good night"))
    assert alice.expect(UserParted) == UserParted("Bob", "good night")


def test_quit_without_a_line_is_a_plain_leave(alice_and_bob):
    alice, bob = alice_and_bob
    bob.send(Goodbye(""))
    assert alice.expect(UserLeft) == UserLeft("Bob")


@pytest.fixture
def server_with(identity_key):
    """Start a ChatServer with the given options; stopped at the end."""
    started = []

    def start(**options) -> server.ChatServer:
        chat = server.ChatServer(identity_key, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=chat.serve_forever, daemon=True)
        thread.start()
        started.append((chat, thread))
        return chat

    clients: list[ChatTestClient] = []

    def client(chat: server.ChatServer) -> ChatTestClient:
        opened = ChatTestClient(chat.server_address)
        clients.append(opened)
        opened.handshake()
        return opened

    start.client = client
    yield start
    for opened in clients:
        opened.close()
    for chat, thread in started:
        chat.shutdown()
        chat.server_close()
        thread.join(5)


def test_newcomer_gets_the_motd_and_the_last_messages_marked_as_history(server_with):
    chat = server_with(history=2, motd="Welcome to the test.")
    ann = server_with.client(chat)
    ann.join("Ann")
    assert ann.expect(Motd) == Motd("Welcome to the test.")
    for text in ("one", "two", "three"):
        ann.say(text)
    ann.send(UserListRequest())
    ann.expect(UserList)  # the server has handled all three lines

    bob = server_with.client(chat)
    bob.join("Bob")

    assert bob.expect(Motd) == Motd("Welcome to the test.")
    first, second = bob.expect(HistoryMessage), bob.expect(HistoryMessage)
    assert (first.sender, first.text, first.kind) == ("Ann", "two", "chat")
    assert second.text == "three" and second.sent_at > 1_700_000_000
    ann.say("live")
    assert bob.expect(ChatMessage) == ChatMessage("Ann", "live")


def test_history_zero_and_no_motd_send_nothing_extra(server_with):
    chat = server_with(history=0)
    ann = server_with.client(chat)
    ann.join("Ann")
    ann.say("before Bob")
    ann.send(UserListRequest())
    ann.expect(UserList)
    bob = server_with.client(chat)
    bob.join("Bob")
    ann.say("live")
    assert bob.expect(ChatMessage) == ChatMessage("Ann", "live")  # nothing before it
