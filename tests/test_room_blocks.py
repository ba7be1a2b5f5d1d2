"""Multi-line messages in rooms (issue 21, parts 2 and 3 where they meet): a
block said in a room has the lobby's rules (its line limit, one flood token
a line), reaches the members who take blocks whole and the others one
message a line under its one ID, stays whole in the room's history and
store, and the client sends it as one RoomLine and shows it indented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.chat.limits import Limits
from socket_chat.chat.room import Room
from socket_chat.chat.rooms import Rooms, room_key
from socket_chat.client import ui as client_ui
from socket_chat.client.rooms import RoomState, render_room
from socket_chat.protocol import RoomHistoryLine, RoomLine, RoomMessage
from socket_chat.server.store import SqliteStore
from tests.conftest import open_door_limits, start_server, stop_server
from tests.helpers import ChatTestClient
from tests.test_client_ui import Recorder
from tests.test_member import STRICT, errors
from tests.test_rooms import Kept, Member, of

pytestmark = pytest.mark.timeout(30)

NOW = 1_764_100_000
BLOCK = "first line\n\n  third, indented"
FREE = Limits(rate=0)


def member(rooms: Rooms, name: str, multiline: bool, limits: Limits = FREE, echo: bool = False) -> Member:
    """Someone in the lobby who took rooms (and blocks, if ``multiline``),
    in ``#dev``; what its join brought is in ``welcome``."""
    person = Member(rooms._lobby, limits, rooms=rooms)
    person.session.start()
    person.send(protocol.Rooms(), *([protocol.Multiline()] if multiline else []))
    if echo:
        person.send(protocol.EchoOwnLines())
    person.send(protocol.Username(name))
    person.welcome = person.request("join", "#dev")
    return person


def quiet(*people: Member) -> None:
    for person in people:
        person.heard()


@pytest.fixture
def rooms() -> Rooms:
    return Rooms(Room(history_size=0), history_size=5, clock=lambda: float(NOW))


# --- the server's rules, with no socket ----------------------------------------------------


def test_a_room_block_reaches_those_who_take_blocks_whole_and_the_others_a_line_a_message(rooms):
    ann = member(rooms, "Ann", multiline=True, echo=True)
    bob = member(rooms, "Bob", multiline=True)
    old = member(rooms, "Old", multiline=False)  # a room-taking client on a pipe
    quiet(ann, bob, old)
    whole = RoomMessage("#dev", "1", NOW, "chat", "Ann", BLOCK)
    assert ann.say("#dev", BLOCK) == [whole]  # the echo: whole
    ann.say("#dev", "after")
    assert bob.heard() == [whole, RoomMessage("#dev", "2", NOW, "chat", "Ann", "after")]
    assert old.heard() == [  # the block's lines under its one ID, nothing between them
        *(RoomMessage("#dev", "1", NOW, "chat", "Ann", line) for line in BLOCK.split("\n")),
        RoomMessage("#dev", "2", NOW, "chat", "Ann", "after"),
    ]
    assert ann.session.membership is not None and ann.session.membership.multiline


def test_a_newcomer_gets_a_block_of_the_rooms_history_whole_or_a_line_a_message(rooms):
    ann = member(rooms, "Ann", multiline=True)
    ann.say("#dev", BLOCK)
    new = of(member(rooms, "New", multiline=True).welcome, RoomHistoryLine)
    assert new == [RoomHistoryLine("#dev", "1", NOW, "chat", "Ann", BLOCK)]
    older = of(member(rooms, "Older", multiline=False).welcome, RoomHistoryLine)
    assert older == [RoomHistoryLine("#dev", "1", NOW, "chat", "Ann", line) for line in BLOCK.split("\n")]


def test_a_room_block_over_the_line_limit_is_refused_whole_as_in_the_lobby(rooms):
    ann = member(rooms, "Ann", multiline=True, limits=Limits(rate=0, max_lines=3))
    bob = member(rooms, "Bob", multiline=True)
    quiet(ann, bob)
    assert errors(ann.say("#dev", "1\n2\n3\n4")) == ["The message was not sent: it has 4 lines, and the limit is 3."]
    assert bob.heard() == []
    ann.say("#dev", "1\n2\n3")
    assert [m.text for m in bob.heard()] == ["1\n2\n3"]


def test_flood_control_charges_a_room_block_a_token_a_line_and_an_action_one(rooms):
    ann = member(rooms, "Ann", multiline=True, limits=STRICT)  # 3 at once, then 1 a second; the join took 1
    quiet(ann)
    refused = errors(ann.say("#dev", "a\nb\nc"))
    assert refused[0].startswith('Slow down: the message of 3 lines from "a" was not sent (each line counts')
    ann.clock.advance(1.0)  # the bucket is full again: 3 tokens
    assert errors(ann.say("#dev", "a\nb\nc")) == []
    assert errors(ann.say("#dev", "d"))[0].startswith('Slow down: "d" was not sent.')
    ann.clock.advance(1.0)  # one token: a block of two would wait for two
    assert errors(ann.say("#dev", "waves\nagain", kind="action")) == []  # no block: it costs one
    assert errors(ann.say("#dev", "e"))[0].endswith("wait 1.0 s.")  # and no more: the bucket is at zero


