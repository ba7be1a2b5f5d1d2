"""The allow file of a private server (``--allow FILE``): read at start,
read again on SIGHUP and the console's ``/reload``, and added to by
``/invite``. What its lines mean is ``chat.allow``'s. The operators file
(``--operators FILE``) is read the same way, in the same format without
the name column (``AllowFile(path, OPERATORS_FILE)``).

The file is checked as ssh's StrictModes checks authorized_keys
(``keystore.check_safe_path``): whoever could write to it could let
themselves in. A reload that fails keeps the list as it was.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from socket_chat.chat.allow import AllowList, AllowListError, invitation_line, key_fingerprint, parse_allow_list
from socket_chat.crypto import keystore

__all__ = ["ALLOW_FILE", "AllowFile", "AllowFileError", "OPERATORS_FILE"]

ALLOW_FILE = WHAT = "allow file"
#: The operators file: the allow file's format, with no name column (a
#: name there is refused: it would read as if it gave a power it does not).
OPERATORS_FILE = "operators file"


class AllowFileError(Exception):
    """The allow file cannot be used (read, trusted, understood, written);
    the message says why, and at which line."""


class AllowFile:
    """The file and the list read from it last (``current``), replaced
    whole by each reload or invitation that succeeds: a session that reads
    ``current`` sees the old list or the new one.

    Raises (the constructor):
        AllowFileError: the file cannot be used.
    """

    def __init__(self, path: Path, what: str = ALLOW_FILE) -> None:
        self.path = path
        self.what = what
        self._lock = threading.Lock()  # one reload or invitation at a time
        self.current: AllowList = self._parse(self._read())

    def reload(self) -> AllowList:
        """Read the file again; the new list, which is now ``current``.

        Raises:
            AllowFileError: the file cannot be used; ``current`` is unchanged.
        """
        with self._lock:
            self.current = self._parse(self._read())
            return self.current

    def invite(self, fingerprint: str, name: str | None = None, comment: str = "") -> bool:
        """Add the line for ``fingerprint`` (a fingerprint, or an OpenSSH
        key's two words) reserving ``name``, at the end of the file, written
        whole beside it and renamed over it with the file's own mode, then
        take the new list; False if the key is invited already (with that
        name, if one is given): nothing written. ``comment`` (a ``.pub``
        file's ``alice@laptop``) goes after the ``#``.

        Raises:
            AllowFileError: not a fingerprint or a usable key, not a valid
                username, a name reserved for another key, or the file
                cannot be used.
        """
        noted = f"{comment}, added by /invite" if comment else "added by /invite"
        try:
            line = invitation_line(fingerprint, name, comment=noted)
            fingerprint = key_fingerprint(fingerprint)
        except AllowListError as exc:
            raise AllowFileError(exc.reason) from None
        with self._lock:
            text = self._read()
            listed = self._parse(text)
            if listed.admits(fingerprint) and (name is None or listed.reserves(name, fingerprint)):
                self.current = listed
                return False
            text += line if not text or text.endswith("\n") else "\n" + line
            invited = self._parse(text)
            try:
                keystore.replace_file(self.path, text, self.what, mode=stat.S_IMODE(os.stat(self.path).st_mode))
            except (OSError, keystore.KeyFileError) as exc:
                raise AllowFileError(str(exc)) from None
            self.current = invited
            return True

    def _read(self) -> str:
        try:
            keystore.check_safe_path(self.path, self.what)
            return self.path.read_text(encoding="utf-8")
        except keystore.KeyFileError as exc:
            raise AllowFileError(str(exc)) from None
        except OSError as exc:
            raise AllowFileError(f"Cannot read the {self.what} {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AllowFileError(f"The {self.what} {self.path} is not UTF-8 text.") from None

    def _parse(self, text: str) -> AllowList:
        try:
            listed = parse_allow_list(text)
        except AllowListError as exc:
            raise AllowFileError(f"The {self.what} {self.path}, {exc}") from None
        if self.what == OPERATORS_FILE:
            named = next((i for i in listed.invitations if i.name is not None), None)
            if named is not None:
                raise AllowFileError(
                    f"The {self.what} {self.path}, line {named.line}: a name means nothing here "
                    f"({named.name!r}): an operator is a key; keep names for keys in the allow file, "
                    "or put '#' before a comment"
                )
        return listed
