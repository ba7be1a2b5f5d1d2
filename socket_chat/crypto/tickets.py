"""Resumption tickets (PROTOCOL.md section 2, "Resumption"), as TLS 1.3's
NewSessionTicket (RFC 8446 sections 2.2 and 4.6.1): the resumption secret
a full handshake leaves behind, what a ticket carries sealed under the
server's ticket key, the binder a client proves it holds the secret with,
and the key schedule of a resumed connection.

Pure: keys, nonces and time are passed in; where the ticket keys are kept
(a 0600 file, Redis) and which ticket ids were used is the server's. Every
way a ticket can fail to open (forged, cut, under a key no longer kept,
for another server, expired, of another version) is one ``TicketRejected``,
as Fernet's one ``InvalidToken``: the answer is a full handshake, whatever
the cause.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from socket_chat.crypto import aes_gcm
from socket_chat.crypto.errors import CryptoError
from socket_chat.crypto.handshake import hkdf_sha256

__all__ = [
    "TICKET_VERSION",
    "MAX_LIFETIME",
    "TICKET_KEY_SIZE",
    "TICKET_ID_SIZE",
    "BINDER_SIZE",
    "TicketRejected",
    "TicketContents",
    "server_binding",
    "seal_ticket",
    "open_ticket",
    "ticket_key_id",
    "resumption_secret",
    "binder",
    "binders_equal",
]

TICKET_VERSION = 1
#: RFC 8446 section 4.6.1: a ticket lives at most seven days.
MAX_LIFETIME = 7 * 24 * 3600
TICKET_KEY_SIZE = 32
TICKET_ID_SIZE = 16
BINDER_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_ID = struct.Struct("!Q")
_TIMES = struct.Struct("!QI")  # issued_at (Unix seconds), lifetime (seconds)
_SECRET_SIZE = 32
_TICKET_LABEL = b"socket-chat v1 ticket"
_RESUMPTION_LABEL = b"socket-chat v1 resumption"
_BINDER_LABEL = b"socket-chat v1 binder"


class TicketRejected(CryptoError):
    """A ticket that cannot be used, for whatever reason (no oracle)."""


@dataclass(frozen=True)
class TicketContents:
    """What a ticket carries for the server that opens it.

    ``fingerprint`` is the person's key proved on the connection the ticket
    was given on (``SHA256:...``), or "" for a guest. The secret never
    appears in ``repr``.
    """

    ticket_id: bytes = field(repr=False)
    issued_at: int
    lifetime: int
    secret: bytes = field(repr=False)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if len(self.ticket_id) != TICKET_ID_SIZE or len(self.secret) != _SECRET_SIZE:
            raise ValueError("a ticket id is 16 bytes and a resumption secret 32")
        if not 0 < self.lifetime <= MAX_LIFETIME:
            raise ValueError(f"a ticket lives 1 to {MAX_LIFETIME} seconds")
        if len(self.fingerprint.encode("ascii")) > 255:
            raise ValueError("a fingerprint is at most 255 characters")

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime


def server_binding(public_der: bytes) -> bytes:
    """What binds a ticket to one server key: SHA-256 of its DER public key."""
    return hashlib.sha256(public_der).digest()


def _aad(key_id: bytes, binding: bytes) -> bytes:
    return _TICKET_LABEL + key_id + binding


@functools.lru_cache(maxsize=16)
def _gcm(key: bytes) -> aes_gcm.Gcm:
    # A ticket key seals and opens thousands of tickets: its AES key
    # schedule and GHASH tables are made once (``aes_gcm``), not per ticket.
    # A few keys are live at a time (the current one, the ones before).
    return aes_gcm.new(key)


def seal_ticket(key_id: int, key: bytes, contents: TicketContents, binding: bytes, nonce: bytes) -> bytes:
    """``key_id:u64 || nonce[12] || AES-256-GCM(key, nonce, plaintext, aad)``
    with ``aad = "socket-chat v1 ticket" || key_id || binding`` (see
    PROTOCOL.md for the plaintext)."""
    if len(nonce) != _NONCE_SIZE or len(key) != TICKET_KEY_SIZE:
        raise ValueError("a ticket key is 32 bytes and its nonce 12")
    fingerprint = contents.fingerprint.encode("ascii")
    plaintext = (
        bytes([TICKET_VERSION])
        + contents.ticket_id
        + _TIMES.pack(contents.issued_at, contents.lifetime)
        + contents.secret
        + bytes([len(fingerprint)])
        + fingerprint
    )
    packed_id = _KEY_ID.pack(key_id)
    return packed_id + nonce + _gcm(bytes(key)).seal(nonce, plaintext, _aad(packed_id, binding))


def ticket_key_id(ticket: bytes) -> int:
    """The id of the key a ticket says it is sealed under (unauthenticated
    until the ticket opens).

    Raises:
        TicketRejected: too short to be a ticket.
    """
    if len(ticket) < _KEY_ID.size + _NONCE_SIZE + _TAG_SIZE:
        raise TicketRejected("not a ticket")
    return int(_KEY_ID.unpack_from(ticket)[0])


def open_ticket(ticket: bytes, key_for: Callable[[int], bytes | None], binding: bytes, now: float) -> TicketContents:
    """The contents of a ticket sealed by ``seal_ticket``, if it is still
    good at ``now`` (Unix time). ``key_for(key_id)`` gives the ticket key
    of that id, or None if it is not kept (any more).

    Raises:
        TicketRejected: forged, cut, under a key not kept, for another
            server key, expired, or of another version.
    """
    key_id = ticket_key_id(ticket)
    key = key_for(key_id)
    if key is None:
        raise TicketRejected("unknown ticket key")
    nonce = ticket[_KEY_ID.size : _KEY_ID.size + _NONCE_SIZE]
    try:
        sealed = ticket[_KEY_ID.size + _NONCE_SIZE :]
        plaintext = _gcm(bytes(key)).open(nonce, sealed, _aad(ticket[: _KEY_ID.size], binding))
    except ValueError:
        raise TicketRejected("ticket does not authenticate") from None
    contents = _read_plaintext(plaintext)
    if not contents.issued_at - 60 <= now < contents.expires_at:  # a minute of clock skew in a cluster
        raise TicketRejected("ticket expired")
    return contents


def _read_plaintext(plaintext: bytes) -> TicketContents:
    # Authentic (sealed by us), so a bad layout is a bug or another version:
    # rejected all the same.
    fixed = 1 + TICKET_ID_SIZE + _TIMES.size + _SECRET_SIZE + 1
    if len(plaintext) < fixed or plaintext[0] != TICKET_VERSION or len(plaintext) != fixed + plaintext[fixed - 1]:
        raise TicketRejected("ticket of another version")
    at = 1 + TICKET_ID_SIZE
    issued_at, lifetime = _TIMES.unpack_from(plaintext, at)
    at += _TIMES.size
    try:
        return TicketContents(
            plaintext[1 : 1 + TICKET_ID_SIZE],
            issued_at,
            lifetime,
            plaintext[at : at + _SECRET_SIZE],
            plaintext[fixed:].decode("ascii"),
        )
    except (ValueError, UnicodeDecodeError):
        raise TicketRejected("ticket of another version") from None


# --- the key schedule of resumption -----------------------------------------


def resumption_secret(secret: bytes, x25519_secret: bytes, transcript: bytes) -> bytes:
    """The secret a ticket given on this connection resumes with:
    HKDF-SHA256(IKM = secret || x25519_secret, salt = transcript,
    info = "socket-chat v1 resumption", L = 32), where ``secret`` is the
    connection's first secret (the RSA-carried one, or the resumption
    secret it resumed with). One-way: it reveals nothing of the session's
    keys, nor they of it."""
    return hkdf_sha256(secret + x25519_secret, transcript, _RESUMPTION_LABEL, _SECRET_SIZE)


def binder(secret: bytes, partial_transcript: bytes) -> bytes:
    """The proof that a client holds the resumption secret, made before
    the server spends anything on the ticket: HMAC-SHA256(binder_key,
    partial_transcript) with binder_key = HKDF-SHA256(IKM = secret,
    salt = "", info = "socket-chat v1 binder", L = 32), and
    ``partial_transcript`` the SHA-256 of the server's hello and the
    resumption message up to its binder (RFC 8446 section 4.2.11.2)."""
    binder_key = hkdf_sha256(secret, b"", _BINDER_LABEL, 32)
    return hmac.digest(binder_key, partial_transcript, "sha256")


def binders_equal(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two binders."""
    return hmac.compare_digest(expected, received)
