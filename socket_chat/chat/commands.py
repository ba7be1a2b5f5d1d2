"""Slash-command tables, as both the client and the operator console have
them (the model is ssh-chat's): one row a command, and ``/help`` made from
the rows.

A command runs with a context of its table's choosing (the client's
``client.ui.Context``, the server's ``server.console.OperatorConsole``) and the
rest of the typed line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Command", "CommandTable"]

Context = TypeVar("Context")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Command(Generic[Context, Result]):
    """One row of a table: ``/help`` prints ``usage  help``."""

    name: str  # with its slash: "/msg"
    arguments: str  # as shown in help: "NAME TEXT"
    help: str
    run: Callable[[Context, str], Result]

    @property
    def usage(self) -> str:
        return f"{self.name} {self.arguments}".strip()


class CommandTable(Generic[Context, Result]):
    """The commands of one program, in the order ``/help`` lists them."""

    def __init__(self, commands: Iterable[Command[Context, Result]]) -> None:
        self._commands = {command.name: command for command in commands}

    def __iter__(self) -> Iterator[Command[Context, Result]]:
        return iter(self._commands.values())

    def names(self) -> list[str]:
        return list(self._commands)

    def parse(self, line: str) -> tuple[str, Command[Context, Result] | None, str]:
        """Split a typed ``/name argument`` line: the name as typed, its
        command (None if there is none of that name, in any case) and the
        argument, stripped."""
        name, _, argument = line.strip().partition(" ")
        return name, self._commands.get(name.lower()), argument.strip()

    def help_lines(self, extra: Iterable[tuple[str, str]] = ()) -> list[str]:
        """One line per command, then the ``extra`` (usage, help) rows, in
        aligned columns: for ``/help`` and ``--help`` alike."""
        rows = [(command.usage, command.help) for command in self] + list(extra)
        width = max(len(usage) for usage, _ in rows)
        return [f"{usage:<{width}}  {text}" for usage, text in rows]
