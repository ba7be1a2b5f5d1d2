"""The files the chat keeps: the server's identity key, a person's
identity key (the client's) and the client's known hosts, all under one
data directory, all readable by their owner only.

The trust decision lives here too: it is what the known-hosts file is for.
ssh's rules: a key seen for the first time is recorded only once the server
has proved it holds it (and, on a terminal, the person has accepted it), a
pin wins, and a changed key is refused loudly.

Both files, and every directory above them up to the home directory, are
checked as ssh's StrictModes checks them: owned by the user (or root) and
writable by no one else. Otherwise whoever could write there could swap the
key or the list of trusted keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from socket_chat import crypto as crypto_utils

__all__ = [
    "KeyStoreError",
    "KeyFileError",
    "ServerKeyRefused",
    "data_dir",
    "check_safe_path",
    "create_private_file",
    "replace_file",
    "load_or_create_identity_key",
    "load_or_create_person_key",
    "KnownHosts",
    "KeyCheck",
    "check_server_key",
    "record_server_key",
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


# --- StrictModes: who may change the files ------------------------------------


def check_safe_path(path: Path, what: str, *, private: bool = False, uid: int | None = None) -> None:
    """Refuse ``path`` if someone other than the user (or root) could change
    it: the file (if it exists) and every directory above it, up to the home
    directory (or to ``/`` for a path outside it), must be owned by the user
    or root and writable by no one else (others, or a group but the user's
    own). ``private``: the file must not be readable by others either (a
    private key).

    One exception, for ``/tmp`` and the like: a directory above the file's
    own that is root's and sticky, since there others may add entries but
    not replace the user's.

    Raises:
        KeyFileError: naming the path at fault and the ``chmod`` that fixes it.
    """
    try:
        _check_safe_path(Path(os.path.abspath(path)), what, private, os.geteuid() if uid is None else uid)
    except OSError as exc:
        raise KeyFileError(f"Cannot check the {what} {path}: {exc.strerror or exc}") from None


def _check_safe_path(path: Path, what: str, private: bool, uid: int) -> None:
    if path.exists():
        path = path.resolve()  # a link: what counts is the file it leads to, and its directories
        _check_file(path, what, private, uid)
    home = _home()
    directory = path.parent
    while not directory.exists():
        directory = directory.parent  # not made yet: it will be, inside the first that exists
    own_directory = directory == path.parent
    while True:
        _check_directory(directory, path, what, uid, sticky_allowed=not own_directory)
        if directory == home or directory.parent == directory:
            return
        directory, own_directory = directory.parent, False


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (KeyError, RuntimeError):  # no home directory for this user
        return None


def _writable_by_others(info: os.stat_result, uid: int) -> bool:
    """Writable by others, or by a group that is not the user's own."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        return True
    return bool(mode & stat.S_IWGRP) and not _is_private_group(info.st_gid, uid)


