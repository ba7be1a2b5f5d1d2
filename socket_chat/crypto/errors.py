"""The failures the crypto layer reports, one class for each kind.

Failures that an attacker can provoke all surface as one of these, never
as pycryptodomex's bare ``ValueError``. ``CryptoError`` itself is never
raised (as h11 does with its ``ProtocolError``), so a caller can tell what
went wrong from the type.
"""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "DecryptionError",
    "KeyAgreementError",
    "KeyFormatError",
    "SequenceExhaustedError",
    "UnsupportedKeyError",
    "ProofFailedError",
]


class CryptoError(Exception):
    """Base class for the failures the crypto layer reports. Abstract: only its
    subclasses are raised, so each failure has its own documented type."""

    def __init__(self, *args: object) -> None:
        if type(self) is CryptoError:
            raise TypeError("CryptoError is abstract: raise one of its subclasses")
        super().__init__(*args)


class DecryptionError(CryptoError):
    """A ciphertext did not authenticate, or could not be decrypted.

    One class for every cause (bad tag, wrong key, wrong nonce, bad padding),
    so callers cannot leak which one it was.
    """


class KeyAgreementError(CryptoError):
    """The peer's ephemeral public key is malformed or of low order."""


class KeyFormatError(CryptoError):
    """Bytes that should hold a key do not hold one in the form asked for
    (for a public key: DER SubjectPublicKeyInfo, RSA, at least 2048 bits)."""


class SequenceExhaustedError(CryptoError):
    """A direction has used its last sequence number (``MAX_SEQUENCE``): no
    record can be sealed or opened in it any more, and the session must end."""


class UnsupportedKeyError(CryptoError):
    """A person's key offered for a proof is not one this side takes: a type
    other than ``ssh-ed25519``, or not the 32 bytes such a key is, or bytes
    that are no point of the curve. The message says which, without the key."""


class ProofFailedError(CryptoError):
    """A key proof's signature does not check out for this connection: a
    forged or corrupted signature, or one made for another connection."""
