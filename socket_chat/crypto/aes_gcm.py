"""AES-GCM (NIST SP 800-38D) with the key set up once, not once a record.

``AES.new(key, MODE_GCM, nonce)`` works out, for every nonce, three AES key
schedules, the hash subkey H and GHASH's tables: most of what sealing a chat
line costs. None of that depends on the nonce. ``PrecomputedGcm`` keeps one
AES-ECB object and one set of GHASH tables per key, and for each record makes
J0 and the counter blocks' keystream in one ECB call, XORs the keystream into
the data, and takes the tag from pycryptodomex's own GHASH over the AAD, the
ciphertext and their lengths. Its records are byte for byte those of
``AES.new`` (tests/test_aes_gcm.py checks that over random keys, nonces, AAD
and lengths, and against the GCM specification's test vectors).

GHASH is not public API in pycryptodomex: it is ``Cryptodome.Cipher._mode_gcm``
(``_GHASH`` and ``_ghash_clmul`` / ``_ghash_portable``), checked with
pycryptodomex ``PINNED_PYCRYPTODOMEX`` (requirements.txt pins it). At import
the internals are looked up and the result run against known answers; if
either fails (a release moved or changed them), ``new`` is ``LibraryGcm``,
which is ``AES.new`` per record as before: slower, never wrong.

Opening checks the tag first, in constant time, before a byte of plaintext
exists. Both classes take 12-byte nonces only (the protocol's; GCM's other
nonce sizes go through GHASH and are not needed here).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from Cryptodome.Cipher import AES
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.strxor import strxor

__all__ = [
    "PINNED_PYCRYPTODOMEX",
    "NONCE_SIZE",
    "TAG_SIZE",
    "Gcm",
    "LibraryGcm",
    "PrecomputedGcm",
    "choose",
    "new",
    "FAST",
    "xor_bytes",
    "tags_equal",
]

PINNED_PYCRYPTODOMEX = "3.24.2"
NONCE_SIZE = 12
TAG_SIZE = 16
_BLOCK = 16
# With a 12-byte nonce the counter starts at 2 for the data and may not wrap
# (SP 800-38D section 5.2.1.1: at most 2**32 - 2 blocks of plaintext).
_MAX_DATA = (2**32 - 2) * _BLOCK
# Counter blocks 1, 2, 3, ... with the nonce's 12 bytes zero: XORing the
# nonce in makes J0 and the data's counters in one step. Enough for a
# 64 KiB record (the largest frame); longer ones make their own.
_COUNTERS = b"".join(bytes(NONCE_SIZE) + i.to_bytes(4, "big") for i in range(1, 2 + 65_536 // _BLOCK + 1))
# Below this, XOR through Python ints beats a call into the C library.
_INT_XOR_LIMIT = 512


class Gcm(Protocol):
    """AES-GCM under one key, with 12-byte nonces and 16-byte tags."""

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """``ciphertext || tag``."""
        ...

    def open(self, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of ``ciphertext || tag``; ValueError if it does not authenticate."""
        ...


class LibraryGcm:
    """``AES.new(key, MODE_GCM, nonce)`` for every record: the reference, and
    the fallback when pycryptodomex's internals are not the ones checked."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        AES.new(key, AES.MODE_ECB)  # the same ValueError as PrecomputedGcm for a bad key
        self._key = bytes(key)

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=_checked(nonce))
        cipher.update(aad)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)
        return ciphertext + tag

    def open(self, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
        if len(sealed) < TAG_SIZE:
            raise ValueError("MAC check failed")
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=_checked(nonce))
        cipher.update(aad)
        # decrypt_and_verify compares the tag in constant time (BLAKE2s of both).
        return cipher.decrypt_and_verify(sealed[:-TAG_SIZE], sealed[-TAG_SIZE:])

    def __repr__(self) -> str:
        return "<LibraryGcm>"


class _Internals(NamedTuple):
    """The parts of pycryptodomex's ``Cryptodome.Cipher._mode_gcm`` used here."""

    tables: Callable[[bytes, Any], Any]  # _GHASH(h, impl): expands H, frees the tables when dropped
    impl: Any  # impl.ghash(y_out, data, len, y_in, tables): one C call over whole blocks
    buffer: Callable[..., Any]
    pointer: Callable[[bytes], Any]
    size: Callable[[int], Any]
    raw: Callable[[Any], bytes]


def _load_internals() -> _Internals | None:
    """pycryptodomex's GHASH, or None where it is not where it was."""
    try:
        # Typed Any: the library's stubs leave its private names out.
        _mode_gcm: Any = importlib.import_module("Cryptodome.Cipher._mode_gcm")
        from Cryptodome.Util._raw_api import c_size_t, c_uint8_ptr, create_string_buffer, get_raw_buffer

        impl = _mode_gcm._ghash_clmul or _mode_gcm._ghash_portable
        return _Internals(_mode_gcm._GHASH, impl, create_string_buffer, c_uint8_ptr, c_size_t, get_raw_buffer)
    except (ImportError, AttributeError):
        return None


