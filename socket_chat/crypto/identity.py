"""The server's long-term identity: an RSA key, its fingerprint, and
RSA-OAEP (SHA-256) to carry the client's secret to it (PROTOCOL.md
section 2).

The key goes on the wire in one form only, DER SubjectPublicKeyInfo, and
its fingerprint (ssh's ``SHA256:`` form) is taken over those bytes, so
what the server prints and what the client shows can be compared.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from Cryptodome.Cipher import PKCS1_OAEP
from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA

from socket_chat.crypto.errors import DecryptionError, KeyFormatError
from socket_chat.crypto.rng import Rng

__all__ = [
    "RSA",
    "RSA_KEY_BITS",
    "generate_rsa_keypair",
    "export_private_key",
    "import_private_key",
    "export_public_key",
    "import_public_key",
    "FINGERPRINT_PATTERN",
    "fingerprint",
    "fingerprints_equal",
    "wrap_key",
    "unwrap_key",
]

RSA_KEY_BITS = 3072


def generate_rsa_keypair(bits: int = RSA_KEY_BITS, rng: Rng | None = None) -> RSA.RsaKey:
    """Make a new RSA private key (3072 bits unless told otherwise).

    Raises:
        ValueError: ``bits`` is below 1024 (a programming error, not
            something a peer can cause).
    """
    return RSA.generate(bits, randfunc=rng)


def export_private_key(key: RSA.RsaKey) -> bytes:
    """The private key as PKCS#8 PEM bytes, for a 0600 key file."""
    return key.export_key(format="PEM", pkcs=8)


def import_private_key(data: bytes) -> RSA.RsaKey:
    """Read a private key written by ``export_private_key``. A key file is
    local (the operator may bring one made elsewhere), so any unencrypted
    RSA private key in PEM or DER, PKCS#8 or PKCS#1, is read.

    Raises:
        KeyFormatError: the data is not an unencrypted RSA private key.
    """
    try:
        key = RSA.import_key(data)
    except (ValueError, IndexError, TypeError):  # pycryptodomex's ways of saying "not a key"
        raise KeyFormatError("not an RSA private key (PEM or DER, without a passphrase)") from None
    if not key.has_private():
        raise KeyFormatError("not an RSA private key: it is a public key")
    return key


def export_public_key(key: RSA.RsaKey) -> bytes:
    """The public half as DER SubjectPublicKeyInfo: the bytes sent on the wire."""
    return key.public_key().export_key(format="DER")


def import_public_key(der: bytes) -> RSA.RsaKey:
    """Read an RSA public key in DER SubjectPublicKeyInfo, the one form the
    protocol sends (PROTOCOL.md section 2).

    Only that form: the fingerprint is taken over these bytes, so a key
    accepted in another encoding (PEM, OpenSSH, PKCS#1 ``RSAPublicKey``, DER
    with trailing or non-canonical bytes) would be one key with several
    fingerprints. The bytes must be exactly what ``export_public_key`` makes
    of the key they hold.

    Raises:
        KeyFormatError: the bytes are not an RSA public key in that form, or
            the key has fewer than 2048 bits.
    """
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError):  # pycryptodomex's ways of saying "not a key"
        raise KeyFormatError("not an RSA public key") from None
    if key.has_private() or key.public_key().export_key(format="DER") != der:
        raise KeyFormatError("not an RSA public key in DER SubjectPublicKeyInfo form")
    if key.size_in_bits() < 2048:
        raise KeyFormatError("not an RSA public key of at least 2048 bits")
    return key


#: A fingerprint as ``fingerprint`` writes it: ``SHA256:`` and 43 base64 characters.
FINGERPRINT_PATTERN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def fingerprint(public_key_der: bytes) -> str:
    """ssh's fingerprint form: ``SHA256:`` and unpadded base64 of the digest.

    It is taken over the DER bytes the server sends, so a user can compare
    what the server prints with what the client shows.
    """
    digest = hashlib.sha256(public_key_der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprints_equal(a: str, b: str) -> bool:
    """Compare two fingerprints in constant time."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def wrap_key(public_key: RSA.RsaKey, secret: bytes, rng: Rng | None = None) -> bytes:
    """Encrypt a short secret to the holder of ``public_key`` (RSA-OAEP, SHA-256).

    Raises:
        ValueError: the secret is too long for the key (a programming error:
            the protocol's secrets are 32 bytes).
    """
    return PKCS1_OAEP.new(public_key, hashAlgo=SHA256, randfunc=rng).encrypt(secret)


def unwrap_key(private_key: RSA.RsaKey, wrapped: bytes) -> bytes:
    """Recover a secret made by ``wrap_key``.

    Raises:
        DecryptionError: wrong key, or the ciphertext was altered.
    """
    try:
        return PKCS1_OAEP.new(private_key, hashAlgo=SHA256).decrypt(wrapped)
    except (ValueError, TypeError):
        raise DecryptionError("could not unwrap the key") from None
