"""x25519: the raw C path gives RFC 7748's answers and the public ECC path's,
refuses the same low-order points, and falls back to the public path when
pycryptodomex's internals are not the ones it was checked with."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import hypothesis.configuration
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socket_chat.crypto import x25519
from socket_chat.crypto.x25519 import BASE_POINT, LowOrderPoint, library_x25519

hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "socket-chat-hypothesis")

ROOT = Path(__file__).resolve().parent.parent
P = 2**255 - 19
IMPLEMENTATIONS = {"x25519": x25519.x25519, "library_x25519": library_x25519}
both = pytest.mark.parametrize("function", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())

# RFC 7748 section 5.2: scalar, u, output.
RFC_5_2 = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]
# RFC 7748 section 6.1.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

_X1 = 325606250916557431795983626356110631294008115727848805560023387167927233504
_X2 = 39382357235489614581723060781553021112529911719440698176882885853963445705823
#: The points of small order and their encodings plus p (those below 2**255).
LOW_ORDER = {"0": 0, "1": 1, "x1": _X1, "x2": _X2, "p-1": P - 1, "p": P, "p+1": P + 1}


def test_the_pinned_library_gets_the_raw_path():
    import Cryptodome

    if Cryptodome.__version__ == x25519.PINNED_PYCRYPTODOMEX:
        assert x25519.FAST


def test_the_pinned_version_is_the_one_in_requirements():
    pins = re.findall(r"^pycryptodomex==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pins == [x25519.PINNED_PYCRYPTODOMEX]


@both
@pytest.mark.parametrize(("scalar", "u", "output"), RFC_5_2)
def test_rfc7748_section_5_2_vectors(function, scalar, u, output):
    assert function(bytes.fromhex(scalar), bytes.fromhex(u)).hex() == output


@both
def test_rfc7748_section_6_1_key_agreement(function):
    assert function(ALICE_PRIVATE, BASE_POINT) == ALICE_PUBLIC
    assert function(BOB_PRIVATE, BASE_POINT) == BOB_PUBLIC
    assert function(ALICE_PRIVATE, BOB_PUBLIC) == function(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


def test_rfc7748_section_5_2_after_1000_iterations():
    k = u = BASE_POINT
    for _ in range(1000):
        k, u = x25519.x25519(k, u), k
    assert k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


@both
@pytest.mark.parametrize("point", LOW_ORDER.values(), ids=LOW_ORDER.keys())
def test_points_of_small_order_are_refused(function, point):
    with pytest.raises(LowOrderPoint):
        function(bytes(range(32)), point.to_bytes(32, "little"))


@both
@pytest.mark.parametrize(("scalar", "u"), [(bytes(31), BASE_POINT), (bytes(32), bytes(33)), (bytes(32), b"")])
def test_lengths_other_than_32_are_refused(function, scalar, u):
    with pytest.raises(ValueError):
        function(scalar, u)


@settings(deadline=None, derandomize=True, database=None, max_examples=100)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_the_raw_path_agrees_with_the_library_on_any_input(scalar, u):
    # Any bytes: the top bit set, values of p or more (taken modulo p).
    try:
        expected = library_x25519(scalar, u)
    except LowOrderPoint:
        with pytest.raises(LowOrderPoint):
            x25519.x25519(scalar, u)
    else:
        assert x25519.x25519(scalar, u) == expected


@pytest.mark.parametrize("u", [P + 9, 2**255 - 1, 2**256 - 1, P + _X1])
def test_non_canonical_u_coordinates_agree(u):
    scalar = bytes(range(32))
    assert x25519.x25519(scalar, u.to_bytes(32, "little")) == library_x25519(scalar, u.to_bytes(32, "little"))


# --- the guarded import and the fallback ----------------------------------------


def test_without_the_curve_tables_the_library_path_is_used(monkeypatch):
    from Cryptodome.PublicKey import _point

    monkeypatch.delattr(_point, "_curves")
    assert x25519.choose() is library_x25519


def test_a_raw_library_that_gives_other_answers_makes_it_fall_back(monkeypatch):
    from Cryptodome.PublicKey import _point

    rawlib = _point._curves["curve25519"].rawlib
    monkeypatch.setattr(rawlib, "scalar", lambda *args: 0)  # multiplies by nothing
    assert x25519.choose() is library_x25519


def test_a_raw_library_that_fails_makes_it_fall_back(monkeypatch):
    from Cryptodome.PublicKey import _point

    rawlib = _point._curves["curve25519"].rawlib

    def broken(*args):
        raise OSError("internals changed")

    monkeypatch.setattr(rawlib, "new_point", broken)
    assert x25519.choose() is library_x25519


def test_the_handshake_works_on_the_fallback(monkeypatch):
    from socket_chat import crypto as crypto_utils

    raw_public = crypto_utils.EphemeralKey(ALICE_PRIVATE).public_bytes
    monkeypatch.setattr(x25519, "x25519", library_x25519)
    alice, bob = crypto_utils.EphemeralKey(ALICE_PRIVATE), crypto_utils.EphemeralKey(BOB_PRIVATE)
    assert alice.public_bytes == raw_public == ALICE_PUBLIC
    assert alice.agree(bob.public_bytes) == SHARED
    with pytest.raises(crypto_utils.KeyAgreementError):
        alice.agree(bytes(32))