def _is_private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is the user's own group: their primary group, named
    as they are, with no one else in it. With a umask of 002 (the usual one
    where each user has such a group) directories are group-writable, and
    that lets no one else in; Debian's OpenSSH allows it for the same reason."""
    try:
        import grp
        import pwd
    except ImportError:  # not a Unix with users and groups
        return False
    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _check_file(path: Path, what: str, private: bool, uid: int) -> None:
    info = path.stat()
    if info.st_uid not in (uid, 0):
        raise KeyFileError(
            f"The {what} {path} belongs to another user (uid {info.st_uid}): it must be yours. "
            f"Check where it came from, then run: chown {uid} {path}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if private and mode & 0o077:
        raise KeyFileError(
            f"Permissions {mode:04o} for the {what} {path} are too open: "
            f"it must be readable by its owner only. Run: chmod 600 {path}"
        )
    if _writable_by_others(info, uid):
        raise KeyFileError(
            f"Permissions {mode:04o} for the {what} {path} are too open: others could change it. Run: chmod go-w {path}"
        )


def _check_directory(directory: Path, path: Path, what: str, uid: int, *, sticky_allowed: bool) -> None:
    info = directory.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (uid, 0):
        raise KeyFileError(
            f"The directory {directory} belongs to another user (uid {info.st_uid}), who could replace "
            f"the {what} {path}. Keep it in a directory of your own."
        )
    if not _writable_by_others(info, uid):
        return
    if sticky_allowed and info.st_uid == 0 and mode & stat.S_ISVTX:
        return
    raise KeyFileError(
        f"The directory {directory} is writable by others (mode {mode:04o}), who could replace "
        f"the {what} {path}. Run: chmod go-w {directory}"
    )


# --- the key files: the server's and a person's --------------------------------

#: A key of either kind: the server's RSA key or a person's Ed25519 key.
_Key = TypeVar("_Key")


def load_or_create_identity_key(path: Path) -> crypto_utils.RSA.RsaKey:
    """The server's long-term RSA key: read from ``path``, or made and saved
    there (mode 0600) on first run.

    Raises:
        KeyFileError: cannot be read or written, not a key, readable by
            others, or in a place others can change (``check_safe_path``).
    """

    def make() -> tuple[crypto_utils.RSA.RsaKey, bytes]:
        log.info("Making a new %d-bit server key (first run; this takes a few seconds)", crypto_utils.RSA_KEY_BITS)
        key = crypto_utils.generate_rsa_keypair()
        return key, crypto_utils.export_private_key(key)

    key, created = _load_or_create(path, "server key", make, crypto_utils.import_private_key)
    if created:
        log.info("Created a new server key at %s", path)
    return key


def load_or_create_person_key(path: Path) -> tuple[crypto_utils.PersonKey, bool]:
    """A person's Ed25519 key (the client's identity): read from ``path``,
    or made and saved there (mode 0600) on first use, with the same checks
    as the server's key. The key, and whether it was made now.

    Raises:
        KeyFileError: as ``load_or_create_identity_key``.
    """

    def make() -> tuple[crypto_utils.PersonKey, bytes]:
        key = crypto_utils.PersonKey.generate()
        return key, key.export_pem()

    return _load_or_create(path, "identity key", make, crypto_utils.PersonKey.import_pem)


def _load_or_create(
    path: Path, what: str, make: Callable[[], tuple[_Key, bytes]], read: Callable[[bytes], _Key]
) -> tuple[_Key, bool]:
    """The key in ``path`` (``read`` from its bytes), or one ``make`` gives
    (the key and its bytes), written there with mode 0600; and whether it was
    made now."""
    try:
        if path.exists():
            return _read_key_file(path, what, read), False
        check_safe_path(path, what, private=True)
        key, data = make()
        create_private_file(path, what, data)
        return key, True
    except OSError as exc:
        raise KeyFileError(f"Cannot use the {what} file {path}: {exc.strerror or exc}") from None


def _read_key_file(path: Path, what: str, read: Callable[[bytes], _Key]) -> _Key:
    if not path.is_file():
        raise KeyFileError(f"The {what} {path} is not a file.")
    check_safe_path(path, what, private=True)
    try:
        return read(path.read_bytes())
    except crypto_utils.KeyFormatError as exc:
        raise KeyFileError(f"Cannot read the {what} {path}: {exc}") from None


def create_private_file(path: Path, what: str, data: bytes = b"") -> None:
    """Make the file ``path`` (it must not exist), readable by its owner
    only, holding ``data``; its directory is made 0700 if missing and checked
    (``check_safe_path``).

    Raises:
        KeyFileError: a directory above it is unsafe.
        OSError: the file exists or cannot be made.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_safe_path(path, what, private=True)  # again: someone else may have made the directory first
    # O_EXCL with mode 0600: the file is never, even briefly, readable by
    # others, and a link planted in its place is not followed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def replace_file(path: Path, text: str, what: str, mode: int = 0o600) -> None:
    """Write ``text`` (UTF-8) as the whole of ``path``: a new file beside it
    under a fresh name (mkstemp: never an existing file or a planted link),
    given ``mode``, then renamed over it, so a reader sees the old file or
    the new one, whole. The directory is made (0700) if missing, and checked
    (``check_safe_path``) once it exists.

    Raises:
        KeyFileError: the file or its directory cannot be written, or others
            could change them.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_safe_path(path, what)  # again: someone else may have made the directory first
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KeyFileError(f"Cannot write the {what} {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise KeyFileError(f"Cannot write the {what} {path}: {exc.strerror or exc}") from None


# --- known hosts: trust on first use, as ssh does ----------------------------


class KnownHosts:
    """The file of servers seen before: one ``HOST:PORT SHA256:...`` a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, host_id: str) -> str | None:
        """The fingerprint recorded for ``host_id``, or None.

        Raises:
            KeyFileError: the file exists but cannot be read, or others could
                change it (``check_safe_path``).
        """
        for line_host, fingerprint in self._entries():
            if line_host == host_id:
                return fingerprint
        return None

    def remember(self, host_id: str, fingerprint: str) -> None:
        """Record (or replace) the fingerprint for ``host_id``.

        The new file is written beside the old under a fresh name (mkstemp:
        mode 0600, never an existing file or a planted link), then renamed
        over it, so a reader sees the old file or the new one, whole.

        Raises:
            KeyFileError: the file or its directory cannot be written, or
                others could change them.
        """
        kept = [f"{h} {f}\n" for h, f in self._entries() if h != host_id]
        replace_file(self.path, "".join([*kept, f"{host_id} {fingerprint}\n"]), "known hosts file")

    def _entries(self) -> list[tuple[str, str]]:
        check_safe_path(self.path, "known hosts file")
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"Cannot read the known hosts file {self.path}: {exc}") from None
        return [(words[0], words[1]) for words in map(str.split, lines) if len(words) == 2]


@dataclass(frozen=True)
class KeyCheck:
    """What ``check_server_key`` found: a key that may be used for the
    handshake. Nothing is recorded yet: ``record_server_key`` does that once
    the handshake has proved the server holds the key."""

    server: str
    offered: str
    recorded: str | None  # what the known hosts file held for the server
    pinned: bool  # the offered key is the one given with --fingerprint

    @property
    def first_contact(self) -> bool:
        """No pin and nothing recorded: trust on first use, which the person
        should confirm."""
        return self.recorded is None and not self.pinned


def check_server_key(known: KnownHosts, server: str, offered: str, pinned: str | None) -> KeyCheck:
    """Decide whether the key the server offered may be used. Records
    nothing (see ``record_server_key``).

    A pin (``--fingerprint``) wins over the file.

    Raises:
        ServerKeyRefused: the key is not the one pinned or recorded.
        KeyFileError: the known hosts file cannot be read.
    """
    recorded = known.lookup(server)
    if pinned is not None:
        if not crypto_utils.fingerprints_equal(pinned, offered):
            raise ServerKeyRefused(_pin_warning(server, pinned, offered, recorded, known.path))
        return KeyCheck(server, offered, recorded, pinned=True)
    if recorded is not None and not crypto_utils.fingerprints_equal(recorded, offered):
        raise ServerKeyRefused(_mismatch_warning(server, recorded, offered, str(known.path)))
    return KeyCheck(server, offered, recorded, pinned=False)


def record_server_key(known: KnownHosts, check: KeyCheck, *, confirmed: bool = False) -> str | None:
    """Record the key ``check`` accepted; call only once the handshake is
    complete (key confirmation proved the server holds the key).
    ``confirmed``: the person has just accepted the key (so the line
    returned need not show it again).

    Returns:
        A line to show the person when the file changed, or None.

    Raises:
        KeyFileError: the known hosts file cannot be written.
    """
    if check.recorded is not None and crypto_utils.fingerprints_equal(check.recorded, check.offered):
        return None
    known.remember(check.server, check.offered)
    if check.recorded is not None:
        return (
            f"The key recorded for {check.server} ({check.recorded}) is replaced in {known.path}\n"
            f"by the one given with --fingerprint ({check.offered})."
        )
    if confirmed:
        return f"The server's key is now recorded in {known.path}."
    return (
        f"The server's key fingerprint is {check.offered}.\n"
        f"Check it with the server's operator. It is now recorded in {known.path}."
    )


def _pin_warning(server: str, pinned: str, offered: str, recorded: str | None, path: Path) -> str:
    bar = "@" * 62
    if recorded is None:
        record_line = f"Nothing is recorded for this server in {path}."
    elif crypto_utils.fingerprints_equal(recorded, offered):
        record_line = f"The offered key is the one recorded in {path}."
    else:
        record_line = f"Recorded fingerprint: {recorded} (in {path}, also different)"
    return "\n".join(
        [
            bar,
            "@  WARNING: THE SERVER'S KEY IS NOT THE ONE GIVEN WITH --fingerprint  @",
            bar,
            "Someone may be intercepting this connection (a man-in-the-middle attack),",
            "or the fingerprint given is not this server's.",
            f"Server:               {server}",
            f"Expected fingerprint: {pinned} (from --fingerprint)",
            f"Offered fingerprint:  {offered}",
            record_line,
            "The connection was refused; nothing was sent, and nothing recorded.",
            "Check the fingerprint with the server's operator (the server prints it when it starts).",
        ]
    )


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
