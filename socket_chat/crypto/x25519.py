"""X25519 (RFC 7748) on pycryptodomex's curve25519 C code, without its ECC
objects.

pycryptodomex's public path (``DH.import_x25519_private_key``,
``import_x25519_public_key``, ``key_agreement``) wraps one C scalar
multiplication in ECC key and point objects whose Python integer arithmetic
costs about four times the multiplication itself: most of the X25519 a
server pays for each handshake. ``RawX25519`` calls the same C functions
(``Cryptodome.PublicKey._curve25519`` through ``_point._curves``) directly:
clamp the scalar, decode the u-coordinate, multiply, encode.

Those are private API, checked with pycryptodomex ``PINNED_PYCRYPTODOMEX``
(requirements.txt pins it). At import they are looked up and RFC 7748's test
vectors run through them; if either fails, ``x25519`` is ``library_x25519``,
the public path: slower, same results (tests/test_x25519.py checks both
against the RFC and each other).
"""

from __future__ import annotations

import hmac
import importlib
from collections.abc import Callable
from typing import Any

from Cryptodome.Protocol import DH

__all__ = ["PINNED_PYCRYPTODOMEX", "SIZE", "BASE_POINT", "LowOrderPoint", "x25519", "library_x25519", "FAST"]

PINNED_PYCRYPTODOMEX = "3.24.2"
SIZE = 32
BASE_POINT = (9).to_bytes(SIZE, "little")

X25519 = Callable[[bytes, bytes], bytes]


class LowOrderPoint(ValueError):
    """The peer's u-coordinate is a point of small order: the shared secret
    would be all zero (RFC 7748 section 6.1)."""


def _checked(scalar: bytes, u: bytes) -> None:
    if len(scalar) != SIZE or len(u) != SIZE:
        raise ValueError("X25519 takes a 32-byte scalar and a 32-byte u-coordinate")


def library_x25519(scalar: bytes, u: bytes) -> bytes:
    """X25519(scalar, u) through pycryptodomex's public ECC objects.

    Raises:
        ValueError: a length is not 32 bytes.
        LowOrderPoint: ``u`` is of small order.
    """
    _checked(scalar, u)
    private = DH.import_x25519_private_key(scalar)
    try:
        # Refuses the low-order points beforehand (PROTOCOL.md: the same check).
        peer = DH.import_x25519_public_key(u)
    except ValueError:
        raise LowOrderPoint("X25519 public key of small order") from None
    shared = bytes(DH.key_agreement(eph_priv=private, eph_pub=peer, kdf=bytes))
    if hmac.compare_digest(shared, bytes(SIZE)):
        raise LowOrderPoint("X25519 shared secret is all zero")
    return shared


def _raw_x25519_of(rawlib: Any, helpers: Any) -> X25519:
    """X25519 over ``rawlib`` (pycryptodomex's ``EcLib`` for curve25519)."""
    void_pointer, smart_pointer, uint8_ptr, size_t, ulonglong, null, getrandbits = helpers

    def raw_x25519(scalar: bytes, u: bytes) -> bytes:
        """X25519(scalar, u) in one C scalar multiplication.

        Raises:
            ValueError: a length is not 32 bytes.
            LowOrderPoint: ``u`` is of small order.
        """
        _checked(scalar, u)
        # RFC 7748 section 5: clamp the scalar; decode u little-endian with
        # the top bit ignored (a value of p or more is taken modulo p by the
        # C code). The C functions take both big-endian.
        k = bytearray(scalar)
        k[0] &= 248
        k[31] = (k[31] & 127) | 64
        coordinate = bytearray(u)
        coordinate[31] &= 127
        handle = void_pointer()
        if rawlib.new_point(handle.address_of(), uint8_ptr(bytes(coordinate[::-1])), size_t(SIZE), null):
            raise ValueError("not an X25519 u-coordinate")
        point = smart_pointer(handle.get(), rawlib.free_point)
        # The random seed blinds the ladder, as pycryptodomex's own path does.
        if rawlib.scalar(point.get(), uint8_ptr(bytes(k[::-1])), size_t(SIZE), ulonglong(getrandbits(64))):
            raise ValueError("X25519 scalar multiplication failed")
        out = bytearray(SIZE)
        # Small order: the result is the point at infinity, which has no u
        # (its encoding would be all zero).
        if rawlib.get_x(uint8_ptr(out), size_t(SIZE), point.get()):
            raise LowOrderPoint("X25519 shared secret is all zero")
        shared = bytes(out[::-1])
        if hmac.compare_digest(shared, bytes(SIZE)):
            raise LowOrderPoint("X25519 shared secret is all zero")
        return shared

    return raw_x25519


def _load_raw() -> X25519 | None:
    """``raw_x25519`` over pycryptodomex's internals, or None where they are not where they were."""
    try:
        # Typed Any: the library's stubs leave its private names out.
        point_module: Any = importlib.import_module("Cryptodome.PublicKey._point")
        raw_api: Any = importlib.import_module("Cryptodome.Util._raw_api")
        from Cryptodome.Random.random import getrandbits

        rawlib = point_module._curves["curve25519"].rawlib
        helpers = (
            raw_api.VoidPointer,
            raw_api.SmartPointer,
            raw_api.c_uint8_ptr,
            raw_api.c_size_t,
            raw_api.c_ulonglong,
            raw_api.null_pointer,
            getrandbits,
        )
        for name in ("new_point", "free_point", "scalar", "get_x"):
            getattr(rawlib, name)
        return _raw_x25519_of(rawlib, helpers)
    except (ImportError, AttributeError, KeyError):
        return None


# RFC 7748 section 5.2 (the first test vector) and section 6.1 (Alice and Bob).
_KNOWN_ANSWERS = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        BASE_POINT.hex(),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    ),
    (
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    ),
]


def _passes_known_answers(function: X25519) -> bool:
    for scalar, u, expected in _KNOWN_ANSWERS:
        if function(bytes.fromhex(scalar), bytes.fromhex(u)) != bytes.fromhex(expected):
            return False
    try:
        function(bytes(range(SIZE)), bytes(SIZE))  # u = 0: small order
    except LowOrderPoint:
        return True
    return False


def choose() -> X25519:
    """The raw C path if pycryptodomex's internals are where they were and
    give RFC 7748's answers; else ``library_x25519``."""
    raw = _load_raw()
    try:
        if raw is not None and _passes_known_answers(raw):
            return raw
    except Exception:  # anything at all from changed internals: use the public path
        pass
    return library_x25519


#: ``x25519(scalar, u)``: the 32-byte X25519 function (RFC 7748 section 5).
x25519 = choose()
#: Whether ``x25519`` is the raw C path.
FAST = x25519 is not library_x25519
