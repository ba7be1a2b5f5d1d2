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
(``_GHASH`` and ``_ghash_clmul`` / ``_ghash_portable``), used only with
pycryptodomex ``PINNED_PYCRYPTODOMEX`` (requirements.txt pins it). The ECB
and GHASH C functions are called straight, through ctypes prototypes of our
own that keep the GIL for the call (a record's few blocks take far less
than a hand-off of the GIL to another thread), not through the library's
Python wrappers. At import, on the pinned release only (a prototype of
ours that no longer matches a C signature could write out of bounds), the
internals are looked up and the result run against known answers; if any
of that fails, ``new`` is ``LibraryGcm``, which is ``AES.new`` per record as
before: slower, never wrong.

Opening checks the tag first, in constant time, before a byte of plaintext
exists. Both classes take 12-byte nonces only (the protocol's; GCM's other
nonce sizes go through GHASH and are not needed here).
"""

from __future__ import annotations

import ctypes
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
    """The parts of pycryptodomex's C library used here, called directly."""

    tables: Callable[[bytes, Any], Any]  # _GHASH(h, impl): expands H, frees the tables when dropped
    impl: Any  # the GHASH implementation (CLMUL or portable) the tables are for
    ecb_encrypt: Callable[..., int]  # ECB_encrypt(state, in, out, len): 0 or an error code
    ghash: Callable[..., int]  # ghash(y_out, data, len, y_in, tables): one call over whole blocks


# The library's own functions, through prototypes of our own with their
# argument types, made with PYFUNCTYPE: a call keeps the GIL. pycryptodomex
# calls them through a CDLL, which lets the GIL go and takes it back around
# every call (a chance for every other thread to run in between, and a
# hand-off to pay); an ECB call over a chat line's few blocks or a GHASH over
# them is far shorter than that hand-off. The same C code runs either way.
_ECB_ENCRYPT = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)
_GHASH_CALL = ctypes.PYFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
)


def _direct(function: Any, prototype: Any) -> Callable[..., int]:
    """``function`` (a ctypes function of a CDLL) through ``prototype``."""
    return prototype(ctypes.cast(function, ctypes.c_void_p).value)


def _load_internals() -> _Internals | None:
    """pycryptodomex's ECB and GHASH, or None where they are not where they
    were, or on any release but the pinned one: its C signatures are not
    checked, and a call through a wrong prototype could write out of
    bounds before a known answer is compared."""
    if importlib.import_module("Cryptodome").__version__ != PINNED_PYCRYPTODOMEX:
        return None
    try:
        # Typed Any: the library's stubs leave its private names out.
        _mode_gcm: Any = importlib.import_module("Cryptodome.Cipher._mode_gcm")
        _mode_ecb: Any = importlib.import_module("Cryptodome.Cipher._mode_ecb")
        impl = _mode_gcm._ghash_clmul or _mode_gcm._ghash_portable
        return _Internals(
            _mode_gcm._GHASH,
            impl,
            _direct(_mode_ecb.raw_ecb_lib.ECB_encrypt, _ECB_ENCRYPT),
            _direct(impl.ghash, _GHASH_CALL),
        )
    except (ImportError, AttributeError, TypeError, ctypes.ArgumentError):
        return None


# Counter blocks as integers, for records of up to _SMALL_BLOCKS blocks (a
# chat line, or a few): block i of a record is nonce || i (i from 1, J0
# first), so all of them are nonce * _REPEAT[n] | _COUNTS[n], one
# multiplication and one OR instead of building bytes block by block.
_SMALL_BLOCKS = 64
_REPEAT = [sum(1 << (128 * k + 32) for k in range(n)) for n in range(_SMALL_BLOCKS + 1)]
_COUNTS = [int.from_bytes(_COUNTERS[: n * _BLOCK], "big") for n in range(_SMALL_BLOCKS + 1)]
_ZERO_BLOCK = bytes(_BLOCK)
_Y = ctypes.c_char * _BLOCK
# ctypes array types by size, made once: a record's keystream is written into
# a fresh one (each record its own, so threads never share one).
_BUFFERS: dict[int, Any] = {}


