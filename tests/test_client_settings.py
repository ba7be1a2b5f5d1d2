"""The client without a terminal: its settings file, mentions, the bell
command, and how --timestamps dates each line (issue 14)."""

from __future__ import annotations

import pytest

from socket_chat.client import __main__ as client_main
from socket_chat.client import config as client_config
from socket_chat.client import ui as client_ui
from socket_chat.client.receiver import Display
from socket_chat.client.ui import Session, Style
from socket_chat.protocol import ActionMessage, ChatMessage, HistoryMessage, PrivateMessage, Welcome

# --- client.conf -----------------------------------------------------------------------


def write_config(home, text: str) -> dict:
    path = home / "socket-chat" / "client.conf"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return {"XDG_CONFIG_HOME": str(home)}


def test_the_settings_file_gives_the_defaults(tmp_path):
    environ = write_config(
        tmp_path,
        "[client]\nhost = chat.example\nport = 9000\nname = Randall Flagg\n"
        "color = no\ntimestamps = yes\nbell = off\nhistory-file = no\n",
    )
    args = client_main.parse_args([], environ)
    assert (args.host, args.port, args.name) == ("chat.example", 9000, "Randall Flagg")
    assert (args.color, args.timestamps, args.bell, args.history_file) == (False, True, False, False)


def test_the_command_line_wins_over_the_settings_file(tmp_path):
    environ = write_config(tmp_path, "[client]\nport = 9000\ntimestamps = yes\nbell = no\ncolor = no\n")
    args = client_main.parse_args(["--port", "8000", "--no-timestamps", "--bell", "--color"], environ)
    assert (args.port, args.timestamps, args.bell, args.color) == (8000, False, True, True)


def test_without_a_settings_file_the_defaults_are_the_programs(tmp_path):
    args = client_main.parse_args([], {"XDG_CONFIG_HOME": str(tmp_path)})
    assert (args.host, args.port, args.name) == (client_main.DEFAULT_HOST, 8756, None)
    assert (args.color, args.timestamps, args.bell, args.history_file) == (True, False, None, True)


def test_the_settings_file_is_found_under_xdg_config_home_or_dot_config(tmp_path, monkeypatch):
    assert client_config.config_path({"XDG_CONFIG_HOME": "/x"}) == client_config.Path("/x/socket-chat/client.conf")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert client_config.config_path({}) == tmp_path / ".config" / "socket-chat" / "client.conf"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[client]\nport = http\n", "port"),
        ("[client]\ncolour = yes\n", "unknown setting 'colour'"),
        ("[client]\nbell = loud\n", "bell"),
        ("[chat]\nhost = x\n", "unknown section [chat]"),
        ("host = x\n", "Cannot read"),
    ],
)
def test_a_bad_settings_file_is_a_clear_error_naming_it(tmp_path, capsys, text, said):
    environ = write_config(tmp_path, text)
    with pytest.raises(SystemExit) as exit_:
        client_main.parse_args([], environ)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "client.conf" in err and "Traceback" not in err


# --- mentions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("ann: hi", True),
        ("hi @Ann!", True),
        ("ANN", True),
        ("Randall Flagg", False),
        ("Annie is here", False),
        ("banner", False),
        ("", False),
    ],
)
def test_a_mention_is_the_whole_name_in_any_case(text, mentioned):
    assert client_ui.mentions(text, "Ann") is mentioned


def test_a_name_with_spaces_and_symbols_is_mentioned_whole():
    assert client_ui.mentions("ping randall flagg.", "Randall Flagg")
    assert not client_ui.mentions("ping Randall", "Randall Flagg")
    assert client_ui.mentions("see (a+b)?", "(a+b)")  # no pattern inside a name


def session_of(name: str) -> Session:
    session = Session()
    session.observe(Welcome(name))
    return session


def test_what_calls_for_the_person():
    session = session_of("Ann")
    assert session.wants_me(ChatMessage("Bob", "ann, look"))
    assert session.wants_me(ActionMessage("Bob", "waves at Ann"))
    assert session.wants_me(PrivateMessage("Bob", "Ann", "psst"))
    assert not session.wants_me(ChatMessage("Bob", "hello all"))
    assert not session.wants_me(ChatMessage("Ann", "I am Ann"))  # my own line
    assert not session.wants_me(PrivateMessage("Ann", "Bob", "psst"))  # my own receipt
    assert not session.wants_me(HistoryMessage("Bob", "ann", 0, "chat"))  # said before I came


# --- the display ------------------------------------------------------------------------


class RecordingTerminal:
    interactive = True

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bells = 0

    def show(self, line: str) -> None:
        self.lines.append(line)

    def bell(self) -> None:
        self.bells += 1


NOON = 1_764_158_400.0  # a fixed "now"


def display(timestamps: bool = False, bell: bool = True, colour: bool = False) -> Display:
    return Display(
        RecordingTerminal(), session_of("Ann"), Style(colour), timestamps=timestamps, clock=lambda: NOON, bell=bell
    )


def test_a_history_line_has_one_time_when_it_was_said_first_with_timestamps():
    shown = display(timestamps=True)
    said_at = NOON - 3600
    shown.show_event(HistoryMessage("Bob", "earlier", int(said_at), "chat"))
    assert shown.terminal.lines == [f"{client_ui.clock_time(said_at)} [history] Bob: earlier"]


def test_a_history_line_keeps_its_time_in_the_marker_without_timestamps():
    shown = display()
    shown.show_event(HistoryMessage("Bob", "earlier", int(NOON), "chat"))
    assert shown.terminal.lines == [f"[history {client_ui.clock_time(NOON)}] Bob: earlier"]


def test_own_echoed_line_gets_the_time_like_any_other():
    shown = display(timestamps=True)
    shown.show_event(ChatMessage("Ann", "mine"))
    assert shown.terminal.lines == [f"{client_ui.clock_time(NOON)} Ann: mine"]


def test_the_bell_rings_for_a_mention_only_when_on():
    ringing, quiet = display(), display(bell=False)
    for shown in (ringing, quiet):
        shown.show_event(ChatMessage("Bob", "ann?"))
        shown.show_event(ChatMessage("Bob", "anyone?"))
    assert (ringing.terminal.bells, quiet.terminal.bells) == (1, 0)


def test_a_mention_is_highlighted_whole_in_colour():
    shown = display(colour=True)
    shown.show_event(ChatMessage("Bob", "ann?"))
    assert shown.terminal.lines == [f"\x1b[{client_ui.MENTION_HIGHLIGHT}mBob: ann?{client_ui.RESET}"]


def test_the_bell_command_toggles_and_says_so():
    said: list[str] = []
    state = {"on": True}

    def toggle() -> bool:
        state["on"] = not state["on"]
        return state["on"]

    context = client_ui.Context(
        session=Session(), send=lambda m: None, show=said.append, error=said.append, toggle_bell=toggle
    )
    client_ui.run_line("/bell", context)
    client_ui.run_line("/bell", context)
    assert said == ["* The bell is off.", said[1]] and said[1].startswith("* The bell is on")
