"""The allow file of a private server (``--allow FILE``): read at start,
read again on SIGHUP and the console's ``/reload``, and added to by
``/invite``. What its lines mean is ``chat.allow``'s.

The file is checked as ssh's StrictModes checks authorized_keys
(``keystore.check_safe_path``): whoever could write to it could let
themselves in. A reload that fails keeps the list as it was.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from socket_chat.chat.allow import AllowList, AllowListError, invitation_line, parse_allow_list
from socket_chat.crypto import keystore

__all__ = ["AllowFile", "AllowFileError"]

WHAT = "allow file"


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

    def __init__(self, path: Path) -> None:
        self.path = path
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

    def invite(self, fingerprint: str, name: str | None = None) -> bool:
        """Add the line for ``fingerprint`` (reserving ``name``) at the end of
        the file, written whole beside it and renamed over it with the
        file's own mode, then take the new list; False if the key is
        invited already (with that name, if one is given): nothing written.

        Raises:
            AllowFileError: not a fingerprint, not a valid username, a name
                reserved for another key, or the file cannot be used.
        """
        try:
            line = invitation_line(fingerprint, name, comment="added by /invite")
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
                keystore.replace_file(self.path, text, WHAT, mode=stat.S_IMODE(os.stat(self.path).st_mode))
            except (OSError, keystore.KeyFileError) as exc:
                raise AllowFileError(str(exc)) from None
            self.current = invited
            return True

    def _read(self) -> str:
        try:
            keystore.check_safe_path(self.path, WHAT)
            return self.path.read_text(encoding="utf-8")
        except keystore.KeyFileError as exc:
            raise AllowFileError(str(exc)) from None
        except OSError as exc:
            raise AllowFileError(f"Cannot read the {WHAT} {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AllowFileError(f"The {WHAT} {self.path} is not UTF-8 text.") from None

    def _parse(self, text: str) -> AllowList:
        try:
            return parse_allow_list(text)
        except AllowListError as exc:
            raise AllowFileError(f"The {WHAT} {self.path}, {exc}") from None
