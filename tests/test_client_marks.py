"""The client's side of people (client/ui.py, client/receiver.py): guest
marks with each line (--mark-guests, /marks), kept current on joins and
renames, and the /device commands."""

from __future__ import annotations

import types

from socket_chat import tty as terminal
from socket_chat.client import ui as client_ui
from socket_chat.client.__main__ import make_display, parse_args
from socket_chat.client.receiver import Display
from socket_chat.client.session import take_back_name
from socket_chat.client.ui import Session
from socket_chat.protocol import (
    ActionMessage,
    ChatMessage,
    DeviceAdd,
    DeviceList,
    DeviceListRequest,
    DeviceRemove,
    ErrorNotice,
    NickChanged,
    UserJoined,
    UserLeft,
    UserList,
    Welcome,
)
from tests.test_client_ui import Recorder

FINGERPRINT = "SHA256:" + "A" * 43
SSH_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA phone"


def marking_session() -> Session:
    session = Session()
    session.mark_guests = True
    session.observe(Welcome("Ann"))
    session.observe(UserList.of([("Ann", 0), ("bob", 3), ("Cy", 4)], guests={"bob"}))
    return session


def shown(event, session: Session) -> list[str]:
    return client_ui.render(event, session)


def test_with_marks_a_guests_lines_carry_the_mark_and_a_keyed_persons_do_not():
    session = marking_session()
    assert shown(ChatMessage("bob", "hi"), session) == ["bob (guest): hi"]
    assert shown(ActionMessage("BOB", "waves"), session) == ["* BOB (guest) waves"]
    assert shown(ChatMessage("Cy", "hi"), session) == ["Cy: hi"]
    session.mark_guests = False
    assert shown(ChatMessage("bob", "hi"), session) == ["bob: hi"]  # off by default, as the original showed


def test_the_mark_follows_a_rename_and_is_dropped_when_the_guest_leaves():
    session = marking_session()
    session.observe(NickChanged("bob", "Robert"))
    assert shown(ChatMessage("Robert", "hi"), session) == ["Robert (guest): hi"]
    session.observe(UserLeft("Robert"))
    session.observe(NickChanged("Cy", "Robert"))  # a person with a key takes the name since
    assert shown(ChatMessage("Robert", "hi"), session) == ["Robert: hi"]


def test_a_join_asks_quietly_who_the_newcomer_is_once_until_answered(capsys):
    session = marking_session()
    display = Display(terminal.Terminal(interactive=False), session, client_ui.PLAIN)
    asked: list[str] = []
    display.ask_user_list = lambda: asked.append("list")
    display.show_event(UserJoined("Dee"))
    display.show_event(UserJoined("Eve"))  # one question in flight is enough
    assert asked == ["list"]
    display.show_event(UserList.of([("Ann", 0), ("Dee", 1), ("Eve", 1)], guests={"Eve"}))  # not shown
    display.show_event(ChatMessage("Eve", "hello"))
    display.show_event(ChatMessage("Dee", "hi"))
    assert capsys.readouterr().out == "* Dee joined the chat.\n* Eve joined the chat.\nEve (guest): hello\nDee: hi\n"
    display.show_event(UserJoined("Fay"))
    display.show_event(ErrorNotice(client_ui.LIST_REFUSED + " You can send 10 messages at once..."))
    assert capsys.readouterr().out == "* Fay joined the chat.\n"  # the refusal of a quiet list is not shown
    display.show_event(UserJoined("Gil"))
    assert asked == ["list", "list", "list"]  # and the next join asks again


def reconnected(display: Display) -> None:
    """take_back_name on a server that welcomes at once."""
    assert take_back_name(types.SimpleNamespace(next_event=lambda: Welcome("Ann")), display, "Ann")


def test_a_quiet_list_asked_of_the_last_server_does_not_hide_the_first_users_after_a_reconnect(capsys):
    session = marking_session()
    display = Display(terminal.Terminal(interactive=False), session, client_ui.PLAIN)
    asked: list[str] = []
    display.ask_user_list = lambda: asked.append("list")
    display.show_event(UserJoined("Dee"))  # a quiet list asked; the server goes before it answers
    reconnected(display)
    display.show_event(UserJoined("Eve"))
    assert asked == ["list", "list"]  # the guest marks are asked for again
    display.show_event(UserList.of([("Ann", 0), ("Eve", 1)], guests={"Eve"}))  # its answer: quiet
    session.user_list_requested(show=True)  # /users
    display.show_event(UserList.of([("Ann", 0), ("Eve", 1)], guests={"Eve"}))
    assert "Eve (guest)" in capsys.readouterr().out.split("* Eve joined the chat.\n")[1]


def test_a_quiet_list_that_could_not_be_sent_is_not_waited_for(capsys):
    session = marking_session()
    display = Display(terminal.Terminal(interactive=False), session, client_ui.PLAIN)

    def lost() -> None:
        raise OSError("connection reset")

    display.ask_user_list = lost
    display.show_event(UserJoined("Dee"))
    assert session.guests_unknown()  # nothing on its way: the next join asks again
    session.user_list_requested(show=True)  # /users
    capsys.readouterr()
    display.show_event(UserList.of([("Ann", 0), ("Dee", 1)]))
    assert "Dee" in capsys.readouterr().out


def test_a_reconnect_forgets_where_the_last_servers_history_stood():
    session = marking_session()
    display = Display(terminal.Terminal(interactive=False), session, client_ui.PLAIN)
    session.oldest_id, session.at_beginning = "500", True
    reconnected(display)
    assert (session.oldest_id, session.at_beginning) == (None, False)  # the new server's IDs may start again


def test_without_marks_a_join_asks_nothing():
    session = marking_session()
    session.mark_guests = False
    display = Display(terminal.Terminal(interactive=False), session, client_ui.PLAIN)
    display.ask_user_list = lambda: (_ for _ in ()).throw(AssertionError("asked"))
    display.show_event(UserJoined("Dee"))


def test_marks_command_and_option():
    recorder = Recorder(Session("Ann"))
    recorder.run("/marks on")
    assert recorder.context.session.mark_guests and recorder.shown[-1].startswith("* Guest marks are on")
    recorder.run("/marks")
    assert not recorder.context.session.mark_guests and recorder.shown[-1] == "* Guest marks are off."
    recorder.run("/marks maybe")
    assert recorder.errors == ["Usage: /marks [on|off]"]
    terminal_ = terminal.Terminal(interactive=False)
    assert make_display(parse_args(["--mark-guests"], environ={}), terminal_).session.mark_guests
    assert not make_display(parse_args([], environ={}), terminal_).session.mark_guests


def test_device_commands_send_their_requests_and_a_list_is_shown():
    recorder = Recorder()
    recorder.run(f"/device add {SSH_LINE}").run(f"/device remove  {FINGERPRINT}").run("/device list")
    assert recorder.sent == [DeviceAdd(SSH_LINE), DeviceRemove(FINGERPRINT), DeviceListRequest()]
    for wrong in ("/device", "/device add", "/device list x", "/device forget x"):
        recorder.run(wrong)
    assert recorder.errors == ["Usage: /device list|add|remove [KEY]"] * 4
    [line] = shown(DeviceList.of(FINGERPRINT, [("SHA256:" + "B" * 43, 0)]), Session())
    assert line.startswith(f"* Devices of {FINGERPRINT}: SHA256:{'B' * 43} (since 19")
    assert shown(DeviceList(FINGERPRINT, ""), Session()) == [f"* {FINGERPRINT} has no devices."]
