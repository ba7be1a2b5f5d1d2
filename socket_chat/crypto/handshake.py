"""The handshake's cryptography: the ephemeral X25519 exchange that gives
forward secrecy, and the key schedule (HKDF-SHA256 over both secrets,
bound to the transcript) that turns the handshake into session keys
(PROTOCOL.md section 2).

The X25519 arithmetic is ``x25519``'s: pycryptodomex's curve25519 C code
called directly, or its ECC objects. HKDF is computed here on the standard
library's HMAC (see ``hkdf_sha256``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from socket_chat.crypto import x25519
from socket_chat.crypto.errors import KeyAgreementError
from socket_chat.crypto.records import IV_SIZE, KEY_SIZE
from socket_chat.crypto.rng import Rng, random_bytes

__all__ = [
    "SECRET_SIZE",
    "RANDOM_SIZE",
    "X25519_KEY_SIZE",
    "EphemeralKey",
    "SessionKeys",
    "transcript_hash",
    "derive_session_keys",
    "hkdf_sha256",
]

SECRET_SIZE = 32
RANDOM_SIZE = 32
X25519_KEY_SIZE = 32

_KEY_SCHEDULE_LABEL = b"socket-chat v1 session keys"
#: A resumed connection's keys (PROTOCOL.md, "Resumption"): another label,
#: so that no key of a resumed connection can equal one of a full handshake.
_RESUMED_LABEL = b"socket-chat v1 resumed session keys"


class EphemeralKey:
    """A one-use X25519 key pair. Drop it after the handshake.

    The private half is never exposed; the object can only agree on a
    shared secret with a peer's public key. The arithmetic is ``x25519``'s
    (pycryptodomex's C code called directly, or its ECC objects).
    """

    __slots__ = ("_private", "_public")

    def __init__(self, private_bytes: bytes):
        """Raises ValueError if ``private_bytes`` is not 32 bytes long."""
        if len(private_bytes) != X25519_KEY_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")
        self._private = bytes(private_bytes)
        self._public = x25519.x25519(self._private, x25519.BASE_POINT)

    @classmethod
    def generate(cls, rng: Rng | None = None) -> EphemeralKey:
        return cls((rng or random_bytes)(X25519_KEY_SIZE))

    @property
    def public_bytes(self) -> bytes:
        return self._public

    def agree(self, peer_public: bytes) -> bytes:
        """The 32-byte X25519 shared secret with ``peer_public``.

        Raises:
            KeyAgreementError: the peer's key is malformed or of low order
                (RFC 7748 section 6.1 asks to reject an all-zero result).
        """
        try:
            return x25519.x25519(self._private, bytes(peer_public))
        except (ValueError, TypeError):  # LowOrderPoint is a ValueError
            raise KeyAgreementError("invalid X25519 public key") from None

    def __repr__(self) -> str:
        return "<EphemeralKey>"


# --- the key schedule --------------------------------------------------------


@dataclass(frozen=True)
class SessionKeys:
    """One AES-256-GCM key and IV for each direction of a session."""

    client_to_server_key: bytes = field(repr=False)
    client_to_server_iv: bytes = field(repr=False)
    server_to_client_key: bytes = field(repr=False)
    server_to_client_iv: bytes = field(repr=False)


def transcript_hash(*handshake_messages: bytes) -> bytes:
    """SHA-256 over the handshake messages, in the order they were sent."""
    digest = hashlib.sha256()
    for message in handshake_messages:
        digest.update(message)
    return digest.digest()


def derive_session_keys(
    rsa_secret: bytes, x25519_secret: bytes, transcript: bytes, resumed: bool = False
) -> SessionKeys:
    """HKDF-SHA256 (RFC 5869) from both secrets, salted with the transcript hash.

    Both secrets go in: the RSA-carried one so that only the holder of the
    server's private key can finish the handshake, the X25519 one so that a
    recording cannot be decrypted later even with that key. A resumed
    connection (``resumed``) puts its resumption secret where the RSA one
    goes, under another label.
    """
    label = _RESUMED_LABEL if resumed else _KEY_SCHEDULE_LABEL
    okm = hkdf_sha256(rsa_secret + x25519_secret, transcript, label, 2 * (KEY_SIZE + IV_SIZE))
    c2s_key, s2c_key, rest = okm[:32], okm[32:64], okm[64:]
    return SessionKeys(c2s_key, rest[:IV_SIZE], s2c_key, rest[IV_SIZE:])


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 on the standard library's HMAC (OpenSSL): the same bytes as
    # pycryptodomex's HKDF, which builds its HMACs in Python at about seven
    # times the cost, paid by the server on every handshake.
    prk = hmac.digest(salt, ikm, "sha256")  # extract
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):  # expand
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]
