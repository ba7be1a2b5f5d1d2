"""socket_chat.crypto: the record layer, RSA key wrapping, fingerprints, X25519 and
the key schedule, each checked against published vectors or an independent
computation written here with the standard library."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from Cryptodome.Cipher import AES
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.asn1 import DerSequence

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import (
    DecryptionError,
    EphemeralKey,
    KeyAgreementError,
    KeyFormatError,
    RecordOpener,
    RecordSealer,
    SequenceExhaustedError,
    SessionKeys,
)
from socket_chat.crypto.handshake import hkdf_sha256

KEY = bytes(range(32))
IV = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
OTHER_KEY = bytes(range(1, 33))
PLAINTEXT = b"the same line, sent twice"
AAD = b"\x00\x00\x00\x29"


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


# --- the record layer: AES-256-GCM ------------------------------------------


def test_record_round_trip():
    sealer, opener = RecordSealer(KEY, IV), RecordOpener(KEY, IV)
    for plaintext in (b"first", b"", b"\x00" * 1000, "ünïcödé".encode()):
        assert opener.open(sealer.seal(plaintext, aad=AAD), aad=AAD) == plaintext


def test_sealed_record_is_ciphertext_then_tag():
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT)
    assert len(sealed) == len(PLAINTEXT) + crypto_utils.TAG_SIZE
    assert PLAINTEXT not in sealed


def test_same_plaintext_sealed_twice_differs():
    sealer = RecordSealer(KEY, IV)
    first, second = sealer.seal(PLAINTEXT, aad=AAD), sealer.seal(PLAINTEXT, aad=AAD)
    assert first != second
    # Not only the tag: the keystream itself moved on with the sequence.
    assert first[: -crypto_utils.TAG_SIZE] != second[: -crypto_utils.TAG_SIZE]


def test_sequence_counts_records():
    sealer, opener = RecordSealer(KEY, IV), RecordOpener(KEY, IV)
    assert (sealer.sequence, opener.sequence) == (0, 0)
    opener.open(sealer.seal(b"x"))
    opener.open(sealer.seal(b"y"))
    assert (sealer.sequence, opener.sequence) == (2, 2)


@pytest.mark.parametrize("index", [0, 7, len(PLAINTEXT) - 1], ids=["first", "middle", "last"])
def test_flipped_ciphertext_bit_is_refused(index):
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT, aad=AAD)
    with pytest.raises(DecryptionError):
        RecordOpener(KEY, IV).open(flip_bit(sealed, index, bit=3), aad=AAD)


@pytest.mark.parametrize("index", [-16, -8, -1], ids=["first", "middle", "last"])
def test_flipped_tag_bit_is_refused(index):
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT, aad=AAD)
    with pytest.raises(DecryptionError):
        RecordOpener(KEY, IV).open(flip_bit(sealed, index, bit=7), aad=AAD)


@pytest.mark.parametrize(
    "aad",
    [flip_bit(AAD, 3), flip_bit(AAD, 0, bit=7), b"", AAD + b"\x00"],
    ids=["flipped-low-bit", "flipped-high-bit", "missing", "extended"],
)
def test_changed_aad_is_refused(aad):
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT, aad=AAD)
    with pytest.raises(DecryptionError):
        RecordOpener(KEY, IV).open(sealed, aad=aad)


def test_replayed_record_is_refused():
    sealer, opener = RecordSealer(KEY, IV), RecordOpener(KEY, IV)
    record = sealer.seal(PLAINTEXT)
    assert opener.open(record) == PLAINTEXT
    with pytest.raises(DecryptionError):
        opener.open(record)


def test_skipped_record_is_refused():
    sealer, opener = RecordSealer(KEY, IV), RecordOpener(KEY, IV)
    sealer.seal(b"dropped on the way")
    with pytest.raises(DecryptionError):
        opener.open(sealer.seal(PLAINTEXT))


def test_reordered_records_are_refused():
    sealer, opener = RecordSealer(KEY, IV), RecordOpener(KEY, IV)
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    with pytest.raises(DecryptionError):
        opener.open(second)
    # And the control: in order, the same bytes open.
    in_order = RecordOpener(KEY, IV)
    assert (in_order.open(first), in_order.open(second)) == (b"one", b"two")


@pytest.mark.parametrize("size", [0, 1, crypto_utils.TAG_SIZE - 1])
def test_record_shorter_than_tag_is_refused(size):
    with pytest.raises(DecryptionError):
        RecordOpener(KEY, IV).open(bytes(size))


def test_empty_plaintext_is_a_tag_only_record():
    sealed = RecordSealer(KEY, IV).seal(b"")
    assert len(sealed) == crypto_utils.TAG_SIZE
    assert RecordOpener(KEY, IV).open(sealed) == b""


def test_wrong_key_is_refused():
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT)
    with pytest.raises(DecryptionError):
        RecordOpener(OTHER_KEY, IV).open(sealed)


def test_wrong_iv_is_refused():
    sealed = RecordSealer(KEY, IV).seal(PLAINTEXT)
    with pytest.raises(DecryptionError):
        RecordOpener(KEY, flip_bit(IV, 11)).open(sealed)


@pytest.mark.parametrize("key, iv", [(KEY[:16], IV), (KEY + b"\x00", IV), (KEY, IV[:8]), (KEY, IV + b"\x00")])
def test_record_direction_needs_aes256_key_and_12_byte_iv(key, iv):
    with pytest.raises(ValueError):
        RecordSealer(key, iv)
    with pytest.raises(ValueError):
        RecordOpener(key, iv)


def test_last_sequence_number_seals_then_exhausts():
    sealer = RecordSealer(KEY, IV, first_sequence=crypto_utils.MAX_SEQUENCE)
    last = sealer.seal(PLAINTEXT)
    with pytest.raises(SequenceExhaustedError):
        sealer.seal(PLAINTEXT)
    opener = RecordOpener(KEY, IV, first_sequence=crypto_utils.MAX_SEQUENCE)
    assert opener.open(last) == PLAINTEXT
    with pytest.raises(SequenceExhaustedError):
        opener.open(last)


def test_max_sequence_is_2_to_the_64_minus_1():
    assert crypto_utils.MAX_SEQUENCE == 2**64 - 1


def expected_nonce(iv: bytes, sequence: int) -> bytes:
    """RFC 8446 section 5.3, computed on integers rather than bytes."""
    return (int.from_bytes(iv, "big") ^ sequence).to_bytes(12, "big")


def test_nonce_is_iv_xor_padded_sequence_worked_example():
    # iv XOR (4 zero bytes || 8-byte big-endian 2**40): only byte 6 changes.
    assert expected_nonce(IV, 2**40) == bytes.fromhex("a0a1a2a3a4a5a7a7a8a9aaab")


@pytest.mark.parametrize("sequence", [0, 1, 2**40, crypto_utils.MAX_SEQUENCE])
def test_nonce_is_iv_xor_sequence(sequence):
    cipher = AES.new(KEY, AES.MODE_GCM, nonce=expected_nonce(IV, sequence))
    cipher.update(AAD)
    ciphertext, tag = cipher.encrypt_and_digest(PLAINTEXT)
    sealer = RecordSealer(KEY, IV, first_sequence=sequence)
    assert sealer.seal(PLAINTEXT, aad=AAD) == ciphertext + tag


def test_consecutive_records_use_nonces_0_1_2():
    sealer = RecordSealer(KEY, IV)
    for sequence in range(3):
        cipher = AES.new(KEY, AES.MODE_GCM, nonce=expected_nonce(IV, sequence))
        ciphertext, tag = cipher.encrypt_and_digest(PLAINTEXT)
        assert sealer.seal(PLAINTEXT) == ciphertext + tag


def test_record_direction_repr_shows_sequence_not_key():
    sealer = RecordSealer(KEY, IV, first_sequence=5)
    text = repr(sealer)
    assert "sequence=5" in text
    assert KEY.hex() not in text and repr(KEY) not in text and IV.hex() not in text


# --- identity: RSA -----------------------------------------------------------


def test_wrap_unwrap_round_trip(identity_key):
    secret = bytes(range(100, 132))
    wrapped = crypto_utils.wrap_key(identity_key.public_key(), secret)
    assert len(wrapped) == identity_key.size_in_bytes()
    assert secret not in wrapped
    assert crypto_utils.unwrap_key(identity_key, wrapped) == secret


def test_wrap_is_randomized(identity_key):
    public = identity_key.public_key()
    secret = bytes(32)
    assert crypto_utils.wrap_key(public, secret) != crypto_utils.wrap_key(public, secret)


def test_wrap_with_pinned_rng_is_deterministic(identity_key):
    public = identity_key.public_key()

    def rng(size):
        return b"\x42" * size

    assert crypto_utils.wrap_key(public, b"s" * 32, rng=rng) == crypto_utils.wrap_key(public, b"s" * 32, rng=rng)


def test_unwrap_with_wrong_key_is_refused(identity_key, impostor_key):
    wrapped = crypto_utils.wrap_key(identity_key.public_key(), bytes(32))
    with pytest.raises(DecryptionError):
        crypto_utils.unwrap_key(impostor_key, wrapped)


@pytest.mark.parametrize("index", [0, 1, 191, -1], ids=["first", "second", "middle", "last"])
def test_unwrap_of_altered_bytes_is_refused(identity_key, index):
    wrapped = crypto_utils.wrap_key(identity_key.public_key(), bytes(32))
    with pytest.raises(DecryptionError):
        crypto_utils.unwrap_key(identity_key, flip_bit(wrapped, index))


@pytest.mark.parametrize("cut", ["empty", "short", "long"])
def test_unwrap_of_wrong_length_is_refused(identity_key, cut):
    wrapped = crypto_utils.wrap_key(identity_key.public_key(), bytes(32))
    data = {"empty": b"", "short": wrapped[:-1], "long": wrapped + b"\x00"}[cut]
    with pytest.raises(DecryptionError):
        crypto_utils.unwrap_key(identity_key, data)


def test_private_key_export_import_round_trip(identity_key):
    pem = crypto_utils.export_private_key(identity_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert crypto_utils.import_private_key(pem) == identity_key


def test_import_private_key_refuses_a_public_key(identity_key):
    with pytest.raises(KeyFormatError):
        crypto_utils.import_private_key(identity_key.public_key().export_key(format="PEM"))


@pytest.mark.parametrize("what", ["garbage", "empty", "truncated", "passphrase"])
def test_import_private_key_refuses_what_is_not_an_unencrypted_key(identity_key, what):
    pem = crypto_utils.export_private_key(identity_key)
    data = {
        "garbage": b"not a key at all",
        "empty": b"",
        "truncated": pem[: len(pem) // 2],
        "passphrase": identity_key.export_key(
            format="PEM", pkcs=8, passphrase="secret", protection="PBKDF2WithHMAC-SHA1AndAES128-CBC"
        ),
    }[what]
    with pytest.raises(KeyFormatError):
        crypto_utils.import_private_key(data)


@pytest.mark.parametrize("form", ["pkcs8-der", "pkcs1-pem", "pkcs1-der"])
def test_import_private_key_reads_a_key_file_made_elsewhere(identity_key, form):
    # A key file is local: an operator's own key (openssl's PKCS#1, say) is read too.
    data = {
        "pkcs8-der": identity_key.export_key(format="DER", pkcs=8),
        "pkcs1-pem": identity_key.export_key(format="PEM", pkcs=1),
        "pkcs1-der": identity_key.export_key(format="DER", pkcs=1),
    }[form]
    assert crypto_utils.import_private_key(data) == identity_key


def test_public_key_export_import_round_trip(identity_key):
    der = crypto_utils.export_public_key(identity_key)
    assert der[0] == 0x30  # a DER SEQUENCE
    key = crypto_utils.import_public_key(der)
    assert not key.has_private()
    assert (key.n, key.e) == (identity_key.n, identity_key.e)


@pytest.mark.parametrize(
    "what",
    ["private", "garbage", "empty", "1024-bit", "pem", "openssh", "pkcs1-der", "trailing-byte", "long-form-length"],
)
def test_import_public_key_refuses(identity_key, what):
    # Only DER SubjectPublicKeyInfo, byte for byte as export_public_key makes
    # it: a key accepted in any other form would have another fingerprint.
    public = identity_key.public_key()
    der = crypto_utils.export_public_key(identity_key)
    data = {
        "private": identity_key.export_key(format="DER"),
        "pem": public.export_key(format="PEM"),
        "openssh": public.export_key(format="OpenSSH"),
        "pkcs1-der": DerSequence([public.n, public.e]).encode(),  # RSAPublicKey, no algorithm identifier
        "trailing-byte": der + b"\x00",
        "long-form-length": long_form_length(der),
        "garbage": b"\x30\x82\x01\x22" + b"\xff" * 40,
        "empty": b"",
        # A public key needs no factoring: any odd modulus will do.
        "1024-bit": RSA.construct(((1 << 1023) | 12345, 65537)).export_key(format="DER"),
    }[what]
    with pytest.raises(KeyFormatError):
        crypto_utils.import_public_key(data)


def long_form_length(der: bytes) -> bytes:
    """``der`` with its outer length in a longer form than DER allows (BER):
    the same key to a lenient parser, other bytes to the fingerprint."""
    assert der[1] == 0x82  # two length bytes follow
    return der[:1] + b"\x83\x00" + der[2:]


# --- fingerprints ------------------------------------------------------------


def test_fingerprint_is_ssh_style_sha256_of_der(identity_key):
    der = crypto_utils.export_public_key(identity_key)
    digest = hashlib.sha256(der).digest()
    expected = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
    assert crypto_utils.fingerprint(der) == expected


def test_fingerprint_has_no_padding_and_43_base64_chars(identity_key):
    fp = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
    assert fp.startswith("SHA256:")
    body = fp[len("SHA256:") :]
    assert len(body) == 43 and "=" not in body
    assert base64.b64decode(body + "=") == hashlib.sha256(crypto_utils.export_public_key(identity_key)).digest()


def test_fingerprint_of_known_bytes():
    # sha256(b"") = e3b0c442...; its base64 is well known from ssh and others.
    assert crypto_utils.fingerprint(b"") == "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"


def test_fingerprints_of_different_keys_differ(identity_key, impostor_key):
    assert crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key)) != crypto_utils.fingerprint(
        crypto_utils.export_public_key(impostor_key)
    )


def test_fingerprints_equal(identity_key, impostor_key):
    real = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
    other = crypto_utils.fingerprint(crypto_utils.export_public_key(impostor_key))
    assert crypto_utils.fingerprints_equal(real, str(real))
    assert not crypto_utils.fingerprints_equal(real, other)
    assert not crypto_utils.fingerprints_equal(real, real[:-1])
    assert not crypto_utils.fingerprints_equal(real, real.lower())


# --- forward secrecy: X25519 (RFC 7748 section 6.1) ---------------------------

ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748_public_keys():
    assert EphemeralKey(ALICE_PRIVATE).public_bytes == ALICE_PUBLIC
    assert EphemeralKey(BOB_PRIVATE).public_bytes == BOB_PUBLIC


def test_x25519_rfc7748_shared_secret():
    assert EphemeralKey(ALICE_PRIVATE).agree(BOB_PUBLIC) == SHARED
    assert EphemeralKey(BOB_PRIVATE).agree(ALICE_PUBLIC) == SHARED


def test_generated_ephemeral_keys_agree():
    alice, bob = EphemeralKey.generate(), EphemeralKey.generate()
    assert alice.public_bytes != bob.public_bytes
    assert alice.agree(bob.public_bytes) == bob.agree(alice.public_bytes)


def test_generate_uses_the_given_rng():
    assert EphemeralKey.generate(rng=lambda size: ALICE_PRIVATE[:size]).public_bytes == ALICE_PUBLIC


_P = 2**255 - 19
LOW_ORDER_POINTS = {
    # RFC 7748 section 6.1 / the list in libsodium and in "May the Fourth Be With You".
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order-8-a": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order-8-b": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-1": (_P - 1).to_bytes(32, "little"),
    "p": _P.to_bytes(32, "little"),
    "p+1": (_P + 1).to_bytes(32, "little"),
}


@pytest.mark.parametrize("point", LOW_ORDER_POINTS.values(), ids=LOW_ORDER_POINTS.keys())
def test_low_order_peer_key_is_refused(point):
    with pytest.raises(KeyAgreementError):
        EphemeralKey(ALICE_PRIVATE).agree(point)


@pytest.mark.parametrize("peer", [b"", BOB_PUBLIC[:31], BOB_PUBLIC + b"\x00"], ids=["empty", "31", "33"])
def test_malformed_peer_key_is_refused(peer):
    with pytest.raises(KeyAgreementError):
        EphemeralKey(ALICE_PRIVATE).agree(peer)


def test_ephemeral_key_repr_shows_no_key_bytes():
    text = repr(EphemeralKey(ALICE_PRIVATE))
    for secret in (ALICE_PRIVATE, ALICE_PUBLIC):
        assert secret.hex() not in text and repr(secret) not in text
    assert text == "<EphemeralKey>"


def test_session_keys_repr_shows_no_key_bytes():
    values = [bytes([0xA1]) * 32, bytes([0xB2]) * 12, bytes([0xC3]) * 32, bytes([0xD4]) * 12]
    text = repr(SessionKeys(*values)) + str(SessionKeys(*values))
    for value in values:
        assert value.hex() not in text and repr(value) not in text
        assert repr(value)[2:6] not in text  # not even a few escaped bytes


# --- the key schedule: HKDF-SHA256 (RFC 5869) ---------------------------------


def reference_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac and hashlib, to check the module against."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def test_reference_hkdf_passes_rfc5869_test_case_1():
    okm = reference_hkdf(
        ikm=bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm == bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_reference_hkdf_passes_rfc5869_test_case_3():
    # Empty salt and info (RFC 5869 section 2.2: no salt is HashLen zeros).
    okm = reference_hkdf(ikm=bytes.fromhex("0b" * 22), salt=b"", info=b"", length=42)
    assert okm == bytes.fromhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")


RSA_SECRET = bytes(range(32))
TRANSCRIPT = hashlib.sha256(b"hello || key exchange").digest()


def test_derive_session_keys_matches_rfc5869():
    okm = reference_hkdf(RSA_SECRET + SHARED, TRANSCRIPT, b"socket-chat v1 session keys", 88)
    keys = crypto_utils.derive_session_keys(RSA_SECRET, SHARED, TRANSCRIPT)
    assert keys.client_to_server_key == okm[0:32]
    assert keys.server_to_client_key == okm[32:64]
    assert keys.client_to_server_iv == okm[64:76]
    assert keys.server_to_client_iv == okm[76:88]


def test_the_module_hkdf_passes_rfc5869_and_agrees_with_pycryptodomex():
    from Cryptodome.Hash import SHA256
    from Cryptodome.Protocol.KDF import HKDF

    ikm = bytes.fromhex("0b" * 22)
    case_1 = hkdf_sha256(ikm, bytes.fromhex("000102030405060708090a0b0c"), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert case_1 == bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    case_3 = hkdf_sha256(ikm, b"", b"", 42)
    assert case_3 == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    for length in (1, 32, 33, 88, 255):
        assert hkdf_sha256(RSA_SECRET, TRANSCRIPT, b"label", length) == HKDF(
            RSA_SECRET, length, salt=TRANSCRIPT, hashmod=SHA256, context=b"label"
        )


@pytest.mark.parametrize("changed", ["rsa_secret", "x25519_secret", "transcript"])
def test_every_input_changes_every_session_key(changed):
    inputs = {"rsa_secret": RSA_SECRET, "x25519_secret": SHARED, "transcript": TRANSCRIPT}
    before = crypto_utils.derive_session_keys(**inputs)
    inputs[changed] = flip_bit(inputs[changed], 0)
    after = crypto_utils.derive_session_keys(**inputs)
    assert before.client_to_server_key != after.client_to_server_key
    assert before.server_to_client_key != after.server_to_client_key
    assert before.client_to_server_iv != after.client_to_server_iv
    assert before.server_to_client_iv != after.server_to_client_iv


def test_directions_get_different_keys_and_ivs():
    keys = crypto_utils.derive_session_keys(RSA_SECRET, SHARED, TRANSCRIPT)
    assert keys.client_to_server_key != keys.server_to_client_key
    assert keys.client_to_server_iv != keys.server_to_client_iv


def test_transcript_hash_is_sha256_of_messages_in_order():
    assert crypto_utils.transcript_hash(b"hello", b"key exchange") == hashlib.sha256(b"hellokey exchange").digest()
    assert crypto_utils.transcript_hash(b"a", b"b") != crypto_utils.transcript_hash(b"b", b"a")


def test_random_bytes_size_and_variety():
    values = {crypto_utils.random_bytes(32) for _ in range(4)}
    assert len(values) == 4 and all(len(value) == 32 for value in values)
