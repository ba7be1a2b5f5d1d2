"""The files the chat keeps: the server's identity key and the client's
known hosts, both under one data directory, both readable by their owner
only.

The trust decision (``check_server_key``) lives here too: it is what the
known-hosts file is for. ssh's rules: trust on first use, a pin wins, and a
changed key is refused loudly.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import crypto_utils

__all__ = [
    "KeyStoreError",
    "KeyFileError",
    "ServerKeyRefused",
    "data_dir",
    "load_or_create_identity_key",
    "KnownHosts",
    "check_server_key",
]

log = logging.getLogger("chat.keystore")


class KeyStoreError(Exception):
    """A key or known-hosts file stops the program; the message says why."""


class KeyFileError(KeyStoreError):
    """A key or known-hosts file cannot be used; the message says what to do."""


class ServerKeyRefused(KeyStoreError):
    """The server offered a key other than the one expected (the message
    is the warning to show)."""


def data_dir() -> Path:
    """Where the chat keeps its files: ``$XDG_DATA_HOME/socket-chat``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "socket-chat"


# --- the server's identity key ------------------------------------------------


def load_or_create_identity_key(path: Path) -> crypto_utils.RSA.RsaKey:
    """The server's long-term RSA key: read from ``path``, or made and saved
    there (mode 0600) on first run.

    Raises:
        KeyFileError: cannot be read or written, not a key, or readable by others.
    """
    try:
        if path.exists():
            return _read_identity_key(path)
        log.info("Making a new %d-bit server key (first run; this takes a few seconds)", crypto_utils.RSA_KEY_BITS)
        key = crypto_utils.generate_rsa_keypair()
        _write_private_file(path, crypto_utils.export_private_key(key))
        log.info("Created a new server key at %s", path)
        return key
    except OSError as exc:
        raise KeyFileError(f"Cannot use the server key file {path}: {exc.strerror or exc}") from None


def _read_identity_key(path: Path) -> crypto_utils.RSA.RsaKey:
    if not path.is_file():
        raise KeyFileError(f"The server key {path} is not a file.")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"Permissions {stat.S_IMODE(mode):04o} for {path} are too open: "
            f"the key must be readable by its owner only. Run: chmod 600 {path}"
        )
    try:
        return crypto_utils.import_private_key(path.read_bytes())
    except crypto_utils.KeyFormatError as exc:
        raise KeyFileError(f"Cannot read the server key {path}: {exc}") from None


def _write_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL with mode 0600: the file is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# --- known hosts: trust on first use, as ssh does ----------------------------


class KnownHosts:
    """The file of servers seen before: one ``HOST:PORT SHA256:...`` a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, host_id: str) -> str | None:
        """The fingerprint recorded for ``host_id``, or None.

        Raises:
            KeyFileError: the file exists but cannot be read.
        """
        for line_host, fingerprint in self._entries():
            if line_host == host_id:
                return fingerprint
        return None

    def remember(self, host_id: str, fingerprint: str) -> None:
        """Record (or replace) the fingerprint for ``host_id``."""
        kept = [f"{h} {f}\n" for h, f in self._entries() if h != host_id]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines([*kept, f"{host_id} {fingerprint}\n"])
        os.replace(temporary, self.path)

    def _entries(self) -> list[tuple[str, str]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"Cannot read the known hosts file {self.path}: {exc}") from None
        return [(words[0], words[1]) for words in map(str.split, lines) if len(words) == 2]


def check_server_key(known: KnownHosts, server: str, offered: str, pinned: str | None) -> str | None:
    """Decide whether to trust the key the server offered.

    A pin (``--fingerprint``) wins over the file, and a key that matches the
    pin is recorded in the file.

    Returns:
        A line to show the person (a key seen for the first time), or None.

    Raises:
        ServerKeyRefused: the key is not the one pinned or recorded.
        KeyFileError: the known hosts file cannot be read.
    """
    if pinned is not None:
        if not crypto_utils.fingerprints_equal(pinned, offered):
            raise ServerKeyRefused(_mismatch_warning(server, pinned, offered, "--fingerprint"))
        if known.lookup(server) != offered:
            known.remember(server, offered)
        return None
    recorded = known.lookup(server)
    if recorded is None:
        known.remember(server, offered)
        return (
            f"The server's key fingerprint is {offered}.\n"
            f"Check it with the server's operator. It is now recorded in {known.path}."
        )
    if not crypto_utils.fingerprints_equal(recorded, offered):
        raise ServerKeyRefused(_mismatch_warning(server, recorded, offered, str(known.path)))
    return None


def _mismatch_warning(server: str, expected: str, offered: str, source: str) -> str:
    bar = "@" * 62
    return "\n".join(
        [
            bar,
            "@    WARNING: THE SERVER'S IDENTITY KEY HAS CHANGED!          @",
            bar,
            "Someone may be intercepting this connection (a man-in-the-middle attack),",
            "or the server's operator may have replaced its key.",
            f"Server:               {server}",
            f"Expected fingerprint: {expected} (from {source})",
            f"Offered fingerprint:  {offered}",
            "The connection was refused; nothing was sent.",
            "Ask the server's operator for the fingerprint it prints when it starts.",
            "If it is the offered one, connect once with --fingerprint followed by it",
            "to record it in place of the old one.",
        ]
    )
