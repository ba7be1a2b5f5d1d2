"""keystore.py: the server's identity key file, and the client's known hosts
(trust on first use, as ssh does)."""

from __future__ import annotations

import stat

import pytest

import crypto_utils
import keystore

SERVER = "127.0.0.1:8756"


def fingerprint_of(key) -> str:
    return crypto_utils.fingerprint(crypto_utils.export_public_key(key))


@pytest.fixture
def real_fp(identity_key):
    return fingerprint_of(identity_key)


@pytest.fixture
def other_fp(impostor_key):
    return fingerprint_of(impostor_key)


@pytest.fixture
def known(tmp_path):
    return keystore.KnownHosts(tmp_path / "socket-chat" / "known_hosts")


def entries(known) -> list[str]:
    return known.path.read_text(encoding="utf-8").splitlines()


# --- known hosts ---------------------------------------------------------------


def test_first_contact_records_key_and_shows_fingerprint(known, real_fp):
    note = keystore.check_server_key(known, SERVER, real_fp, None)

    assert real_fp in note
    assert entries(known) == [f"{SERVER} {real_fp}"]
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600


def test_same_key_again_is_accepted_silently(known, real_fp):
    keystore.check_server_key(known, SERVER, real_fp, None)

    assert keystore.check_server_key(known, SERVER, real_fp, None) is None
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_changed_key_is_refused_with_both_fingerprints(known, real_fp, other_fp):
    keystore.check_server_key(known, SERVER, real_fp, None)

    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, None)

    text = str(refused.value)
    assert real_fp in text and other_fp in text and "--fingerprint" in text
    assert entries(known) == [f"{SERVER} {real_fp}"]  # the recorded key stays


def test_pin_that_differs_is_refused_on_first_contact(known, real_fp, other_fp):
    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, pinned=real_fp)

    text = str(refused.value)
    assert real_fp in text and other_fp in text
    assert not known.path.exists()  # nothing recorded


def test_pin_that_matches_replaces_a_stale_entry(known, real_fp, other_fp):
    known.remember(SERVER, other_fp)

    assert keystore.check_server_key(known, SERVER, real_fp, pinned=real_fp) is None
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_entries_for_other_hosts_are_kept(known, real_fp, other_fp):
    known.remember("10.0.0.1:8756", other_fp)
    known.remember(SERVER, other_fp)
    known.remember("[::1]:9000", other_fp)

    keystore.check_server_key(known, SERVER, real_fp, pinned=real_fp)

    assert sorted(entries(known)) == sorted(
        [f"10.0.0.1:8756 {other_fp}", f"[::1]:9000 {other_fp}", f"{SERVER} {real_fp}"]
    )


# --- the identity key file ---------------------------------------------------


def test_identity_key_is_created_private_then_loaded(tmp_path, monkeypatch, identity_key):
    path = tmp_path / "data" / "socket-chat" / "server_key.pem"
    monkeypatch.setattr(crypto_utils, "generate_rsa_keypair", lambda *a, **k: identity_key)

    first = keystore.load_or_create_identity_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.parent.is_dir()
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0

    def must_not_generate(*args, **kwargs):
        raise AssertionError("the existing key should be loaded, not replaced")

    monkeypatch.setattr(crypto_utils, "generate_rsa_keypair", must_not_generate)
    second = keystore.load_or_create_identity_key(path)

    assert crypto_utils.export_public_key(second) == crypto_utils.export_public_key(first)
    assert crypto_utils.export_public_key(first) == crypto_utils.export_public_key(identity_key)
    assert second.has_private()


def test_identity_key_readable_by_others_is_refused(tmp_path, identity_key):
    path = tmp_path / "server_key.pem"
    path.write_bytes(crypto_utils.export_private_key(identity_key))
    path.chmod(0o644)

    with pytest.raises(keystore.KeyFileError, match="chmod 600"):
        keystore.load_or_create_identity_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # reported, not silently fixed


@pytest.mark.parametrize("content", [b"garbage, not a key\n", b"", "public"], ids=["garbage", "empty", "public"])
def test_identity_key_file_that_is_not_a_private_key_is_refused(tmp_path, identity_key, content):
    if content == "public":
        content = identity_key.public_key().export_key(format="PEM")
    path = tmp_path / "server_key.pem"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(keystore.KeyFileError):
        keystore.load_or_create_identity_key(path)
    assert path.read_bytes() == content  # left as it was


def test_identity_key_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(keystore.KeyFileError, match="not a file"):
        keystore.load_or_create_identity_key(tmp_path)


def test_identity_key_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch, identity_key):
    monkeypatch.setattr(crypto_utils, "generate_rsa_keypair", lambda: identity_key)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(keystore.KeyFileError, match="Cannot use the server key file"):
        keystore.load_or_create_identity_key(blocker / "server_key.pem")
