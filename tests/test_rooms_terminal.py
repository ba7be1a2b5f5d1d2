"""Rooms at a terminal (a pty): the prompt names the current room, the
status line below it counts what is unread and the mentions, Alt-N
switches, and what is typed goes to the current room."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from tests.test_rooms_live import in_rooms
from tests.test_terminal import expect_event, join_at_terminal, open_pty  # noqa: F401 (fixture)
from tests.test_terminal_ux import RESTART_HOST, servers  # noqa: F401 (a fixture)


def below_prompt(shown: str):
    """A screen whose row after the cursor's (the status line) is ``shown``."""
    return lambda rows, cursor: len(rows) > cursor[0] + 1 and rows[cursor[0] + 1].strip() == shown


def test_the_prompt_and_the_status_line_follow_the_rooms(running_server, open_pty):
    bob = in_rooms(running_server, "Bob")
    try:
        bob.send(protocol.RoomRequest("join", "#dev", ""))
        bob.expect(protocol.Joined)
        pty = open_pty(running_server.server_address[1])
        join_at_terminal(pty, "Ann")  # the lobby's prompt, and no status line: as before rooms
        pty.type_line("/join #dev")
        pty.expect_input("#dev> ")
        pty.expect_screen(below_prompt("1 lobby | 2 #dev (here)"), what="the status line in #dev")
        pty.type_line("/join #ops")
        pty.expect_input("#ops> ")
        expect_event(bob, protocol.RoomNotice("#dev", "Ann joined #dev."))

        bob.send(protocol.RoomLine("#dev", "chat", "hi Ann"))  # not the current room: named, unread, a mention
        pty.expect(b"[#dev] ")
        pty.expect_screen(
            below_prompt("1 lobby | 2 #dev: 1 new, 1 mention | 3 #ops (here)"), what="the unread line counted"
        )
        pty.write(b"\x1b2")  # Alt-2: #dev
        pty.expect_input("#dev> ")
        pty.expect_screen(below_prompt("1 lobby | 2 #dev (here) | 3 #ops"), what="#dev read")
        pty.type_line("hello")
        said = expect_event_of(bob, protocol.RoomMessage)
        assert (said.room, said.sender, said.text) == ("#dev", "Ann", "hello")
    finally:
        bob.close()


def expect_event_of(client, kind):
    while not isinstance(event := client.next_event(), kind):
        pass
    return event


@pytest.mark.slow  # about 3 s: the client waits a second or two before it connects again
def test_after_a_restart_the_client_joins_its_rooms_again(servers, open_pty):
    first = servers()
    port = first.server_address[1]
    pty = open_pty(port, "--host", RESTART_HOST)
    join_at_terminal(pty, "Ann")
    pty.type_line("/join #dev")
    pty.expect_input("#dev> ")
    servers.stop(first)
    pty.expect(b"Reconnecting")
    second = servers(port=port)
    pty.expect(b"* Reconnected as Ann.", timeout=15)
    pty.expect(b"* You are in #dev: 1 here: Ann.")
    pty.expect_input("#dev> ")
    bob = in_rooms(second, "Bob")
    try:
        bob.send(protocol.RoomRequest("join", "#dev", ""))
        assert bob.expect(protocol.Joined) == protocol.Joined("#dev", "", 2, "Ann\nBob")
    finally:
        bob.close()
