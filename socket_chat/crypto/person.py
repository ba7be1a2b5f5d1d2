"""A person's identity: an Ed25519 key (RFC 8032), its fingerprint in
ssh's form, and the key proof that signs one connection's transcript hash
(PROTOCOL.md section 4, "Key proof").

The proof is ssh's publickey authentication (RFC 4252 section 7) in small:
what is signed is a fixed context and the connection's session identifier
(the transcript hash, which covers both hellos and so the server's key), so
a signature taken from one connection is worthless on any other.

The key's fingerprint is taken over its SSH wire blob (RFC 8709: the string
``ssh-ed25519``, then the string of the 32-byte public key, each behind a
u32 length), so it is the one ``ssh-keygen -lf`` prints for the same key
as an OpenSSH public key. The signing and the verifying are pycryptodomex's
(``Cryptodome.Signature.eddsa``, mode ``rfc8032``).
"""

from __future__ import annotations

import base64
import binascii
import struct

from Cryptodome.PublicKey import ECC
from Cryptodome.Signature import eddsa

from socket_chat.crypto.errors import KeyFormatError, ProofFailedError, UnsupportedKeyError
from socket_chat.crypto.identity import fingerprint
from socket_chat.crypto.rng import Rng, random_bytes

__all__ = [
    "KEY_TYPE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "PROOF_CONTEXT",
    "PersonKey",
    "ssh_key_blob",
    "openssh_public_key",
    "person_fingerprint",
    "proof_message",
    "verify_proof",
]

#: The one key type taken, named as ssh names it (RFC 8709).
KEY_TYPE = "ssh-ed25519"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Signed before the session identifier, so that the signature cannot be
#: taken for one made for anything else with the same key.
PROOF_CONTEXT = b"socket-chat v1 key proof\x00"
_SSH_STRING = struct.Struct("!I")


class PersonKey:
    """A person's Ed25519 private key. Its bytes never appear in ``repr``.

    Made with ``generate`` or read with ``import_pem``; it can say who it
    is (``public_bytes``, ``fingerprint``), sign a proof, and be written out
    (``export_pem``, for a 0600 file).
    """

    __slots__ = ("_key",)

    def __init__(self, key: ECC.EccKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, rng: Rng | None = None) -> PersonKey:
        return cls.from_seed((rng or random_bytes)(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> PersonKey:
        """The key of a 32-byte RFC 8032 seed (the test vector's)."""
        return cls(eddsa.import_private_key(seed))

    @classmethod
    def import_pem(cls, data: bytes) -> PersonKey:
        """Read a key written by ``export_pem`` (PKCS#8, PEM or DER).

        Raises:
            KeyFormatError: not an unencrypted Ed25519 private key.
        """
        try:
            key = ECC.import_key(data)
        except (ValueError, IndexError, TypeError):  # pycryptodomex's ways of saying "not a key"
            raise KeyFormatError("not an Ed25519 private key (PKCS#8 PEM, without a passphrase)") from None
        if key.curve != "Ed25519" or not key.has_private():
            raise KeyFormatError("not an Ed25519 private key")
        return cls(key)

    def export_pem(self) -> bytes:
        """The private key as PKCS#8 PEM, for a 0600 key file."""
        return self._key.export_key(format="PEM").encode("ascii")

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte public key (RFC 8032's encoding)."""
        return self._key.public_key().export_key(format="raw")

    @property
    def fingerprint(self) -> str:
        return person_fingerprint(self.public_bytes)

    def sign_proof(self, session_id: bytes) -> bytes:
        """The 64-byte signature of ``proof_message(session_id)``."""
        return eddsa.new(self._key, "rfc8032").sign(proof_message(session_id))

    def __repr__(self) -> str:
        return f"<PersonKey {self.fingerprint}>"


def ssh_key_blob(public_key: bytes) -> bytes:
    """The key as ssh writes it on the wire (RFC 8709 section 4): string
    ``ssh-ed25519``, string of the 32 bytes, each behind a u32 length."""
    name = KEY_TYPE.encode("ascii")
    return _SSH_STRING.pack(len(name)) + name + _SSH_STRING.pack(len(public_key)) + public_key


def openssh_public_key(key_type: str, encoded: str) -> bytes:
    """The 32-byte key of an OpenSSH public key line's two first words
    (``ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...``, as in a ``.pub`` file or
    ``authorized_keys``): the base64 of ``ssh_key_blob``, nothing more.

    Raises:
        UnsupportedKeyError: a key type other than ``ssh-ed25519``.
        KeyFormatError: ``encoded`` is not base64 of an ``ssh-ed25519`` blob
            (or its type inside is not the one outside).
    """
    if key_type != KEY_TYPE:
        raise UnsupportedKeyError(f"its type is {key_type}, and only {KEY_TYPE} keys are taken")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise KeyFormatError(f"the {KEY_TYPE} key is not base64") from None
    public_key = blob[-PUBLIC_KEY_SIZE:]
    if blob != ssh_key_blob(public_key):  # also of another length: the blob is rebuilt whole
        raise KeyFormatError(f"the base64 does not hold an {KEY_TYPE} key")
    return public_key


def person_fingerprint(public_key: bytes) -> str:
    """``SHA256:`` and unpadded base64 of the SHA-256 of ``ssh_key_blob``:
    what ``ssh-keygen -lf`` prints for the key."""
    return fingerprint(ssh_key_blob(public_key))


def proof_message(session_id: bytes) -> bytes:
    """What a key proof signs: ``PROOF_CONTEXT`` then the session identifier."""
    return PROOF_CONTEXT + session_id


def verify_proof(key_type: str, public_key: bytes, signature: bytes, session_id: bytes) -> str:
    """Check a key proof for this connection; the key's fingerprint if it holds.

    The verifying is the library's (constant-time in the key and the
    signature, as RFC 8032's verification is).

    Raises:
        UnsupportedKeyError: ``key_type`` is not ``ssh-ed25519``, the key is
            not 32 bytes, or it is not a point of the curve.
        ProofFailedError: the signature does not check out for
            ``session_id`` (forged, corrupted, or made for another connection).
    """
    if key_type != KEY_TYPE:
        raise UnsupportedKeyError(f"its type is not {KEY_TYPE}")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise UnsupportedKeyError(f"an {KEY_TYPE} key is {PUBLIC_KEY_SIZE} bytes, and this one is {len(public_key)}")
    try:
        verifier = eddsa.new(eddsa.import_public_key(public_key), "rfc8032")
    except ValueError:
        raise UnsupportedKeyError("it is not a point of the curve") from None
    try:
        verifier.verify(proof_message(session_id), signature)
    except ValueError:  # "The signature is not authentic", or not 64 bytes
        raise ProofFailedError("the key proof does not check out") from None
    return person_fingerprint(public_key)
