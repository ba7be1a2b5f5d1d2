"""Pure cryptography for the chat: no sockets, no files, no prints.

Everything here is a thin, named wrapper over pycryptodomex so that the
protocol code reads in the words of PROTOCOL.md:

- the server's long-term identity: an RSA key, its fingerprint, and
  RSA-OAEP (SHA-256) to carry the client's secret to it;
- the ephemeral X25519 exchange that gives forward secrecy (``x25519``:
  the library's C curve code without its ECC objects);
- the key schedule (HKDF-SHA256 over both secrets, bound to the transcript);
- the record layer: AES-256-GCM with a per-direction sequence number folded
  into the nonce, as TLS 1.3 does, so no nonce ever repeats under a key
  (``aes_gcm``: the key schedule and GHASH tables made once per direction).

Randomness is a parameter (``rng``) wherever it is used, so tests can pin it.
Failures that an attacker can provoke all surface as one ``DecryptionError``
(or ``KeyAgreementError``, ``KeyFormatError``), never as pycryptodomex's bare
``ValueError``. Every failure this module reports is a ``CryptoError``
subclass; ``CryptoError`` itself is never raised (as h11 does with its
``ProtocolError``), so a caller can tell what went wrong from the type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from Cryptodome.Cipher import PKCS1_OAEP
from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes

from socket_chat.crypto import aes_gcm, x25519

__all__ = [
    "RSA_KEY_BITS",
    "SECRET_SIZE",
    "RANDOM_SIZE",
    "X25519_KEY_SIZE",
    "TAG_SIZE",
    "CryptoError",
    "DecryptionError",
    "KeyAgreementError",
    "KeyFormatError",
    "SequenceExhaustedError",
    "generate_rsa_keypair",
    "export_private_key",
    "import_private_key",
    "export_public_key",
    "import_public_key",
    "fingerprint",
    "fingerprints_equal",
    "wrap_key",
    "unwrap_key",
    "EphemeralKey",
    "SessionKeys",
    "derive_session_keys",
    "transcript_hash",
    "RecordSealer",
    "RecordOpener",
    "random_bytes",
]

Rng = Callable[[int], bytes]

RSA_KEY_BITS = 3072
SECRET_SIZE = 32
RANDOM_SIZE = 32
X25519_KEY_SIZE = 32
KEY_SIZE = 32  # AES-256
IV_SIZE = 12  # GCM's natural nonce size
TAG_SIZE = 16
# The nonce is iv XOR a 64-bit counter: sequence numbers 0 to MAX_SEQUENCE,
# so a direction may seal 2**64 records, the last with sequence 2**64 - 1
# (PROTOCOL.md sections 3 and 6). No chat gets near that; the check is there
# so the rule is written down.
MAX_SEQUENCE = 2**64 - 1

_KEY_SCHEDULE_LABEL = b"socket-chat v1 session keys"


class CryptoError(Exception):
    """Base class for the failures this module reports. Abstract: only its
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


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG: the default ``rng``."""
    return get_random_bytes(size)


# --- identity: RSA -----------------------------------------------------------


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


# --- forward secrecy: X25519 -------------------------------------------------


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
        return cls((rng or get_random_bytes)(X25519_KEY_SIZE))

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


def derive_session_keys(rsa_secret: bytes, x25519_secret: bytes, transcript: bytes) -> SessionKeys:
    """HKDF-SHA256 (RFC 5869) from both secrets, salted with the transcript hash.

    Both secrets go in: the RSA-carried one so that only the holder of the
    server's private key can finish the handshake, the X25519 one so that a
    recording cannot be decrypted later even with that key.
    """
    okm = _hkdf_sha256(rsa_secret + x25519_secret, transcript, _KEY_SCHEDULE_LABEL, 2 * (KEY_SIZE + IV_SIZE))
    c2s_key, s2c_key, rest = okm[:32], okm[32:64], okm[64:]
    return SessionKeys(c2s_key, rest[:IV_SIZE], s2c_key, rest[IV_SIZE:])


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 on the standard library's HMAC (OpenSSL): the same bytes as
    # pycryptodomex's HKDF, which builds its HMACs in Python at about seven
    # times the cost, paid by the server on every handshake.
    prk = hmac.digest(salt, ikm, "sha256")  # extract
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):  # expand
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]


# --- the record layer --------------------------------------------------------


def _nonce(iv: bytes, sequence: int) -> bytes:
    # TLS 1.3 (RFC 8446 section 5.3): left-pad the sequence number to the IV
    # length and XOR it in, so every record of a direction has its own nonce.
    # One XOR of two integers: the sequence is below 2**64, so it only
    # reaches the IV's last 8 bytes.
    return (int.from_bytes(iv, "big") ^ sequence).to_bytes(IV_SIZE, "big")


class _RecordDirection:
    __slots__ = ("_gcm", "_iv", "_sequence")

    def __init__(self, key: bytes, iv: bytes, first_sequence: int = 0):
        """Args: the direction's key and IV; ``first_sequence`` (0 in the
        protocol) lets tests start near the end.

        The AES key schedule and GHASH's tables are made here, once for the
        direction (``aes_gcm``), not once a record.

        Raises:
            ValueError: the key is not 32 bytes, or the IV not 12.
        """
        if len(key) != KEY_SIZE or len(iv) != IV_SIZE:
            raise ValueError("AES-256-GCM needs a 32-byte key and a 12-byte IV")
        self._gcm = aes_gcm.new(key)
        self._iv = iv
        self._sequence = first_sequence

    @property
    def sequence(self) -> int:
        """The sequence number the next record will use."""
        return self._sequence

    def _next_nonce(self) -> bytes:
        if self._sequence > MAX_SEQUENCE:
            raise SequenceExhaustedError("no sequence numbers left in this direction")
        nonce = _nonce(self._iv, self._sequence)
        self._sequence += 1
        return nonce

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sequence={self._sequence}>"


class RecordSealer(_RecordDirection):
    """Encrypts the records of one direction, each under its own nonce."""

    __slots__ = ()

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Return ``ciphertext || tag`` for the next sequence number.

        Raises:
            SequenceExhaustedError: the record with sequence ``MAX_SEQUENCE``
                was already sealed; nothing is sealed, and every later call
                raises again.
        """
        return self._gcm.seal(self._next_nonce(), plaintext, aad)


class RecordOpener(_RecordDirection):
    """Decrypts the records of one direction, expecting them in order.

    The sequence number is implicit: a record replayed, reordered, dropped
    or sent back in the other direction is decrypted under the wrong nonce
    or key, and fails.
    """

    __slots__ = ()

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Return the plaintext of the next record.

        Raises:
            DecryptionError: the record is not the next one of this direction,
                or any of its bytes (or the aad) were changed.
            SequenceExhaustedError: the record with sequence ``MAX_SEQUENCE``
                was already opened: the peer sent more than a direction may
                carry.
        """
        if len(sealed) < TAG_SIZE:
            raise DecryptionError("record too short")
        nonce = self._next_nonce()
        try:
            # The tag is checked first, in constant time; no plaintext
            # exists for a record that fails it.
            return self._gcm.open(nonce, sealed, aad)
        except ValueError:
            raise DecryptionError("record failed authentication") from None
