"""server/console.py: the operator console's commands against a real server on
loopback and against a fake of its ``ServerControls``, and when the console
runs at all."""

from __future__ import annotations

import os
import threading

import pytest

from socket_chat.protocol import Away, Goodbye, Notice, UserJoined, UserKicked, UserList, UserListRequest
from socket_chat.server import app as server
from socket_chat.server.console import ConsoleQuit, OperatorConsole, console_wanted, run_console
from tests.helpers import ChatTestClient


def test_console_kick_tells_the_member_why_and_the_others(running_server, connect):
    alice, bob = connect("Alice"), connect("Bob")
    alice.expect(UserJoined)
    operator = OperatorConsole(running_server)

    assert operator.execute("/kick bob spamming") == ["Kicked bob."]

    assert bob.expect(Goodbye) == Goodbye("You were kicked by the operator: spamming")
    bob.wait_closed()
    assert alice.expect(UserKicked) == UserKicked("Bob", "spamming")
    alice.send(UserListRequest())  # answered after anything else the kick made: there is nothing
    assert alice.expect(UserList).members()[0][0] == "Alice"


def test_console_kick_without_a_reason_and_of_an_unknown_name(running_server, connect):
    bob = connect("Bob")
    operator = OperatorConsole(running_server)
    assert operator.execute("/kick Nobody") == ["No one called Nobody is online."]
    assert operator.execute("/kick") == ["Usage: /kick NAME [REASON], or /kick #ROOM NAME [REASON]"]
    operator.execute("/kick Bob")
    assert bob.expect(Goodbye) == Goodbye("You were kicked by the operator.")


def test_console_say_users_help_and_unknown(running_server, connect):
    alice, bob = connect("Alice"), connect("Bob")
    alice.expect(UserJoined)
    operator = OperatorConsole(running_server)

    assert operator.execute("/say maintenance at noon") == ["Notice sent."]
    for client in (alice, bob):
        assert client.expect(Notice) == Notice("Notice from the operator: maintenance at noon")
    shown = operator.execute("/users")
    assert shown[0] == "2 online:" and shown[1].startswith("  Alice (") and shown[2].startswith("  Bob (")
    assert [line.split()[0] for line in operator.execute("/help")] == [
        "/help",
        "/users",
        "/kick",
        "/ban",
        "/unban",
        "/bans",
        "/release",
        "/say",
        "/close",
        "/reload",
        "/invite",
        "/forget",
        "/quit",
    ]
    assert operator.execute("/frobnicate") == ["Unknown command /frobnicate. Type /help for the commands."]
    assert operator.execute("   ") == []
    with pytest.raises(ConsoleQuit):
        operator.execute("/quit")


def test_console_users_shows_who_is_away(running_server, connect):
    connect("Alice")
    bob = connect("Bob")
    bob.send(Away("lunch"))
    assert bob.expect(Notice) == Notice("You are marked as away: lunch")
    shown = OperatorConsole(running_server).execute("/users")
    assert shown[1].startswith("  Alice (") and shown[1].endswith(" s)")
    assert shown[2].startswith("  Bob (") and shown[2].endswith(" s, away: lunch)")


def test_console_quit_stops_the_server(identity_key, capsys):
    chat = server.ChatServer(identity_key, "127.0.0.1", 0)
    serving = threading.Thread(target=chat.serve_forever, daemon=True)
    serving.start()
    lines = iter(["/users", "/quit"])
    try:
        run_console(OperatorConsole(chat), read_line=lambda: next(lines))
        serving.join(5)
        assert not serving.is_alive()
    finally:
        chat.shutdown()
        chat.server_close()
    assert "No one is online." in capsys.readouterr().out


class FakeStdin:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def fileno(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("tty", "terminal_group", "wanted"),
    [
        (False, None, False),
        (True, "ours", True),
        (True, "another", False),  # started with & from a shell: reading would stop the server
        (True, OSError, True),  # a terminal that is not the controlling one: no job control
    ],
)
def test_console_only_on_a_terminal_in_the_foreground(monkeypatch, tty, terminal_group, wanted):
    def tcgetpgrp(fd):
        if terminal_group is OSError:
            raise OSError("not a controlling terminal")
        return 4242 if terminal_group == "ours" else 4343

    monkeypatch.setattr(os, "tcgetpgrp", tcgetpgrp)
    monkeypatch.setattr(os, "getpgrp", lambda: 4242)
    assert console_wanted(FakeStdin(tty)) is wanted


def test_console_ends_without_stopping_the_server_when_its_terminal_fails(running_server, capsys):
    def read_line():
        raise OSError(5, "Input/output error")

    run_console(OperatorConsole(running_server), read_line)

    client = ChatTestClient(running_server.server_address)  # still serving
    try:
        client.handshake()
        client.join("Alice")
    finally:
        client.close()


