"""client/ui.py without sockets: commands, the session, how events are shown,
colours and completion."""

from __future__ import annotations

import time

import pytest

from socket_chat import protocol
from socket_chat import tty as terminal
from socket_chat.client import ui as client_ui
from socket_chat.client.receiver import Display
from socket_chat.client.ui import Context, QuitRequested, Session, Style
from socket_chat.protocol import (
    ActionLine,
    ActionMessage,
    ChatLine,
    ChatMessage,
    ErrorNotice,
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
    Welcome,
)

HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31m"


class Recorder:
    """A Context whose effects are kept: what was sent, shown, refused."""

    def __init__(self, session: Session | None = None) -> None:
        self.sent, self.shown, self.errors = [], [], []
        self.context = Context(session or Session("Ann"), self.sent.append, self.shown.append, self.errors.append)

    def run(self, line: str) -> Recorder:
        client_ui.run_line(line, self.context)
        return self


def session_with(*online: str, me: str = "Ann") -> Session:
    session = Session()
    session.observe(Welcome(me))
    session.observe(UserList.of([(name, 0) for name in (me, *online)]))
    return session


# --- commands --------------------------------------------------------------------


def test_plain_line_is_chat_and_blank_line_sends_nothing():
    assert Recorder().run("hello").sent == [ChatLine("hello")]
    assert Recorder().run("   ").sent == []


def test_double_slash_sends_a_line_starting_with_one_slash():
    assert Recorder().run("//etc/passwd is a file").sent == [ChatLine("/etc/passwd is a file")]


def test_unknown_command_is_an_error_and_nothing_is_sent():
    recorder = Recorder().run("/frobnicate now")
    assert recorder.sent == []
    assert recorder.errors == [
        "Unknown command /frobnicate; nothing was sent. Type /help for the commands, "
        "or //frobnicate now to send the line as it is."
    ]


def test_help_has_one_line_per_command_from_the_table():
    shown = Recorder().run("/help").shown
    assert [line.split()[0] for line in shown] == [*client_ui.COMMANDS.names(), "//TEXT", "Alt-Enter"]
    assert all(command.help in line for command, line in zip(client_ui.COMMANDS, shown))


@pytest.mark.parametrize(
    ("line", "sent"),
    [
        ("/msg Bob hi there", PrivateLine("Bob", "hi there")),
        ("/msg randall flagg  hi", PrivateLine("randall flagg", "hi")),  # a name with a space, known online
        ("/me waves", ActionLine("waves")),
        ("/nick Annie", NickRequest("Annie")),
        ("/users", UserListRequest()),
        ("/whois  Ann ", protocol.WhoisRequest("Ann")),
        ("/MSG Bob case does not matter", PrivateLine("Bob", "case does not matter")),
    ],
)
def test_commands_send_typed_messages(line, sent):
    recorder = Recorder(session_with("Bob", "Randall Flagg")).run(line)
    assert recorder.sent == [sent] and recorder.errors == []


@pytest.mark.parametrize("line", ["/msg", "/msg Bob", "/me", "/nick", "/ignore", "/unignore", "/reply", "/whois"])
def test_command_without_its_argument_shows_its_usage(line):
    recorder = Recorder().run(line)
    assert recorder.sent == []
    assert recorder.errors == [f"Usage: {client_ui.COMMANDS.parse(line)[1].usage}"]


def test_reply_answers_the_last_private_sender_even_after_a_rename():
    session = session_with("Bob")
    recorder = Recorder(session)
    assert recorder.run("/reply hi").errors == ["No private message to reply to yet."]

    session.observe(PrivateMessage("Bob", "Ann", "psst"))
    session.observe(PrivateMessage("Ann", "Cat", "my own receipt"))  # not a message to answer
    session.observe(NickChanged("Bob", "Robert"))
    recorder.run("/reply hello back")

    assert recorder.sent == [PrivateLine("Robert", "hello back")]


def test_quit_with_and_without_a_parting_line():
    with pytest.raises(QuitRequested) as quit:
        Recorder().run("/quit good night all")
    assert quit.value.message == "good night all"
    with pytest.raises(QuitRequested) as quit:
        Recorder().run("/quit")
    assert quit.value.message == ""