def test_an_action_with_lf_is_no_block_and_a_block_from_a_client_that_takes_none_is_one(rooms):
    """As in the lobby: any client may send a block; an action stays one line."""
    old = member(rooms, "Old", multiline=False, echo=True)
    bob = member(rooms, "Bob", multiline=False)
    quiet(old, bob)
    assert old.say("#dev", "waves\nhi", kind="action") == [RoomMessage("#dev", "1", NOW, "action", "Old", "waves\nhi")]
    bob.heard()
    old.say("#dev", "x\ny")
    assert bob.heard() == [RoomMessage("#dev", "2", NOW, "chat", "Old", t) for t in ("x", "y")]


def test_the_rooms_store_keeps_a_block_whole_for_the_room_made_again():
    store = Kept()
    rooms = Rooms(Room(history_size=0), history_size=5, store=store, clock=lambda: float(NOW))
    ann = member(rooms, "Ann", multiline=True)
    ann.say("#dev", BLOCK)
    ann.request("part", "#dev")
    assert [line.text for line in store.lines[room_key("#dev")]] == [BLOCK]
    heard = ann.request("join", "#dev")
    assert of(heard, RoomHistoryLine) == [RoomHistoryLine("#dev", "1", NOW, "chat", "Ann", BLOCK)]


def test_the_room_block_vectors_are_protocol_mds():
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vectors = dict(re.findall(r"^(room_block_\w+) = ([0-9a-f]+)$", spec, re.MULTILINE))
    messages = {
        "room_block_line": RoomLine("#dev", "chat", "first line\nsecond line"),
        "room_block_message": RoomMessage("#dev", "7", NOW, "chat", "alice", "first line\nsecond line"),
        "room_block_piece_1": RoomMessage("#dev", "7", NOW, "chat", "alice", "first line"),
        "room_block_piece_2": RoomMessage("#dev", "7", NOW, "chat", "alice", "second line"),
    }
    assert sorted(vectors) == sorted(messages)
    for name, message in messages.items():
        assert protocol.encode_message(message).hex() == vectors[name], name
        assert protocol.decode_message(bytes.fromhex(vectors[name])) == message


# --- the client ----------------------------------------------------------------------------


def in_room(multiline: bool = True) -> Recorder:
    session = client_ui.Session("Ann")
    session.multiline = multiline
    session.rooms.entered("#dev")  # as its Joined does
    assert session.rooms.current == "#dev"
    return Recorder(session)


def test_a_block_typed_in_a_room_is_one_room_line():
    assert in_room().run("\nfirst\n  second\n").sent == [RoomLine("#dev", "chat", "first\n  second")]
    assert in_room().run("//etc\nhosts").sent == [RoomLine("#dev", "chat", "/etc\nhosts")]
    assert in_room(multiline=False).run("first\n/me waves").sent == [
        RoomLine("#dev", "chat", "first"),
        RoomLine("#dev", "action", "waves"),
    ]


def test_a_room_block_is_shown_once_its_later_lines_under_the_first_ones_text():
    rooms = RoomState()
    rooms.always_named = True  # as off a terminal: the room's name first
    plain = lambda text: text  # noqa: E731
    [shown] = render_room(RoomMessage("#dev", "1", NOW, "chat", "alice", "first\nsecond"), rooms, *[plain] * 3)
    assert shown == "[#dev] alice: first\n              second"
    [kept] = render_room(RoomHistoryLine("#dev", "1", NOW, "chat", "bob", "a\n\x1b[2Jb"), rooms, *[plain] * 3)
    first, second = kept.split("\n")
    assert first == "[#dev history] bob: a"
    assert second == " " * len("[#dev history] bob: ") + "\N{REPLACEMENT CHARACTER}[2Jb"  # no escape, and indented


# --- over loopback ----------------------------------------------------------------------------


def room_lines(client: ChatTestClient, count: int) -> list[RoomMessage]:
    """The next ``count`` RoomMessages, past the lobby's and the room's news
    (joins) that may come before them: nothing else comes between them."""
    lines: list[RoomMessage] = []
    while len(lines) < count:
        event = client.next_event()
        if lines:
            assert isinstance(event, RoomMessage), event
        if isinstance(event, RoomMessage):
            lines.append(event)
    return lines


def test_a_room_block_over_loopback_whole_to_one_a_line_a_message_to_another_kept_whole(identity_key, tmp_path):
    store = SqliteStore.open(tmp_path / "history.db")
    server, thread = start_server(identity_key, limits=open_door_limits(), store=store)
    clients: list[ChatTestClient] = []
    try:
        for name, multiline in (("Ann", True), ("Bob", True), ("Old", False)):
            client = ChatTestClient(server.server_address)
            clients.append(client)
            client.handshake(multiline=multiline, rooms=True)
            client.join(name)
            client.send(protocol.RoomRequest("join", "#dev", ""))
            client.expect(protocol.Joined)
        ann, bob, old = clients
        ann.send(RoomLine("#dev", "chat", BLOCK))
        ann.send(RoomLine("#dev", "chat", "after"))
        said = room_lines(bob, 2)
        assert [(m.id, m.sender, m.text) for m in said] == [("1", "Ann", BLOCK), ("2", "Ann", "after")]
        pieces = room_lines(old, 4)
        assert [(m.id, m.text) for m in pieces] == [("1", t) for t in BLOCK.split("\n")] + [("2", "after")]
        assert store.flush(5.0)
        assert [line.text for line in store.room_recent(room_key("#dev"), 5)] == [BLOCK, "after"]
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)
        store.close()
