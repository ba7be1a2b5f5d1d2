"""aes_gcm: the precomputed AES-GCM gives AES.new's records byte for byte
(the GCM specification's test vectors, random keys, nonces, AAD and lengths
0 to 65,536), checks the tag before any plaintext exists, and falls back to
AES.new when pycryptodomex's internals are not the ones it was checked with.
"""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

import hypothesis.configuration
import pytest
from Cryptodome.Cipher import AES, _mode_gcm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import aes_gcm
from tests.wire import ConnectionPair

hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "socket-chat-hypothesis")

ROOT = Path(__file__).resolve().parent.parent
MAX_RECORD = 65_536

# --- the GCM specification's test vectors -------------------------------------
# McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)", revised
# 2005, appendix B (the test vectors NIST published with SP 800-38D): every
# case with a 96-bit IV, for AES-128, -192 and -256.

_P = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_A = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
_IV = bytes.fromhex("cafebabefacedbaddecaf888")
_K128 = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
_K192 = _K128 + _K128[:8]
_K256 = _K128 + _K128

# case: key, iv, plaintext, aad, ciphertext, tag
NIST_VECTORS = {
    1: (bytes(16), bytes(12), b"", b"", "", "58e2fccefa7e3061367f1d57a4e7455a"),
    2: (bytes(16), bytes(12), bytes(16), b"", "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"),
    3: (
        _K128,
        _IV,
        _P,
        b"",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    4: (
        _K128,
        _IV,
        _P[:60],
        _A,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    7: (bytes(24), bytes(12), b"", b"", "", "cd33b28ac773f74ba00ed1f312572435"),
    8: (bytes(24), bytes(12), bytes(16), b"", "98e7247c07f0fe411c267e4384b0f600", "2ff58d80033927ab8ef4d4587514f0fb"),
    9: (
        _K192,
        _IV,
        _P,
        b"",
        "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
        "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256",
        "9924a7c8587336bfb118024db8674a14",
    ),
    10: (
        _K192,
        _IV,
        _P[:60],
        _A,
        "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
        "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
        "2519498e80f1478f37ba55bd6d27618c",
    ),
    13: (bytes(32), bytes(12), b"", b"", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    14: (bytes(32), bytes(12), bytes(16), b"", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"),
    15: (
        _K256,
        _IV,
        _P,
        b"",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    16: (
        _K256,
        _IV,
        _P[:60],
        _A,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
}

#: Both implementations: the one in use and the fallback.
IMPLEMENTATIONS = {"new": aes_gcm.new, "LibraryGcm": aes_gcm.LibraryGcm}


def reference_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """A record the way pycryptodomex's own GCM mode makes it."""
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def test_the_pinned_library_gets_the_precomputed_gcm():
    # Where requirements.txt's pycryptodomex is installed (CI, the venv), the
    # fast path is in use; only another release may fall back.
    import Cryptodome

    if Cryptodome.__version__ == aes_gcm.PINNED_PYCRYPTODOMEX:
        assert aes_gcm.FAST
        assert isinstance(aes_gcm.new(bytes(32)), aes_gcm.PrecomputedGcm)


def test_the_pinned_version_is_the_one_in_requirements():
    pins = re.findall(r"^pycryptodomex==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pins == [aes_gcm.PINNED_PYCRYPTODOMEX]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
@pytest.mark.parametrize("case", NIST_VECTORS, ids=[f"case{n}" for n in NIST_VECTORS])
def test_nist_gcm_vectors(implementation, case):
    key, iv, plaintext, aad, ciphertext, tag = NIST_VECTORS[case]
    sealed = bytes.fromhex(ciphertext + tag)
    gcm = implementation(key)
    assert gcm.seal(iv, plaintext, aad) == sealed
    assert gcm.open(iv, sealed, aad) == plaintext


# --- the same records as AES.new ---------------------------------------------

PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def records(draw, max_size: int = MAX_RECORD):
    """A key, a nonce, AAD and a plaintext. Lengths are drawn, and long
    plaintexts are made from a drawn seed, so the whole range 0 to 65,536
    is cheap to cover; lengths around the block size come up often."""
    key = draw(st.binary(min_size=32, max_size=32))
    nonce = draw(st.binary(min_size=12, max_size=12))
    aad = draw(st.binary(max_size=100))
    size = draw(
        st.one_of(
            st.integers(0, 48),
            st.integers(0, max_size),
            st.sampled_from([max_size, max_size - 1, max_size - 16, max_size - 17]),
        )
    )
    plaintext = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    return key, nonce, aad, plaintext


@PROPERTY
@given(records())
def test_sealed_records_are_byte_identical_to_aes_new(record):
    key, nonce, aad, plaintext = record
    sealed = aes_gcm.new(key).seal(nonce, plaintext, aad)
    assert sealed == reference_seal(key, nonce, plaintext, aad)
    assert aes_gcm.new(key).open(nonce, sealed, aad) == plaintext


@settings(PROPERTY, max_examples=150)
@given(records(max_size=300), st.integers(0, 10_000), st.integers(0, 7))
def test_any_changed_bit_fails_to_open(record, position, bit):
    key, nonce, aad, plaintext = record
    gcm = aes_gcm.new(key)
    sealed = bytearray(gcm.seal(nonce, plaintext, aad))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(ValueError):
        gcm.open(nonce, bytes(sealed), aad)


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, MAX_RECORD + 1, 8192))
def test_every_length_up_to_65536_is_byte_identical_to_aes_new(start):
    rng = random.Random(start)
    key, nonce = rng.randbytes(32), rng.randbytes(12)
    gcm = aes_gcm.new(key)
    data = memoryview(rng.randbytes(MAX_RECORD))
    for size in range(start, min(start + 8192, MAX_RECORD + 1)):
        plaintext, aad = data[:size], data[size % 97 : size % 97 + size % 23]
        sealed = gcm.seal(nonce, plaintext, aad)
        assert sealed == reference_seal(key, nonce, plaintext, aad), size
        assert gcm.open(nonce, sealed, aad) == plaintext


@pytest.mark.slow
@settings(PROPERTY, max_examples=3_000)
@given(records())
def test_many_more_records_are_byte_identical_to_aes_new(record):
    key, nonce, aad, plaintext = record
    assert aes_gcm.new(key).seal(nonce, plaintext, aad) == reference_seal(key, nonce, plaintext, aad)


def test_a_record_longer_than_the_counter_table_is_still_right():
    key, nonce = bytes(range(32)), bytes(range(12))
    plaintext = bytes(range(256)) * 300  # 76,800 bytes: past the 64 KiB table
    assert aes_gcm.new(key).seal(nonce, plaintext, b"h") == reference_seal(key, nonce, plaintext, b"h")


# --- opening: the tag first, in constant time ---------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
@pytest.mark.parametrize("size", [0, 1, 15])
def test_a_record_shorter_than_a_tag_is_refused(implementation, size):
    with pytest.raises(ValueError):
        implementation(bytes(32)).open(bytes(12), bytes(size))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_wrong_aad_nonce_or_key_fails_to_open(implementation):
    sealed = implementation(bytes(32)).seal(bytes(12), b"a line", b"aad")
    for key, nonce, aad in [(bytes(32), bytes(12), b"aaD"), (bytes(32), b"\1" + bytes(11), b"aad")]:
        with pytest.raises(ValueError):
            implementation(key).open(nonce, sealed, aad)
    with pytest.raises(ValueError):
        implementation(b"\1" + bytes(31)).open(bytes(12), sealed, b"aad")


def test_no_plaintext_is_made_before_the_tag_is_checked(monkeypatch):
    if not aes_gcm.FAST:
        pytest.skip("the fallback is pycryptodomex's own decrypt_and_verify")
    gcm = aes_gcm.new(bytes(32))
    sealed = gcm.seal(bytes(12), b"secret words", b"")
    events = []
    xor, tags_equal = aes_gcm.xor_bytes, aes_gcm.tags_equal

    def spy_xor(a, b):
        if a == sealed[: -aes_gcm.TAG_SIZE]:
            events.append("decrypt")
        return xor(a, b)

    def spy_tags_equal(expected, received):
        result = tags_equal(expected, received)
        events.append(f"tag {'ok' if result else 'bad'}")
        return result

    monkeypatch.setattr(aes_gcm, "xor_bytes", spy_xor)
    monkeypatch.setattr(aes_gcm, "tags_equal", spy_tags_equal)
    assert gcm.open(bytes(12), sealed, b"") == b"secret words"
    assert events == ["tag ok", "decrypt"]
    events.clear()
    with pytest.raises(ValueError):
        gcm.open(bytes(12), sealed[:-1] + bytes([sealed[-1] ^ 1]), b"")
    assert events == ["tag bad"]


def test_tags_are_compared_in_constant_time_over_keyed_blake2s(monkeypatch):
    compared = []

    def spy_compare_digest(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(aes_gcm.hmac, "compare_digest", spy_compare_digest)
    tag = bytes(range(16))
    assert aes_gcm.tags_equal(tag, tag)
    assert not aes_gcm.tags_equal(tag, bytes(16))
    assert len(compared) == 2
    # What is compared is a keyed digest of each tag, never the tags.
    assert all(len(a) == len(b) == 20 and tag not in (a, b) for a, b in compared)
    # A fresh key each time: the same tag gives a different digest.
    assert compared[0][0] != compared[1][0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
@pytest.mark.parametrize("nonce", [b"", bytes(8), bytes(16)])
def test_only_12_byte_nonces_are_taken(implementation, nonce):
    with pytest.raises(ValueError):
        implementation(bytes(32)).seal(nonce, b"x")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_a_key_of_the_wrong_size_is_refused(implementation):
    with pytest.raises(ValueError):
        implementation(bytes(31))


def test_the_objects_show_no_key_bytes():
    key = bytes(range(100, 132))
    for implementation in IMPLEMENTATIONS.values():
        text = repr(implementation(key))
        assert key.hex() not in text and str(key) not in text


# --- the guarded import and the fallback ----------------------------------------


def test_without_pycryptodomexs_ghash_the_library_gcm_is_used(monkeypatch):
    monkeypatch.delattr(_mode_gcm, "_GHASH")
    assert aes_gcm.choose() is aes_gcm.LibraryGcm


def test_a_ghash_that_gives_other_answers_makes_it_fall_back(monkeypatch):
    """The internals load, with a GHASH of the right prototype that leaves
    Y at zero (every tag wrong): the known answers catch it."""
    internals = aes_gcm._load_internals()
    assert internals is not None  # the pinned release, as installed
    wrong = internals._replace(ghash=aes_gcm._GHASH_CALL(lambda *args: 0))
    monkeypatch.setattr(aes_gcm, "_load_internals", lambda: wrong)
    answers = []
    check = aes_gcm._passes_known_answers
    monkeypatch.setattr(aes_gcm, "_passes_known_answers", lambda gcm: answers.append(check(gcm)) or answers[-1])
    assert aes_gcm.choose() is aes_gcm.LibraryGcm
    assert answers == [False]


def test_another_pycryptodomex_release_gets_the_library_gcm(monkeypatch):
    """The direct calls' prototypes are the pinned release's: another one
    could have changed a signature, and a wrong call could write out of
    bounds before any known answer is checked."""
    import Cryptodome

    monkeypatch.setattr(Cryptodome, "__version__", "3.99.0")
    assert aes_gcm._load_internals() is None
    assert aes_gcm.choose() is aes_gcm.LibraryGcm


def test_a_ghash_that_raises_makes_it_fall_back(monkeypatch):
    class Broken:
        def __init__(self, subkey, impl):
            raise RuntimeError("internals changed")

    monkeypatch.setattr(_mode_gcm, "_GHASH", Broken)
    assert aes_gcm.choose() is aes_gcm.LibraryGcm


def test_the_record_layer_works_and_interoperates_on_the_fallback(monkeypatch):
    key, iv = bytes(range(32)), bytes(range(12))
    fast_sealer = crypto_utils.RecordSealer(key, iv)
    monkeypatch.setattr(aes_gcm, "new", aes_gcm.LibraryGcm)
    sealer, opener = crypto_utils.RecordSealer(key, iv), crypto_utils.RecordOpener(key, iv)
    records = [sealer.seal(b"line %d" % n, aad=b"hdr") for n in range(3)]
    assert records == [fast_sealer.seal(b"line %d" % n, aad=b"hdr") for n in range(3)]
    assert [opener.open(record, aad=b"hdr") for record in records] == [b"line 0", b"line 1", b"line 2"]
    with pytest.raises(crypto_utils.DecryptionError):
        opener.open(records[0], aad=b"hdr")  # a replay


def a_conversation_on_the_wire(identity_key) -> tuple[bytes, list]:
    """A handshake and a line each way between pinned-randomness connections:
    the server's line as sent, and what each side received."""
    pair = ConnectionPair(identity_key)
    received = pair.handshake()
    pair.server.send(protocol.ChatMessage("alice", "hello"))
    line = pair.server.data_to_send()
    pair.deliver(pair.server, line)
    pair.client.send(protocol.ChatLine("hi"))
    pair.deliver(pair.client)
    return line, [*received, pair.received[pair.client][-1], pair.received[pair.server][-1]]


def test_a_whole_connection_is_the_same_on_the_wire_on_the_fallback(monkeypatch, identity_key):
    fast = a_conversation_on_the_wire(identity_key)
    monkeypatch.setattr(aes_gcm, "new", aes_gcm.LibraryGcm)
    assert a_conversation_on_the_wire(identity_key) == fast
    assert fast[1][-2:] == [protocol.ChatMessage("alice", "hello"), protocol.ChatLine("hi")]


def test_on_a_cpu_without_clmul_the_portable_ghash_gives_the_same_records(monkeypatch):
    monkeypatch.setattr(_mode_gcm, "_ghash_clmul", None)
    new = aes_gcm.choose()
    assert new is not aes_gcm.LibraryGcm
    for key, iv, plaintext, aad, ciphertext, tag in NIST_VECTORS.values():
        assert new(key).seal(iv, plaintext, aad) == bytes.fromhex(ciphertext + tag)
    key, nonce, data = bytes(range(32)), bytes(range(12)), bytes(range(256)) * 20
    assert new(key).seal(nonce, data, b"aad") == reference_seal(key, nonce, data, b"aad")
