"""Who is invited to a private server (``--allow FILE``): the file's lines
read into an ``AllowList``, with no file I/O (``server.allow_file`` reads
and writes the file).

The format is authorized_keys' in small. One person a line:

    KEY [NAME] [# COMMENT]

``KEY`` is a fingerprint as ``client.py --print-identity`` and
``ssh-keygen -lf`` print it (``SHA256:`` and 43 base64 characters), or an
OpenSSH public key (``ssh-ed25519 AAAA...``: its two first words). ``NAME``,
everything after the key up to a ``#`` (spaces inside it are kept), is a
username that this key alone may take: every name of its ``names.key``,
so its look-alikes too. A key may be on several lines, each reserving
one more name; a name may be reserved for one key only. From ``#`` to the
end of a line is a comment, and blank lines are skipped. A line copied
whole from a ``.pub`` file ends in its comment (``alice@laptop``), which
would be read as the name: put ``#`` before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from socket_chat import crypto
from socket_chat.chat import names

__all__ = [
    "INVITED_ONLY",
    "NAME_RESERVED",
    "AllowList",
    "AllowListError",
    "Invitation",
    "invitation_line",
    "key_fingerprint",
    "parse_allow_list",
]

#: The Goodbye to whoever is not invited: a key not listed, or a guest.
INVITED_ONLY = "This server admits only invited people."
#: A name reserved for another key (``UsernameRequest`` adds what to do).
NAME_RESERVED = "That username belongs to someone else."


class AllowListError(ValueError):
    """A line of an allow file that cannot be read; ``str`` is ``line N: REASON``."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


@dataclass(frozen=True)
class Invitation:
    """One line: the key's fingerprint, the name it reserves (as accepted by
    ``names.accept``) or None, its comment, and its line number."""

    fingerprint: str
    name: str | None = None
    comment: str = ""
    line: int = 0


class AllowList:
    """The keys let in and the names they reserve. Read-only once made:
    a reload makes a new one."""

    def __init__(self, invitations: tuple[Invitation, ...] = ()) -> None:
        self.invitations = invitations
        self._fingerprints = frozenset(i.fingerprint for i in invitations)
        self._reserved: dict[str, Invitation] = {}
        for invitation in invitations:
            if invitation.name is None:
                continue
            held = self._reserved.setdefault(names.key(invitation.name), invitation)
            if held.fingerprint != invitation.fingerprint:
                raise AllowListError(
                    invitation.line,
                    f"the name {invitation.name} is reserved for another key, on line {held.line}",
                )

    def __len__(self) -> int:
        """The number of keys let in."""
        return len(self._fingerprints)

    def admits(self, fingerprint: str | None) -> bool:
        """Whether the key ``fingerprint`` is invited (None, a guest, never is)."""
        return fingerprint in self._fingerprints

    def owner(self, name: str) -> str | None:
        """The fingerprint of the key ``name`` (or a look-alike) is reserved
        for, or None if it is reserved for no key."""
        held = self._reserved.get(names.key(name))
        return None if held is None else held.fingerprint

    def may_use(self, name: str, fingerprint: str | None) -> bool:
        """Whether the key ``fingerprint`` may take ``name``: one reserved
        for no key, or for this one."""
        return self.owner(name) in (None, fingerprint)

    def reserves(self, name: str, fingerprint: str) -> bool:
        """Whether ``name`` (or a look-alike) is reserved for ``fingerprint``."""
        return self.owner(name) == fingerprint


def parse_allow_list(text: str) -> AllowList:
    """Read an allow file's text (see the module's docstring).

    Raises:
        AllowListError: the first line that cannot be read, by its number.
    """
    invitations = [
        invitation for number, line in enumerate(text.splitlines(), 1) if (invitation := _parse_line(line, number))
    ]
    return AllowList(tuple(invitations))


def invitation_line(key: str, name: str | None = None, comment: str = "") -> str:
    """The line that invites ``key`` (reserving ``name``), as ``/invite``
    appends it, newline included. ``key`` is a fingerprint, or an OpenSSH
    public key's two first words (``ssh-ed25519 AAAA...``), written as given.

    Raises:
        AllowListError: (line 0) neither a fingerprint nor a usable key, or
            not a valid username.
    """
    key_fingerprint(key)
    if name is not None and "#" in name:
        raise AllowListError(0, "a name in the allow file cannot hold '#': it would start a comment")
    invitation = _parse_line(f"{key} {name or ''}", 0)
    assert invitation is not None  # a key was given, or _parse_line raised
    written = f"{key} {invitation.name}" if invitation.name else key
    return f"{written}  # {comment}\n" if comment else f"{written}\n"


def key_fingerprint(key: str) -> str:
    """The fingerprint of ``key``: a fingerprint (``SHA256:...``) as it is,
    or an OpenSSH public key's two first words, separated by a space.

    Raises:
        AllowListError: (line 0) neither.
    """
    words = key.split()
    if len(words) == 1 and crypto.FINGERPRINT_PATTERN.fullmatch(words[0]):
        return words[0]
    if len(words) == 2 and words[0].startswith(("ssh-", "ecdsa-", "sk-")):
        try:
            return crypto.person_fingerprint(crypto.openssh_public_key(words[0], words[1]))
        except (crypto.UnsupportedKeyError, crypto.KeyFormatError) as exc:
            raise AllowListError(0, f"the key cannot be used: {exc}") from None
    raise AllowListError(
        0, f"{key[:60]!r} is not a fingerprint (SHA256: and 43 base64 characters) or an ssh-ed25519 public key"
    )


def _parse_line(line: str, number: int) -> Invitation | None:
    content, _, comment = line.partition("#")
    words = content.split(maxsplit=2)
    if not words:
        return None
    if words[0].startswith("SHA256:"):
        fingerprint, rest = words[0], content.split(maxsplit=1)[1:]
        if not crypto.FINGERPRINT_PATTERN.fullmatch(fingerprint):
            raise AllowListError(number, f"{fingerprint!r} is not a fingerprint: SHA256: and 43 base64 characters")
    elif words[0].startswith(("ssh-", "ecdsa-", "sk-")):
        if len(words) < 2:
            raise AllowListError(number, f"{words[0]} without the key after it")
        try:
            fingerprint = crypto.person_fingerprint(crypto.openssh_public_key(words[0], words[1]))
        except (crypto.UnsupportedKeyError, crypto.KeyFormatError) as exc:
            raise AllowListError(number, f"the key cannot be used: {exc}") from None
        rest = words[2:]
    else:
        raise AllowListError(
            number, f"{words[0][:60]!r}: expected a fingerprint (SHA256:...) or an ssh-ed25519 public key"
        )
    return Invitation(fingerprint, _reserved_name(" ".join(rest), number), comment.strip(), number)


def _reserved_name(text: str, number: int) -> str | None:
    if not text.strip():
        return None
    try:
        return names.accept(text)
    except names.NameRefused as refused:
        raise AllowListError(
            number, f"the name {text.strip()!r} is not a valid username: it {refused.reason}"
        ) from None
