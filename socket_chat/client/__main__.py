"""The client's command line: ``python -m socket_chat.client``, the same
program as ``socket-chat`` and ``python client.py`` (``--help`` for the
options). ``parse_args`` reads the options (``client.conf`` gives their
defaults), ``main`` runs the client (``session.run``) on the terminal.

The main thread reads what the person types and sends it; a receiver
thread reads the socket and prints. What a typed line means is
``client.ui``'s business, the printing ``socket_chat.tty``'s, the check of
the server's key ``crypto.keystore``'s. Everything that came over the
network passes ``presentation.printable_text`` before it reaches the
terminal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from socket_chat import cli, crypto
from socket_chat.client import config as client_config
from socket_chat.client import ui as client_ui
from socket_chat.client.link import FINGERPRINT_PATTERN, ClientError
from socket_chat.client.receiver import Display
from socket_chat.client.session import run
from socket_chat.client.ui import Session, Style
from socket_chat.crypto import keystore
from socket_chat.tty import Terminal

__all__ = ["main", "parse_args"]

DEFAULT_HOST = "127.0.0.1"


def fingerprint_text(text: str) -> str:
    """argparse type: a fingerprint as the server prints it."""
    if not FINGERPRINT_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fingerprint: expected SHA256: and 43 base64 characters, as the server prints it"
        )
    return text


#: The options with a --no- form (the settings file may turn them either way).
ON_OFF_OPTIONS = (
    ("--color", True, "colours on a terminal (--no-color: none; also none when NO_COLOR is set, or off a terminal)"),
    ("--timestamps", False, "start each line shown with the time, HH:MM (the server's, for lines that carry one)"),
    ("--ids", False, "start each line from the server with its message ID (#42), to ask the operator to /forget it"),
    ("--bell", None, "ring the bell when you are mentioned or sent a private message (default: on a terminal)"),
    ("--mark-guests", False, "show NAME (guest): TEXT for each line from a guest (no key); /marks turns it on or off"),
    ("--reconnect", True, "on a terminal, when the connection is lost or the server restarts, connect again"),
    ("--history-file", True, "keep the lines typed for the next run, in $XDG_DATA_HOME/socket-chat/history (0600)"),
)


def parse_args(argv: list[str] | None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """The options: client.conf gives the defaults, the command line wins."""
    parser = argparse.ArgumentParser(description="Encrypted terminal group chat: the client.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default: {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=cli.port_number, default=cli.DEFAULT_PORT, help=f"server port (default: {cli.DEFAULT_PORT})"
    )
    parser.add_argument("--name", help="join with this username instead of being asked")
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256:...",
        type=fingerprint_text,
        help="the server key fingerprint to insist on, even on the first connection",
    )
    parser.add_argument(
        "--accept-new",
        action="store_true",
        help="record a server key seen for the first time without asking (as without a terminal)",
    )
    parser.add_argument(
        "--known-hosts",
        type=Path,
        default=None,
        help="file of trusted server keys (default: $XDG_DATA_HOME/socket-chat/known_hosts)",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"your identity key (Ed25519), made on first use (default: $XDG_DATA_HOME/socket-chat/"
        f"{client_config.IDENTITY_FILE}); the server knows you by it",
    )
    parser.add_argument(
        "--print-identity",
        action="store_true",
        help="print your identity key's fingerprint (making the key if there is none), to give to "
        "a server's operator, and exit",
    )
    parser.add_argument(
        "--keep-tickets",
        action="store_true",
        help="keep the server's resumption tickets for the next run, in $XDG_DATA_HOME/socket-chat/"
        "tickets (0600), so that it reconnects without the server's RSA; without it they live in memory only",
    )
    for option, default, meaning in ON_OFF_OPTIONS:
        parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default, help=meaning)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the command lines as they are
    path = client_config.config_path(environ)
    parser.epilog = (
        f"settings file: {path} ([client]: host, port, name, identity, color, timestamps, ids, bell,"
        " reconnect, history-file, mark-guests)\n"
        "commands in the chat:\n" + "\n".join(f"  {line}" for line in client_ui.help_lines(operator=True))
    )
    cli.add_version(parser)
    try:
        parser.set_defaults(**client_config.read_config(path))
    except client_config.ConfigError as exc:
        parser.error(str(exc))
    return parser.parse_args(argv)


def make_display(args: argparse.Namespace, terminal: Terminal) -> Display:
    """How events are shown, as the options and the terminal ask."""
    on_terminal = sys.stdout.isatty()
    colour = client_ui.colour_wanted(not args.color, os.environ, on_terminal)
    bell = on_terminal if args.bell is None else args.bell and on_terminal
    session = Session()
    session.mark_guests = args.mark_guests
    # Off a terminal, every room line has its room's name first (no status line to tell).
    session.rooms.always_named = not terminal.interactive
    terminal.enable_rooms(session.rooms.switch, session.rooms.prompt, session.rooms.status)
    return Display(terminal, session, Style(colour), timestamps=args.timestamps, bell=bell, ids=args.ids)


def print_identity(args: argparse.Namespace) -> int:
    """``--print-identity``: the key's fingerprint, and where it is (made
    now if there was none); never the key itself.

    Raises:
        keystore.KeyStoreError: the key file cannot be read, made or trusted.
    """
    path = client_config.identity_path(args.identity, keystore.data_dir())
    key, made = keystore.load_or_create_person_key(path)
    print(key.fingerprint)
    print(f"{'A new identity key was made at' if made else 'Your identity key is'} {path} ({crypto.KEY_TYPE}).")
    print("Give the fingerprint above to the server's operator; keep the file to yourself.")
    return 0


def _terminated(signum, frame) -> None:
    # kill's SIGTERM: leave through main's ``finally``, which puts the
    # terminal's modes back (its echo is off while no line is read).
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the client with the options ``argv`` (the command line's if
    None); the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    terminal = Terminal(interactive=sys.stdin.isatty(), hide_typing=True)
    history = client_config.history_path(keystore.data_dir()) if args.history_file else None
    try:
        if args.print_identity:
            return print_identity(args)
        terminal.load_history(history)
        return run(args, make_display(args, terminal))
    except (ClientError, keystore.KeyStoreError) as exc:
        terminal.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the chat began: leave quietly
    finally:
        terminal.restore()
        terminal.save_history(history)


if __name__ == "__main__":
    sys.argv[0] = "python -m socket_chat.client"  # for --help and --version, as Python 3.14's argparse says it
    sys.exit(main())
