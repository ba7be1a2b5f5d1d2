"""chat/commands.py: the slash-command table the client and the console share."""

from __future__ import annotations

from socket_chat.chat.commands import Command, CommandTable


def echo(context: list[str], argument: str) -> str:
    context.append(argument)
    return argument


TABLE: CommandTable[list[str], str] = CommandTable(
    [
        Command("/msg", "NAME TEXT", "a private message", echo),
        Command("/quit", "", "leave", echo),
    ]
)


def test_a_typed_line_is_split_into_its_command_and_argument_in_any_case():
    name, command, argument = TABLE.parse("/MSG  Randall Flagg  hello ")
    assert (name, argument) == ("/MSG", "Randall Flagg  hello")
    assert command is not None and command.name == "/msg"
    seen: list[str] = []
    assert command.run(seen, argument) == "Randall Flagg  hello"
    assert seen == ["Randall Flagg  hello"]


def test_an_unknown_command_is_named_as_typed_with_no_command():
    assert TABLE.parse("/frobnicate now") == ("/frobnicate", None, "now")


def test_help_lists_every_row_in_order_in_aligned_columns_then_the_extra_rows():
    assert TABLE.help_lines(extra=[("//TEXT", "send TEXT starting with one /")]) == [
        "/msg NAME TEXT  a private message",
        "/quit           leave",
        "//TEXT          send TEXT starting with one /",
    ]
    assert TABLE.names() == ["/msg", "/quit"]
    assert [command.usage for command in TABLE] == ["/msg NAME TEXT", "/quit"]
