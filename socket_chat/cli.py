"""What the two programs' command lines share: the version, the default
port, and the argument types both use."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from socket_chat import __version__

__all__ = ["__version__", "DEFAULT_PORT", "add_version", "port_number", "positive"]


DEFAULT_PORT = 8756

Number = TypeVar("Number", int, float)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and the chat's version."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (socket-chat) {__version__}")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def positive(kind: Callable[[str], Number], name: str) -> Callable[[str], Number]:
    """argparse type: a number of ``kind`` above zero (``name`` is the option)."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be more than 0")
        return value

    return parse