def test_ignore_hides_messages_of_that_person_only_until_unignored():
    session = session_with("Bob", "Cat")
    recorder = Recorder(session)

    recorder.run("/ignore bob")
    assert recorder.shown == ["* Ignoring bob: their messages are hidden on this client."]
    for event in (
        ChatMessage("Bob", "x"),
        ActionMessage("BOB", "x"),
        PrivateMessage("Bob", "Ann", "x"),
        HistoryMessage("Bob", "x", 0, "chat"),
    ):
        assert not session.shows(event), event
    assert session.shows(ChatMessage("Cat", "x"))
    assert session.shows(UserLeft("Bob"))  # comings and goings still show

    session.observe(NickChanged("Bob", "Robert"))  # a new name does not escape it
    assert not session.shows(ChatMessage("Robert", "x"))
    recorder.run("/unignore robert")
    assert session.shows(ChatMessage("Robert", "x"))


def test_ignore_errors():
    recorder = Recorder(session_with("Bob"))
    recorder.run("/ignore ann")
    recorder.run("/unignore Bob")
    recorder.run("/ignore Bob")
    recorder.run("/ignore bob")
    assert recorder.errors == [
        "You cannot ignore yourself.",
        "You are not ignoring Bob.",
        "You are already ignoring bob.",
    ]


def test_session_follows_names_and_quietly_requested_user_lists():
    session = session_with("Bob")
    session.observe(UserJoined("Cat"))
    session.observe(UserParted("Bob", "bye"))
    session.observe(NickChanged("Ann", "Annie"))
    assert session.names() == ["Annie", "Cat"]
    assert session.is_me("annie")

    session.user_list_requested(show=False)
    session.user_list_requested(show=True)
    assert not session.shows(UserList(""))
    assert session.shows(UserList(""))


# --- how events are shown --------------------------------------------------------


def test_readme_lines_are_unchanged():
    assert client_ui.render(ChatMessage("Jaime Lannister", "Hi")) == ["Jaime Lannister: Hi"]
    assert client_ui.render(UserJoined("Jaime Lannister")) == ["* Jaime Lannister joined the chat."]
    assert client_ui.render(UserLeft("Jaime Lannister")) == ["* Jaime Lannister left the chat."]


def test_new_events_are_shown_distinctly():
    session = session_with("Bob")
    render = lambda event: client_ui.render(event, session)  # noqa: E731
    assert render(ActionMessage("Bob", "waves")) == ["* Bob waves"]
    assert render(PrivateMessage("Bob", "Ann", "psst")) == ["[Bob -> me] psst"]
    assert render(PrivateMessage("Ann", "Bob", "psst")) == ["[me -> Bob] psst"]
    assert render(NickChanged("Bob", "Rob")) == ["* Bob is now known as Rob."]
    assert render(UserParted("Bob", "bye")) == ["* Bob left the chat: bye"]
    assert render(Motd("Hello\nBe nice")) == ["[motd] Hello", "[motd] Be nice"]
    assert render(UserList.of([("Ann", 5), ("Bob", 130)])) == ["* 2 online:", "  Ann (5 s)", "  Bob (2 min)"]
    assert render(Notice("Notice from the operator: hi")) == ["* Notice from the operator: hi"]
    assert render(ErrorNotice("no")) == ["Error: no"]


def test_history_is_marked_with_its_time():
    sent_at = int(time.mktime((2026, 11, 25, 9, 5, 0, 0, 0, -1)))  # 09:05 local time
    assert client_ui.render(HistoryMessage("Bob", "earlier", sent_at, "chat")) == ["[history 09:05] Bob: earlier"]
    assert client_ui.render(HistoryMessage("Bob", "waved", sent_at, "action")) == ["[history 09:05] * Bob waved"]


