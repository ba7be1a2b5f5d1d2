"""client/rooms.py and the room commands, without a server: where typed
lines go, the prompt, switching, unread counts and mentions, the status
line, and how room lines are shown on a terminal and on a pipe."""

from __future__ import annotations

from socket_chat import protocol
from socket_chat.client import ui as client_ui
from socket_chat.client.receiver import Display
from socket_chat.client.rooms import RoomState
from socket_chat.client.ui import PLAIN, Session
from tests.test_client_ui import HOSTILE, Recorder


class Screen:
    """A Terminal that keeps the lines shown."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.lines: list[str] = []

    def show(self, line: str) -> None:
        self.lines.append(line)

    def bell(self) -> None:
        pass


def in_rooms(*rooms: str) -> Session:
    session = Session("Ann")
    session.rooms.offered = True
    for room in rooms:
        session.rooms.entered(room)
    return session


def test_without_the_servers_offer_room_commands_say_so_and_lines_go_to_the_lobby():
    recorder = Recorder().run("/join #dev")
    assert recorder.sent == [] and recorder.errors == [client_ui.NO_ROOMS]
    assert Recorder().run("hello").run("/me waves").sent == [protocol.ChatLine("hello"), protocol.ActionLine("waves")]
    assert Recorder().run("/who").sent == [protocol.UserListRequest()]  # /users, as in the lobby


def test_lines_go_to_the_current_room_and_the_prompt_names_it():
    session = in_rooms("#dev")
    assert session.rooms.prompt() == "#dev> "
    recorder = Recorder(session).run("hello").run("/me waves").run("//tmp")
    assert recorder.sent == [
        protocol.RoomLine("#dev", "chat", "hello"),
        protocol.RoomLine("#dev", "action", "waves"),
        protocol.RoomLine("#dev", "chat", "/tmp"),
    ]
    session.rooms.go(None)
    assert session.rooms.prompt() == "> "  # the lobby's, as before rooms
    assert Recorder(session).run("hi all").sent == [protocol.ChatLine("hi all")]


def test_room_commands_name_a_room_or_take_the_current_one():
    session = in_rooms("#dev")
    sent = Recorder(session).run("/join ops").run("/topic #ci the build").run("/who")
    sent.run("/mode +i").run("/invite Randall Flagg").run("/invite Bob #ci").run("/rooms").run("/part bye all")
    assert sent.sent == [
        protocol.RoomRequest("join", "#ops", ""),  # the # is added
        protocol.RoomRequest("topic", "#ci", "the build"),
        protocol.RoomRequest("who", "#dev", ""),
        protocol.RoomRequest("mode", "#dev", "+i"),
        protocol.RoomRequest("invite", "#dev", "Randall Flagg"),
        protocol.RoomRequest("invite", "#ci", "Bob"),
        protocol.RoomRequest("rooms", "", ""),
        protocol.RoomRequest("part", "#dev", "bye all"),
    ]
    assert session.rooms.current is None  # the /part of the current room: the lobby's at once
    lobby = in_rooms()
    refused = Recorder(lobby).run("/part").run("/mode +i")
    assert refused.sent == [] and refused.errors == [
        "The lobby is not left: /part leaves a room, /quit the chat.",
        client_ui.IN_THE_LOBBY,
    ]


def test_join_of_a_room_joined_switches_to_it_as_alt_n_and_ctrl_n_do():
    session = in_rooms("#dev", "#ops")
    assert session.rooms.current == "#ops"  # the last joined
    recorder = Recorder(session).run("/join #DEV")
    assert recorder.sent == [] and recorder.shown == ["* Now in #dev."]
    rooms = session.rooms
    assert rooms.switch("1") and rooms.current is None  # Alt-1: the lobby
    assert rooms.switch("previous") and rooms.current == "#ops"  # Ctrl-P from the lobby: the last room
    assert rooms.switch("next") and rooms.current is None
    assert not rooms.switch("9")
    assert not RoomState().switch("next")  # in the lobby alone: nothing to switch to


def test_unread_lines_and_mentions_are_counted_for_the_other_rooms_and_cleared_on_switching():
    rooms = in_rooms("#dev", "#ops").rooms
    assert RoomState().status() == ""  # the lobby alone: no status line
    rooms.note("#dev", "Bob", "build is green", "Ann")
    rooms.note("#dev", "Bob", "ann: look", "Ann")
    rooms.note(None, "Cy", "Ann?", "Ann")
    rooms.note("#ops", "Bob", "here", "Ann")  # the current room: read
    assert rooms.status() == "1 lobby: 1 new, 1 mention | 2 #dev: 2 new, 1 mention | 3 #ops (here)"
    rooms.switch("2")
    assert rooms.status() == "1 lobby: 1 new, 1 mention | 2 #dev (here) | 3 #ops"
    rooms.left("#dev")
    assert rooms.joined() == ["#ops"]


def test_room_lines_are_named_unless_current_and_always_on_a_pipe():
    for interactive, current_named in ((True, False), (False, True)):
        session = in_rooms("#ops", "#dev")
        session.rooms.always_named = not interactive  # as make_display sets it
        screen = Screen(interactive)
        display = Display(screen, session, PLAIN)
        display.show_event(protocol.RoomMessage("#dev", "4", 1764100000, "chat", "Bob", "here"))
        display.show_event(protocol.RoomMessage("#ops", "9", 1764100000, "action", "Bob", "waves"))
        display.show_event(protocol.ChatMessage("Cy", "in the lobby"))
        assert screen.lines == [
            "[#dev] Bob: here" if current_named else "Bob: here",
            "[#ops] * Bob waves",
            "[lobby] Cy: in the lobby",
        ]
        assert not any("\x1b" in line for line in screen.lines)


def test_room_messages_are_shown_as_lines_with_no_escape_codes():
    rooms = in_rooms("#dev").rooms

    def shown(event) -> list[str]:
        session = in_rooms()
        session.rooms = rooms
        return client_ui.render(event, session, PLAIN)

    assert shown(protocol.Joined("#dev", "the build", 2, "Ann\nBob")) == [
        "* You are in #dev (topic: the build): 2 here: Ann, Bob."
    ]
    assert shown(protocol.RoomNotice("#dev", "Bob joined #dev.")) == ["* [#dev] Bob joined #dev."]
    assert shown(protocol.Parted("#dev", "The operator closed #dev.")) == [
        "* You are no longer in #dev: The operator closed #dev."
    ]
    assert shown(protocol.RoomList.of([("#dev", 2, "the build"), ("#ops", 1, "")])) == [
        "* 2 rooms:",
        "*   #dev (2): the build",
        "*   #ops (1)",
    ]
    assert shown(protocol.RoomMembers("#dev", "Ann\nBob")) == ["* In #dev (2): Ann, Bob"]
    assert shown(protocol.RoomHistoryLine("#dev", "3", 1764100000, "chat", "Bob", "earlier")) == [
        "[#dev history] Bob: earlier"
    ]
    hostile = shown(protocol.RoomMessage(HOSTILE, "1", 0, "chat", HOSTILE, HOSTILE))[0]
    assert "\x1b" not in hostile and "\x9b" not in hostile