class PrecomputedGcm:
    """AES-GCM with the key schedule, H and GHASH's tables made once."""

    __slots__ = ("_ecb", "_tables", "_ghash_c", "_x")

    def __init__(self, key: bytes, internals: _Internals):
        """Raises ValueError if ``key`` is not 16, 24 or 32 bytes long."""
        self._ecb = AES.new(key, AES.MODE_ECB)
        self._tables = internals.tables(self._ecb.encrypt(bytes(_BLOCK)), internals.impl)
        self._ghash_c = internals.impl.ghash
        self._x = internals

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        size = len(plaintext)
        keystream = self._keystream(nonce, size)
        ciphertext = xor_bytes(plaintext, keystream[_BLOCK : _BLOCK + size])
        return ciphertext + self._tag(keystream, aad, ciphertext)

    def open(self, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
        if len(sealed) < TAG_SIZE:
            raise ValueError("MAC check failed")
        ciphertext, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        keystream = self._keystream(nonce, len(ciphertext))
        # GCM authenticates the ciphertext: check the tag before decrypting.
        if not tags_equal(self._tag(keystream, aad, ciphertext), tag):
            raise ValueError("MAC check failed")
        return xor_bytes(ciphertext, keystream[_BLOCK : _BLOCK + len(ciphertext)])

    def _keystream(self, nonce: bytes, size: int) -> bytes:
        """E(J0) then the data's keystream blocks, from one ECB call
        (SP 800-38D algorithm 4, steps 2 and 3, with a 96-bit IV)."""
        if size > _MAX_DATA:
            raise ValueError("GCM cannot encrypt that much under one nonce")
        blocks = 1 + (size + _BLOCK - 1) // _BLOCK
        prefix = _checked(nonce) + b"\0\0\0\0"
        if blocks * _BLOCK <= len(_COUNTERS):
            counters = xor_bytes(prefix * blocks, _COUNTERS[: blocks * _BLOCK])
        else:
            counters = b"".join(prefix[:NONCE_SIZE] + i.to_bytes(4, "big") for i in range(1, blocks + 1))
        return self._ecb.encrypt(counters)

    def _tag(self, keystream: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """E(J0) XOR GHASH(A || 0* || C || 0* || len(A) || len(C)) (steps 5 and 6)."""
        blocks = b"".join(
            (
                aad,
                bytes(-len(aad) % _BLOCK),
                ciphertext,
                bytes(-len(ciphertext) % _BLOCK),
                struct.pack(">QQ", 8 * len(aad), 8 * len(ciphertext)),
            )
        )
        x = self._x
        y = x.buffer(_BLOCK)  # zeros: GHASH starts from Y0 = 0
        if self._ghash_c(y, x.pointer(blocks), x.size(len(blocks)), y, self._tables._exp_key.get()):
            raise ValueError("GHASH failed")
        return xor_bytes(x.raw(y), keystream[:_BLOCK])

    def __repr__(self) -> str:
        return "<PrecomputedGcm>"


def _checked(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError("this GCM takes 12-byte nonces only")
    return bytes(nonce)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """``a`` XOR ``b``, of equal lengths: the keystream applied to the data.

    Public with ``tags_equal``, as the two steps of opening a record, so that
    a test can watch their order: no plaintext before the tag is checked.
    """
    if len(a) <= _INT_XOR_LIMIT:
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
    return strxor(a, b)


def tags_equal(expected: bytes, received: bytes) -> bool:
    """Compare as pycryptodomex's ``verify`` does: BLAKE2s under a fresh
    random key over both tags, then the digests (in constant time too), so
    the timing says nothing an attacker can aim at."""
    secret = get_random_bytes(16)
    return hmac.compare_digest(
        hashlib.blake2s(expected, digest_size=20, key=secret).digest(),
        hashlib.blake2s(received, digest_size=20, key=secret).digest(),
    )


# Known answers the fast path must give before it is trusted: the GCM
# specification's test case 16 (AES-256, 60 bytes, AAD), and lengths around
# the block size against AES.new itself.
_KAT_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
_KAT_NONCE = bytes.fromhex("cafebabefacedbaddecaf888")
_KAT_AAD = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
_KAT_PLAINTEXT = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
_KAT_SEALED = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    "76fc6ece0f4e1768cddf8853bb2d551b"
)


def _passes_known_answers(gcm: Gcm) -> bool:
    if gcm.seal(_KAT_NONCE, _KAT_PLAINTEXT, _KAT_AAD) != _KAT_SEALED:
        return False
    if gcm.open(_KAT_NONCE, _KAT_SEALED, _KAT_AAD) != _KAT_PLAINTEXT:
        return False
    reference = LibraryGcm(_KAT_KEY)
    for size in (0, 1, 15, 16, 17, 600):
        data = bytes(range(256)) * 3
        if gcm.seal(_KAT_NONCE, data[:size], data[size : size + 5]) != reference.seal(
            _KAT_NONCE, data[:size], data[size : size + 5]
        ):
            return False
    return True


def choose() -> Callable[[bytes], Gcm]:
    """``PrecomputedGcm`` if pycryptodomex's internals are where they were
    and give the known answers; else ``LibraryGcm``."""
    internals = _load_internals()
    if internals is None:
        return LibraryGcm

    def precomputed(key: bytes) -> Gcm:
        return PrecomputedGcm(key, internals)

    try:
        if _passes_known_answers(precomputed(_KAT_KEY)):
            return precomputed
    except Exception:  # anything at all from changed internals: use the library as it is
        pass
    return LibraryGcm


#: ``new(key)``: the AES-GCM object for a key (``PrecomputedGcm`` where it
#: is safe, else ``LibraryGcm``).
new = choose()
#: Whether ``new`` is the precomputed one.
FAST = new is not LibraryGcm