@pytest.mark.parametrize(
    "event",
    [
        ActionMessage(HOSTILE, HOSTILE),
        PrivateMessage(HOSTILE, HOSTILE, HOSTILE),
        NickChanged(HOSTILE, HOSTILE),
        UserParted(HOSTILE, HOSTILE),
        Motd(HOSTILE + "\n" + HOSTILE),
        UserList.of([(HOSTILE, 1)]),
        HistoryMessage(HOSTILE, HOSTILE, 0, HOSTILE),
        protocol.UserKicked(HOSTILE, HOSTILE),
        protocol.Greeting(HOSTILE, 2, HOSTILE + "\n" + HOSTILE),
        protocol.AwayReply(HOSTILE, HOSTILE),
        UserList.of([(HOSTILE, 1)], {HOSTILE: HOSTILE}),
    ],
    ids=lambda event: type(event).__name__,
)
def test_escape_and_c1_controls_never_reach_the_terminal_in_new_events(event):
    for colour in (False, True):
        for line in client_ui.render(event, session_with(), Style(colour)):
            without_our_colours = line.replace(client_ui.RESET, "")
            for code in (*client_ui.NAME_COLOURS, "33", "35", "31"):
                without_our_colours = without_our_colours.replace(f"\x1b[{code}m", "")
            assert not [ch for ch in without_our_colours if ch == "\x1b" or 0x80 <= ord(ch) <= 0x9F], line


def test_each_name_has_one_colour_in_any_case_and_notices_have_their_own():
    style = Style(colour=True)
    assert client_ui.name_colour("Randall Flagg") == client_ui.name_colour("RANDALL FLAGG")
    assert len({client_ui.name_colour(f"user{n}") for n in range(50)}) > 1
    line = client_ui.render(ChatMessage("Bob", "hi"), style=style)[0]
    assert line == f"\x1b[{client_ui.name_colour('Bob')}mBob{client_ui.RESET}: hi"
    assert client_ui.render(UserJoined("Bob"), style=style) == [f"\x1b[33m* Bob joined the chat.{client_ui.RESET}"]
    assert client_ui.render(PrivateMessage("Bob", "Ann", "x"), style=style)[0].startswith("\x1b[35m")


@pytest.mark.parametrize(
    ("option", "environ", "tty", "wanted"),
    [
        (False, {}, True, True),
        (True, {}, True, False),
        (False, {"NO_COLOR": "1"}, True, False),
        (False, {"NO_COLOR": ""}, True, True),  # no-color.org: set and not empty
        (False, {}, False, False),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(option, environ, tty, wanted):
    assert client_ui.colour_wanted(option, environ, tty) is wanted


def test_timestamps_prefix_each_shown_line(capsys):
    noon = time.mktime((2026, 11, 25, 12, 34, 0, 0, 0, -1))
    display = Display(
        terminal.Terminal(interactive=False), session_with("Bob"), client_ui.PLAIN, timestamps=True, clock=lambda: noon
    )
    display.show_event(ChatMessage("Bob", "hi"))
    display.show_event(UserList.of([("Ann", 1)]))
    assert capsys.readouterr().out == "12:34 Bob: hi\n12:34 * 1 online:\n12:34   Ann (1 s)\n"


# --- completion --------------------------------------------------------------------


NAMES = ["Ann", "Randall Flagg", "randy"]


@pytest.mark.parametrize(
    ("typed", "completions"),
    [
        ("/msg ra", ["/msg Randall Flagg ", "/msg randy "]),
        ("/msg Randall", ["/msg Randall Flagg "]),
        ("/ignore a", ["/ignore Ann "]),
        ("ran", ["Randall Flagg: ", "randy: "]),
        ("Randall F", ["Randall Flagg: "]),
        ("/m", ["/marks ", "/msg ", "/me ", "/mentions ", "/mode "]),
        ("/NI", ["/nick "]),
        ("", []),
        ("hello ra", []),
    ],
)
def test_completion_of_names_and_commands(typed, completions):
    assert client_ui.complete(typed, NAMES) == completions


def test_a_kicked_member_leaves_the_names_known_and_the_kick_is_one_line():
    session = session_with()
    session.observe(UserJoined("Bob"))
    session.observe(protocol.UserKicked("Bob", "flooding"))
    assert "Bob" not in session.names()
    assert client_ui.render(protocol.UserKicked("Bob", "flooding")) == ["* Bob was kicked by the operator: flooding"]
