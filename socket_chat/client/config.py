"""The client's settings file, and where its input history file is.

``client.conf`` (``$XDG_CONFIG_HOME/socket-chat/client.conf``, INI, read
with configparser) gives defaults for the command line; an option given on
the command line wins. The history file keeps the lines typed, for recall with the arrow keys,
across runs (the terminal reads and writes it: ``tty.Terminal.load_history``).
"""

from __future__ import annotations

import argparse
import configparser
import os
from collections.abc import Mapping
from pathlib import Path

from socket_chat import cli

__all__ = ["ConfigError", "config_path", "read_config", "history_path", "identity_path", "IDENTITY_FILE"]

#: The person's identity key in the data directory, made on first use.
IDENTITY_FILE = "identity_key.pem"

SECTION = "client"
#: What the file may set, and how its text is read: the value is the default
#: of the command-line option with the same ``dest``.
BOOLEANS = {"color", "timestamps", "ids", "bell", "reconnect", "history_file", "mark_guests"}
TEXTS = {"host", "name", "identity"}  # argparse reads a text default with the option's type
NUMBERS = {"port"}


class ConfigError(Exception):
    """The settings file cannot be used; the message says where and why."""


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/socket-chat/client.conf`` (``~/.config`` when unset)."""
    base = environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "socket-chat" / "client.conf"


def read_config(path: Path) -> dict[str, object]:
    """The defaults the file at ``path`` sets, by option ``dest`` (none if
    there is no file). Unknown names and bad values are errors, so that a
    typing mistake is not silently ignored.

    Raises:
        ConfigError: the file cannot be read or holds what is not a setting.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None
    unknown_sections = [name for name in parser.sections() if name != SECTION]
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section [{unknown_sections[0]}]; the settings go under [{SECTION}]")
    if not parser.has_section(SECTION):
        return {}
    return {key.replace("-", "_"): _value(path, parser[SECTION], key) for key in parser[SECTION]}


def _value(path: Path, section: configparser.SectionProxy, key: str) -> object:
    dest = key.replace("-", "_")
    try:
        if dest in BOOLEANS:
            return section.getboolean(key)
        if dest in NUMBERS:
            return cli.port_number(section[key])
        if dest in TEXTS:
            return section[key]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None
    known = ", ".join(sorted(name.replace("_", "-") for name in BOOLEANS | TEXTS | NUMBERS))
    raise ConfigError(f"{path}: unknown setting {key!r}; known: {known}")


def history_path(data_dir: Path) -> Path:
    """Where the lines typed are kept between runs."""
    return data_dir / "history"


def identity_path(chosen: Path | None, data_dir: Path) -> Path:
    """The identity key's file: the one chosen (``--identity``), or
    ``IDENTITY_FILE`` in the data directory."""
    return chosen if chosen is not None else data_dir / IDENTITY_FILE
