"""Rooms over loopback: three clients, one of them older (it does not take
the offer of rooms, and stays in the lobby exactly as before); the
operator's close; each room's lines kept in the store across a restart."""

from __future__ import annotations

from socket_chat import protocol
from socket_chat.chat.history import Line
from socket_chat.chat.member import ROOMS_NOT_ASKED
from socket_chat.chat.rooms import room_key
from socket_chat.protocol import ChatMessage, ErrorNotice, RoomLine, RoomRequest, UserJoined
from socket_chat.server.console import OperatorConsole
from tests.helpers import DEADLINE, ChatTestClient
from tests.test_bans import (  # noqa: F401 (fixtures)
    BOB,
    OPERATOR,
    clock,
    operator_says,
    operators_path,
    ops_server,
)
from tests.test_store import opened  # noqa: F401 (a fixture)


def in_rooms(server, name: str) -> ChatTestClient:
    client = ChatTestClient(server.server_address)
    client.handshake(rooms=True)
    client.join(name)
    return client


def test_three_clients_rooms_beside_the_lobby_and_an_older_client_sees_only_the_lobby(running_server, connect):
    ann = in_rooms(running_server, "Ann")
    bob = in_rooms(running_server, "Bob")
    old = connect("Old")  # an older client: it passed the offer over
    try:
        assert ann.expect(UserJoined) == UserJoined("Bob")
        ann.expect(UserJoined), bob.expect(UserJoined)  # Old
        ann.send(RoomRequest("join", "#dev", ""))
        assert ann.expect(protocol.Joined) == protocol.Joined("#dev", "", 1, "Ann")
        bob.send(RoomRequest("join", "#DEV", ""))
        assert bob.expect(protocol.Joined) == protocol.Joined("#dev", "", 2, "Ann\nBob")
        assert ann.expect(protocol.RoomNotice) == protocol.RoomNotice("#dev", "Bob joined #dev.")

        bob.send(RoomLine("#dev", "chat", "in the room"))
        said = ann.expect(protocol.RoomMessage)
        assert (said.room, said.id, said.sender, said.text) == ("#dev", "1", "Bob", "in the room")
        old.say("in the lobby")  # the lobby as it was: to everyone, rooms or not
        assert ann.expect(ChatMessage) == bob.expect(ChatMessage) == ChatMessage("Old", "in the lobby")
        ann.say("marker")
        assert bob.expect(ChatMessage) == ChatMessage("Ann", "marker")
        assert old.events_until(ChatMessage("Ann", "marker")) == []  # nothing of #dev reached Old

        old.send(RoomRequest("join", "#dev", ""))  # a client that did not take the offer
        assert old.expect(ErrorNotice) == ErrorNotice(ROOMS_NOT_ASKED)

        ann.send(RoomRequest("rooms", "", ""))
        assert ann.expect(protocol.RoomList).rooms() == [("#dev", 2, "")]
        console = OperatorConsole(running_server)
        assert console.execute("/kick #dev Bob spam") == ["Bob was kicked from #dev."]
        assert bob.expect(protocol.Parted) == protocol.Parted("#dev", "You were kicked from #dev by the operator: spam")
        assert ann.expect(protocol.RoomNotice).text == "Bob was kicked from #dev by the operator: spam"
        bob.send(RoomRequest("join", "#dev", ""))  # still in the chat, and may come back
        bob.expect(protocol.Joined), ann.expect(protocol.RoomNotice)
        assert console.execute("/close #dev done") == ["#dev is closed (2 people were in it)."]
        assert [type(e) for e in bob.events_until(protocol.Parted("#dev", "The operator closed #dev: done"))] == [
            protocol.RoomHistoryLine  # Bob's line, from his coming back
        ]
        assert ann.expect(protocol.Parted) == protocol.Parted("#dev", "The operator closed #dev: done")
        assert console.execute("/close #dev") == ["There is no room #dev."]
    finally:
        ann.close(), bob.close()


def test_a_rooms_lines_are_stored_by_room_and_read_back_after_a_restart(opened, tmp_path):
    store = opened()
    store.keep_room(room_key("#dev"), Line(1, 1764100000, "chat", "Ann", "one"))
    store.keep_room(room_key("#dev"), Line(2, 1764100001, "action", "Ann", "waves"))
    store.keep_room(room_key("#ops"), Line(1, 1764100002, "chat", "Bob", "elsewhere"))
    assert store.flush(DEADLINE)
    store.close()
    again = opened()  # the same file
    assert again.room_recent(room_key("#DEV"), 10) == [
        Line(1, 1764100000, "chat", "Ann", "one"),
        Line(2, 1764100001, "action", "Ann", "waves"),
    ]
    assert again.room_recent(room_key("#dev"), 1) == [Line(2, 1764100001, "action", "Ann", "waves")]
    assert again.recent(10) == []  # the lobby's history holds none of them


def test_an_operator_closes_a_room_and_kicks_from_one_from_their_own_client(ops_server):
    server, clients = ops_server
    ann = ChatTestClient(server.server_address)
    clients.append(ann)
    ann.handshake(OPERATOR, rooms=True)
    ann.join("Ann")
    ann.expect(protocol.OperatorStatus)
    bob = ChatTestClient(server.server_address)
    clients.append(bob)
    bob.handshake(BOB, rooms=True)
    bob.join("Bob")
    bob.send(RoomRequest("join", "#ops", ""))
    assert bob.expect(protocol.Joined).room == "#ops"
    assert operator_says(ann, "kick", "#ops Bob off topic")[-1] == "Bob was kicked from #ops."
    assert bob.expect(protocol.Parted) == protocol.Parted(
        "#ops", "You were kicked from #ops by the operator: off topic"
    )
    bob.send(RoomRequest("join", "#ops", ""))
    bob.expect(protocol.Joined)
    assert operator_says(ann, "close", "#ops")[-1] == "#ops is closed (1 person was in it)."
    assert bob.expect(protocol.Parted) == protocol.Parted("#ops", "The operator closed #ops.")
    assert operator_says(bob, "close", "#ops") == ["Only the server's operators may use /close; nothing was done."]
