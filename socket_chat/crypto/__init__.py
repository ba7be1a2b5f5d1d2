"""Pure cryptography for the chat: no sockets, no files, no prints.

Everything here is a thin, named wrapper over pycryptodomex so that the
protocol code reads in the words of PROTOCOL.md:

- the server's long-term identity: an RSA key, its fingerprint, and
  RSA-OAEP (SHA-256) to carry the client's secret to it;
- a person's identity: an Ed25519 key, and the proof that they hold it,
  bound to one connection;
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

One concern a module:

- ``errors``: ``CryptoError`` and its subclasses;
- ``rng``: the default source of randomness, and the type of one passed in;
- ``identity``: the RSA key, its fingerprint, and RSA-OAEP;
- ``person``: a person's Ed25519 key, its ssh fingerprint, and the key
  proof that signs a connection's transcript hash;
- ``handshake``: X25519 (``EphemeralKey``), the transcript hash and the
  key schedule;
- ``records``: the nonces, ``RecordSealer`` and ``RecordOpener``;
- ``aes_gcm`` and ``x25519``: the fast paths under those two;
- ``keystore``: the files kept on disk (imported on its own, not here).

This module re-exports the public API below and, outside ``__all__`` as
before the split, ``RSA`` (pycryptodomex's module, for the key's type
``RSA.RsaKey``) and ``MAX_SEQUENCE``.
"""

from __future__ import annotations

from socket_chat.crypto.errors import (
    CryptoError,
    DecryptionError,
    KeyAgreementError,
    KeyFormatError,
    ProofFailedError,
    SequenceExhaustedError,
    UnsupportedKeyError,
)
from socket_chat.crypto.handshake import (
    RANDOM_SIZE,
    SECRET_SIZE,
    X25519_KEY_SIZE,
    EphemeralKey,
    SessionKeys,
    derive_session_keys,
    transcript_hash,
)
from socket_chat.crypto.identity import (
    FINGERPRINT_PATTERN,
    RSA_KEY_BITS,
    export_private_key,
    export_public_key,
    fingerprint,
    fingerprints_equal,
    generate_rsa_keypair,
    import_private_key,
    import_public_key,
    unwrap_key,
    wrap_key,
)
from socket_chat.crypto.identity import RSA as RSA
from socket_chat.crypto.person import KEY_TYPE, PersonKey, openssh_public_key, person_fingerprint, verify_proof
from socket_chat.crypto.records import MAX_SEQUENCE as MAX_SEQUENCE
from socket_chat.crypto.records import TAG_SIZE, RecordOpener, RecordSealer
from socket_chat.crypto.rng import random_bytes

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
    "FINGERPRINT_PATTERN",
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
    "KEY_TYPE",
    "PersonKey",
    "openssh_public_key",
    "person_fingerprint",
    "verify_proof",
    "UnsupportedKeyError",
    "ProofFailedError",
]
