"""The welcome (who you are, who else is here) and /away, /back: on a real
ChatServer on loopback with protocol-level clients, on two servers of a
cluster, and as the client shows them. Every read has a timeout."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from socket_chat.chat.member import MAX_AWAY_LENGTH
from socket_chat.chat.room import USER_LIST_BYTES, Room, user_list_messages
from socket_chat.client import ui as client_ui
from socket_chat.protocol import (
    GREETING_NAMES,
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    ErrorNotice,
    Greeting,
    Motd,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    UserJoined,
    UserList,
    UserListRequest,
    Username,
    Welcome,
)
from socket_chat.server import cluster
from tests.conftest import start_server, stop_server
from tests.helpers import ChatTestClient
from tests.test_cluster import cluster_of  # noqa: F401 (a fixture)
from tests.test_cluster_entries import commands_run
from tests.test_room import FakeMember


def barrier(client) -> UserList:
    """The user list: everything sent to ``client`` before it has arrived."""
    client.send(UserListRequest())
    return client.expect(UserList)


# --- the welcome -------------------------------------------------------------


def test_a_newcomer_is_told_who_they_are_and_who_else_is_here_before_the_motd(identity_key):
    chat, thread = start_server(identity_key, motd="Be nice.")
    clients = []
    try:
        for name in ("Ann", "bob"):
            clients.append(ChatTestClient(chat.server_address))
            clients[-1].handshake()
            clients[-1].join(name)
        assert clients[0].greeting == Greeting("Ann", 0, "")
        carol = ChatTestClient(chat.server_address)
        clients.append(carol)
        carol.handshake()
        carol.send(Username("Carol"))
        assert carol.expect(Welcome) == Welcome("Carol")
        assert carol.expect(Greeting) == Greeting("Carol", 2, "Ann\nbob")
        assert carol.expect(Motd) == Motd("Be nice.")
    finally:
        for client in clients:
            client.close()
        stop_server(chat, thread)


def test_the_greeting_lists_a_few_names_and_counts_everyone_in_a_big_room():
    room = Room()
    for n in range(GREETING_NAMES + 5):
        FakeMember().join(room, f"member {n:02d}")
    newcomer = FakeMember()
    newcomer.join(room, "Newcomer")

    greeting = newcomer.inbox[1]
    assert greeting.others == GREETING_NAMES + 5
    assert greeting.listed() == [f"member {n:02d}" for n in range(GREETING_NAMES)]
    assert client_ui.render(greeting) == [
        "* You are Newcomer. 15 others here: "
        + ", ".join(f"member {n:02d}" for n in range(GREETING_NAMES - 1))
        + ", member 09 and 5 others."
    ]


@pytest.mark.parametrize(
    ("greeting", "shown"),
    [
        (Greeting("Randall Flagg", 0, ""), "* You are Randall Flagg. No one else is here yet."),
        (Greeting("Randall Flagg", 1, "Ann"), "* You are Randall Flagg. 1 other here: Ann."),
        (
            Greeting("Randall Flagg", 3, "Ann\nJaime Lannister\nZoë"),
            "* You are Randall Flagg. 3 others here: Ann, Jaime Lannister and Zoë.",
        ),
        (
            Greeting("Randall Flagg", 3000, "A\nB\nC\nD"),
            "* You are Randall Flagg. 3,000 others here: A, B, C, D and 2,996 others.",
        ),
        (Greeting("Ann\x1b[2J", 1, "Bob\u202e"), "* You are Ann\ufffd[2J. 1 other here: Bob\ufffd."),
    ],
    ids=["alone", "one", "three", "big-room", "controls"],
)
def test_the_client_shows_the_greeting_on_one_line(greeting, shown):
    assert client_ui.render(greeting) == [shown]


def test_the_greeting_of_a_cluster_counts_the_people_of_every_server(cluster_of):
    a, b = cluster_of(2)
    a.client("alice")
    bob = b.client("bob")
    assert bob.greeting == Greeting("bob", 1, "alice")


# --- /away and /back ---------------------------------------------------------


@pytest.fixture
def ann_and_bob(connect):
    ann, bob = connect("Ann"), connect("Bob")
    assert ann.expect(UserJoined) == UserJoined("Bob")
    return ann, bob


def test_away_is_shown_in_the_user_list_and_answers_private_lines(ann_and_bob):
    ann, bob = ann_and_bob
    bob.send(Away("  gone\tfishing \n back at 3 "))
    assert bob.expect(Notice) == Notice("You are marked as away: gone fishing back at 3")

    assert barrier(ann).away() == {"Bob": "gone fishing back at 3"}
    ann.send(PrivateLine("bob", "are you there?"))
    assert ann.expect(PrivateMessage) == PrivateMessage("Ann", "Bob", "are you there?")
    assert ann.expect(AwayReply) == AwayReply("Bob", "gone fishing back at 3")
    assert bob.expect(PrivateMessage) == PrivateMessage("Ann", "Bob", "are you there?")  # still delivered

    bob.send(Back())
    assert bob.expect(Notice) == Notice("You are back: no longer marked as away.")
    assert barrier(ann).away() == {}
    ann.send(PrivateLine("Bob", "welcome back"))
    assert ann.expect(PrivateMessage) == PrivateMessage("Ann", "Bob", "welcome back")
    assert barrier(ann).away() == {}  # and no AwayReply before it


def test_away_without_a_message_and_back_when_not_away(ann_and_bob):
    ann, bob = ann_and_bob
    bob.send(Back())
    assert bob.expect(Notice) == Notice("You are not marked as away.")
    bob.send(Away(""))
    assert bob.expect(Notice) == Notice("You are marked as away.")
    assert barrier(ann).away() == {"Bob": ""}
    ann.send(PrivateLine("Bob", "hi"))
    ann.expect(PrivateMessage)
    assert ann.expect(AwayReply) == AwayReply("Bob", "")
    assert client_ui.render(AwayReply("Bob", "")) == ["* Bob is away."]


def test_speaking_to_everyone_ends_away_but_a_private_line_does_not(ann_and_bob):
    ann, bob = ann_and_bob
    bob.send(Away("lunch"))
    bob.expect(Notice)
    bob.send(PrivateLine("Ann", "brb"))
    bob.expect(PrivateMessage)
    ann.expect(PrivateMessage)
    assert barrier(ann).away() == {"Bob": "lunch"}

    bob.send(ChatLine("I'm back"))
    assert bob.expect(Notice) == Notice("You are back: no longer marked as away.")
    ann.expect(ChatMessage)
    assert barrier(ann).away() == {}


def test_an_away_message_too_long_is_refused(ann_and_bob):
    ann, bob = ann_and_bob
    bob.send(Away("x" * (MAX_AWAY_LENGTH + 1)))
    assert bob.expect(ErrorNotice).text.startswith(f"An away message may be {MAX_AWAY_LENGTH} characters")
    assert barrier(ann).away() == {}


def test_away_follows_a_rename(ann_and_bob):
    ann, bob = ann_and_bob
    bob.send(Away("lunch"))
    bob.expect(Notice)
    bob.send(NickRequest("Robert"))
    assert ann.expect(NickChanged) == NickChanged("Bob", "Robert")
    assert barrier(ann).away() == {"Robert": "lunch"}


def test_away_works_across_the_servers_of_a_cluster(cluster_of):
    a, b = cluster_of(2)
    alice = a.client("alice")
    bob = b.client("bob")
    assert alice.expect(UserJoined) == UserJoined("bob")
    bob.send(Away("in a meeting"))
    assert bob.expect(Notice) == Notice("You are marked as away: in a meeting")

    assert barrier(alice).away() == {"bob": "in a meeting"}
    alice.send(PrivateLine("BOB", "ping"))
    assert alice.expect(PrivateMessage) == PrivateMessage("alice", "bob", "ping")
    assert alice.expect(AwayReply) == AwayReply("bob", "in a meeting")
    assert bob.expect(PrivateMessage) == PrivateMessage("alice", "bob", "ping")

    bob.send(Back())
    bob.expect(Notice)
    assert barrier(alice).away() == {}
    bob.send(Away("again"))
    bob.expect(Notice)
    bob.close()  # leaving takes the away message with the name
    newcomer = b.client("Bob")
    assert barrier(newcomer).away() == {}


# --- the client's commands ---------------------------------------------------


def test_the_client_sends_away_and_back_and_lists_them_in_help():
    sent = []
    ctx = client_ui.Context(client_ui.Session("Ann"), sent.append, print, print)
    client_ui.run_line("/away gone fishing", ctx)
    client_ui.run_line("/away", ctx)
    client_ui.run_line("/back", ctx)
    assert sent == [Away("gone fishing"), Away(""), Back()]
    assert any(line.startswith("/away [MESSAGE]") for line in client_ui.help_lines())
    assert any(line.startswith("/back ") for line in client_ui.help_lines())


def test_the_client_shows_away_members_in_the_user_list():
    listed = UserList.of([("Ann", 30), ("Bob", 600), ("Cy", 5)], {"Bob": "lunch", "Cy": ""})
    assert client_ui.render(listed) == [
        "* 3 online:",
        "  Ann (30 s)",
        "  Bob (10 min, away: lunch)",
        "  Cy (5 s, away)",
    ]


def test_a_greeting_in_a_cluster_reads_no_names_when_a_recent_list_will_do(redis_server, monkeypatch):
    monkeypatch.setattr(cluster, "MEMBERS_CACHE_SECONDS", 60.0)  # "recent", however slow the machine
    shared = cluster.RedisCluster.connect(redis_server.url)
    try:
        assert shared.members() == []  # one SCAN
        scans = commands_run(redis_server, "scan")
        assert shared.claim("Ann")  # someone joined: /users reads again, a greeting need not
        assert shared.members(recent=True) == []
        assert commands_run(redis_server, "scan") == scans
        assert [name for name, _ in shared.members()] == ["Ann"]
        assert commands_run(redis_server, "scan") == scans + 1
    finally:
        shared.close()


def test_away_messages_count_towards_the_size_of_a_user_list():
    members = [(f"member {n:03d}", n) for n in range(400)]
    away = {name: "x" * MAX_AWAY_LENGTH for name, _ in members}

    user_list, notice = user_list_messages(members, away)

    listed = user_list.members()
    assert 0 < len(listed) < 400 and listed == members[: len(listed)]
    assert user_list.away() == {name: away[name] for name, _ in listed}
    assert len(protocol.encode_message(user_list)) <= USER_LIST_BYTES + 16
    assert notice == Notice(f"...and {400 - len(listed)} more: too many to list.")