def _buffer(size: int) -> Any:
    made = _BUFFERS.get(size)
    if made is None:
        made = _BUFFERS[size] = ctypes.c_char * size
    return made()


class PrecomputedGcm:
    """AES-GCM with the key schedule, H and GHASH's tables made once."""

    __slots__ = ("_ecb", "_tables", "_state", "_expanded", "_ecb_encrypt", "_ghash")

    def __init__(self, key: bytes, internals: _Internals):
        """Raises ValueError if ``key`` is not 16, 24 or 32 bytes long."""
        ecb: Any = AES.new(key, AES.MODE_ECB)  # typed Any: _state is the library's private handle
        self._ecb = ecb  # kept: it owns the key schedule _state points to
        self._tables = internals.tables(ecb.encrypt(_ZERO_BLOCK), internals.impl)  # owns _expanded
        self._state = ecb._state.get()
        self._expanded = self._tables._exp_key.get()
        self._ecb_encrypt = internals.ecb_encrypt
        self._ghash = internals.ghash

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        size = len(plaintext)
        if size > _INT_XOR_LIMIT or len(nonce) != NONCE_SIZE:
            keystream = self._keystream(nonce, size)
            ciphertext = xor_bytes(plaintext, keystream[_BLOCK : _BLOCK + size])
            return ciphertext + self._tag(keystream, aad, ciphertext)
        # A chat line: _keystream, xor_bytes and _tag inline, as one function
        # with the fewest Python steps, since this runs for every delivery.
        blocks = 1 + (size + _BLOCK - 1) // _BLOCK
        length = blocks * _BLOCK
        counters = (int.from_bytes(nonce, "big") * _REPEAT[blocks] | _COUNTS[blocks]).to_bytes(length, "big")
        out = _buffer(length)
        if self._ecb_encrypt(self._state, counters, out, length):
            raise ValueError("AES-ECB failed")
        keystream = out.raw
        ciphertext = (
            int.from_bytes(plaintext, "big") ^ int.from_bytes(keystream[_BLOCK : _BLOCK + size], "big")
        ).to_bytes(size, "big")
        hashed = b"".join(
            (
                aad,
                bytes(-len(aad) % _BLOCK),
                ciphertext,
                bytes(-size % _BLOCK),
                struct.pack(">QQ", 8 * len(aad), 8 * size),
            )
        )
        y = _Y()  # GHASH starts from Y0 = 0
        if self._ghash(y, hashed, len(hashed), _ZERO_BLOCK, self._expanded):
            raise ValueError("GHASH failed")
        tag = int.from_bytes(y.raw, "big") ^ int.from_bytes(keystream[:_BLOCK], "big")
        return ciphertext + tag.to_bytes(_BLOCK, "big")

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
        length = blocks * _BLOCK
        nonce = _checked(nonce)
        if blocks <= _SMALL_BLOCKS:
            counters = (int.from_bytes(nonce, "big") * _REPEAT[blocks] | _COUNTS[blocks]).to_bytes(length, "big")
        elif length <= len(_COUNTERS):
            counters = xor_bytes((nonce + b"\0\0\0\0") * blocks, _COUNTERS[:length])
        else:
            counters = b"".join(nonce + i.to_bytes(4, "big") for i in range(1, blocks + 1))
        out = _buffer(length)
        if self._ecb_encrypt(self._state, counters, out, length):
            raise ValueError("AES-ECB failed")
        return out.raw

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
        y = _Y()  # GHASH starts from Y0 = 0
        if self._ghash(y, blocks, len(blocks), _ZERO_BLOCK, self._expanded):
            raise ValueError("GHASH failed")
        return (int.from_bytes(y.raw, "big") ^ int.from_bytes(keystream[:_BLOCK], "big")).to_bytes(_BLOCK, "big")

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