class FakeControls:
    """console.ServerControls with no server behind it: members here and
    on other servers of a cluster, and what the console asked for."""

    def __init__(self, here: list[str], elsewhere: list[str], away: dict[str, str]) -> None:
        self.here, self.elsewhere, self.away = here, elsewhere, away
        self.kicked: list[tuple[str, str]] = []
        self.notices: list[str] = []
        self.stopped = False

    def who(self) -> list[tuple[str, int]]:
        return [(name, 60) for name in sorted(self.here + self.elsewhere, key=str.casefold)]

    def away_messages(self) -> dict[str, str]:
        return self.away

    def names(self) -> list[str]:
        return self.here

    def locate(self, name: str) -> str | None:
        return next((held for held in self.elsewhere if held.casefold() == name.casefold()), None)

    def kick(self, name: str, reason: str = "", by: str = "the console") -> bool:
        self.kicked.append((name, reason))
        return name.casefold() in [held.casefold() for held in self.here]

    def notify_all(self, text: str, by: str = "the console") -> None:
        self.notices.append(text)

    def ban(self, target: str, seconds: int | None, reason: str, by: str = "the console", by_key=None) -> list[str]:
        return [f"ban {target!r} {seconds} {reason!r} by {by}"]

    def unban(self, target: str, by: str = "the console") -> list[str]:
        return [f"unban {target!r}"]

    def ban_lines(self) -> list[str]:
        return ["No one is banned."]

    def release(self, name: str, by: str = "the console") -> list[str]:
        return [f"released {name}"]

    def guests(self) -> set[str]:
        return {"carol"}

    def reload_allow_list(self) -> list[str]:
        return ["reloaded"]

    def invite(self, fingerprint: str, name: str | None = None, comment: str = "") -> list[str]:
        return [f"invited {fingerprint} {name} {comment!r}"]

    def shutdown(self) -> None:
        self.stopped = True


def test_the_console_asks_only_its_server_controls(capsys):
    controls = FakeControls(here=["Alice", "Bo Jo"], elsewhere=["carol"], away={"Alice": "lunch", "carol": ""})
    operator = OperatorConsole(controls)

    assert operator.execute("/users") == [
        "3 online:",
        "  Alice (1 min, away: lunch)",
        "  Bo Jo (1 min)",
        "  carol (guest) (1 min, away)",
    ]
    assert operator.execute("/kick bo jo flooding") == ["Kicked bo jo."]  # a name with a space, any case
    assert operator.execute("/kick CAROL") == ["CAROL is on another server of the cluster: kick them there."]
    assert controls.kicked == [("bo jo", "flooding"), ("CAROL", "")]
    assert operator.execute("/say back at noon") == ["Notice sent."] and controls.notices == ["back at noon"]
    run_console(operator, read_line=iter(["/quit"]).__next__)
    assert controls.stopped


def test_ban_reads_a_name_with_spaces_a_key_or_an_address_then_a_duration_then_a_reason():
    controls = FakeControls(here=["Alice", "Bo Jo"], elsewhere=[], away={})
    operator = OperatorConsole(controls)
    fingerprint = "SHA256:" + "A" * 43
    banned = operator.execute("/ban bo jo 2h flooding the room")
    assert banned == ["ban 'bo jo' 7200 'flooding the room' by the console"]
    assert operator.execute(f"/ban {fingerprint} 7d") == [f"ban '{fingerprint}' 604800 '' by the console"]
    assert operator.execute("/ban 203.0.113.0/24 spam") == ["ban '203.0.113.0/24' None 'spam' by the console"]
    assert operator.execute("/ban Alice 10m") == ["ban 'Alice' 600 '' by the console"]
    assert operator.execute("/ban Alice 2 hours") == ["ban 'Alice' None '2 hours' by the console"]  # not a duration
    assert operator.execute("/ban") == ["Usage: /ban NAME|FINGERPRINT|ADDRESS [DURATION] [REASON]"]
    assert operator.execute("/unban  Alice ") == ["unban 'Alice'"]
    assert operator.execute("/bans") == ["No one is banned."]
    as_alice = OperatorConsole(controls, actor=f"Alice ({fingerprint})", actor_key=fingerprint)
    assert as_alice.run_operator("ban", "Bo Jo") == [f"ban 'Bo Jo' None '' by Alice ({fingerprint})"]
    assert as_alice.run_operator("quit", "") == ["There is no operator command /quit."]  # the console's own
    assert as_alice.run_operator("reload", "") == ["There is no operator command /reload."]
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB alice@laptop"
    assert operator.execute(f"/invite {pub}") == ["invited ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB None 'alice@laptop'"]
