"""crypto/keystore.py: the server's identity key file, and the client's known hosts
(trust on first use, as ssh does)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import types
from pathlib import Path

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import keystore

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


def accept(known, server, offered, pinned=None, confirmed=False):
    """What the client does: check, then (the handshake done) record."""
    check = keystore.check_server_key(known, server, offered, pinned)
    return keystore.record_server_key(known, check, confirmed=confirmed)


def test_first_contact_records_nothing_until_the_handshake_is_done(known, real_fp):
    check = keystore.check_server_key(known, SERVER, real_fp, None)

    assert check.first_contact
    assert not known.path.exists()  # a server that never proves the key is never recorded
    note = keystore.record_server_key(known, check)

    assert real_fp in note and str(known.path) in note
    assert entries(known) == [f"{SERVER} {real_fp}"]
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600


def test_first_contact_record_after_the_person_accepted_names_the_file(known, real_fp):
    note = accept(known, SERVER, real_fp, confirmed=True)

    assert str(known.path) in note
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_same_key_again_is_accepted_silently(known, real_fp):
    accept(known, SERVER, real_fp)

    check = keystore.check_server_key(known, SERVER, real_fp, None)
    assert not check.first_contact
    assert keystore.record_server_key(known, check) is None
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_changed_key_is_refused_with_both_fingerprints(known, real_fp, other_fp):
    accept(known, SERVER, real_fp)

    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, None)

    text = str(refused.value)
    assert real_fp in text and other_fp in text and "--fingerprint" in text
    assert "HAS CHANGED" in text
    assert entries(known) == [f"{SERVER} {real_fp}"]  # the recorded key stays


def test_pin_that_differs_is_refused_on_first_contact(known, real_fp, other_fp):
    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, pinned=real_fp)

    text = str(refused.value)
    assert real_fp in text and other_fp in text
    assert not known.path.exists()  # nothing recorded


def test_a_wrong_pin_on_a_first_connection_does_not_say_the_key_changed(known, real_fp, other_fp):
    with pytest.raises(keystore.ServerKeyRefused) as refused:
        keystore.check_server_key(known, SERVER, other_fp, pinned=real_fp)

    text = str(refused.value)
    assert "CHANGED" not in text.upper()
    assert "NOT THE ONE GIVEN WITH --fingerprint" in text
    assert "Nothing is recorded for this server" in text


def test_pin_that_matches_replaces_a_stale_entry(known, real_fp, other_fp):
    known.remember(SERVER, other_fp)

    assert entries(known) == [f"{SERVER} {other_fp}"]
    accept(known, SERVER, real_fp, pinned=real_fp)
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_a_pin_that_replaces_a_stored_key_says_so(known, real_fp, other_fp):
    known.remember(SERVER, other_fp)

    check = keystore.check_server_key(known, SERVER, real_fp, pinned=real_fp)
    assert entries(known) == [f"{SERVER} {other_fp}"]  # not before the handshake is done
    note = keystore.record_server_key(known, check)

    assert "replaced" in note and other_fp in note and real_fp in note and "--fingerprint" in note
    assert entries(known) == [f"{SERVER} {real_fp}"]


def test_a_pin_that_matches_the_stored_key_is_silent(known, real_fp):
    known.remember(SERVER, real_fp)

    assert accept(known, SERVER, real_fp, pinned=real_fp) is None


def test_entries_for_other_hosts_are_kept(known, real_fp, other_fp):
    known.remember("10.0.0.1:8756", other_fp)
    known.remember(SERVER, other_fp)
    known.remember("[::1]:9000", other_fp)

    accept(known, SERVER, real_fp, pinned=real_fp)

    assert sorted(entries(known)) == sorted(
        [f"10.0.0.1:8756 {other_fp}", f"[::1]:9000 {other_fp}", f"{SERVER} {real_fp}"]
    )


# --- writing known hosts safely ------------------------------------------------


def test_known_hosts_write_does_not_follow_a_planted_symlink(known, real_fp, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    known.path.parent.mkdir(parents=True)
    # The old code wrote through known_hosts.tmp; a link there, or in the
    # file's own place, must not lead the write elsewhere.
    (known.path.parent / "known_hosts.tmp").symlink_to(victim)

    known.remember(SERVER, real_fp)

    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert entries(known) == [f"{SERVER} {real_fp}"]
    assert not known.path.is_symlink()
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600
    leftovers = {p.name for p in known.path.parent.iterdir()} - {"known_hosts", "known_hosts.tmp"}
    assert leftovers == set()  # no temporary file left behind


def test_known_hosts_replace_keeps_the_file_private_and_whole(known, real_fp, other_fp):
    known.remember("10.0.0.1:8756", other_fp)
    known.path.chmod(0o644)  # readable by others is allowed; the new file is 0600 all the same

    known.remember(SERVER, real_fp)

    assert entries(known) == ["10.0.0.1:8756 " + other_fp, f"{SERVER} {real_fp}"]
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600


# --- StrictModes: owners and directories ------------------------------------------


def test_known_hosts_writable_by_others_is_refused(known, real_fp):
    known.remember(SERVER, real_fp)
    known.path.chmod(0o666)

    with pytest.raises(keystore.KeyFileError, match="chmod go-w") as refused:
        keystore.check_server_key(known, SERVER, real_fp, None)
    assert str(known.path) in str(refused.value)


def test_known_hosts_in_a_world_writable_directory_is_refused(tmp_path, real_fp):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    known = keystore.KnownHosts(shared / "known_hosts")

    with pytest.raises(keystore.KeyFileError, match=f"chmod go-w {shared}"):
        keystore.check_server_key(known, SERVER, real_fp, None)
    assert not known.path.exists()


def test_identity_key_in_a_world_writable_directory_is_refused(tmp_path, identity_key):
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "server_key.pem"
    path.write_bytes(crypto_utils.export_private_key(identity_key))
    path.chmod(0o600)
    shared.chmod(0o777)

    with pytest.raises(keystore.KeyFileError) as refused:
        keystore.load_or_create_identity_key(path)

    text = str(refused.value)
    assert str(shared) in text and "writable by others" in text and f"chmod go-w {shared}" in text


def test_a_group_writable_directory_higher_up_is_refused_too(tmp_path, identity_key, monkeypatch):
    monkeypatch.setattr(keystore, "_is_private_group", lambda gid, uid: False)  # a group others are in
    upper = tmp_path / "upper"
    inner = upper / "inner"
    inner.mkdir(parents=True)
    upper.chmod(0o775)
    path = inner / "server_key.pem"

    with pytest.raises(keystore.KeyFileError, match=f"chmod go-w {upper}"):
        keystore.load_or_create_identity_key(path)
    assert not path.exists()  # not even made


def test_a_group_writable_directory_of_the_users_own_group_is_allowed(tmp_path, monkeypatch):
    # umask 002, where each user has a group of their own: directories are
    # group-writable, and that lets no one else in.
    gid = os.stat(tmp_path).st_gid
    user = types.SimpleNamespace(pw_name="ann", pw_gid=gid)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: user)
    own_group = types.SimpleNamespace(gr_name="ann", gr_mem=[])
    monkeypatch.setattr(grp, "getgrgid", lambda g: own_group)
    shared = tmp_path / "dir"
    shared.mkdir()
    shared.chmod(0o775)

    keystore.check_safe_path(shared / "known_hosts", "known hosts file")

    own_group.gr_mem = ["bob"]  # someone else is in it: refused
    with pytest.raises(keystore.KeyFileError, match=f"chmod go-w {shared}"):
        keystore.check_safe_path(shared / "known_hosts", "known hosts file")
    own_group.gr_mem, own_group.gr_name = [], "staff"  # not named as the user: refused
    with pytest.raises(keystore.KeyFileError, match=f"chmod go-w {shared}"):
        keystore.check_safe_path(shared / "known_hosts", "known hosts file")


def test_a_sticky_root_directory_above_is_allowed_but_not_as_the_files_own(tmp_path):
    # /tmp is root's, world-writable and sticky: others may add entries but
    # not replace ours, so a private directory inside it is safe.
    tmp = Path("/tmp")
    info = tmp.stat()
    if info.st_uid != 0 or not info.st_mode & stat.S_ISVTX:
        pytest.skip("/tmp is not a sticky directory of root's here")
    keystore.check_safe_path(tmp_path / "known_hosts", "known hosts file")  # tmp_path is under /tmp or the like
    with pytest.raises(keystore.KeyFileError, match="writable by others"):
        keystore.check_safe_path(tmp / "a-key-right-in-tmp.pem", "server key")


def test_a_file_or_directory_of_another_user_is_refused(tmp_path, identity_key):
    path = tmp_path / "server_key.pem"
    path.write_bytes(crypto_utils.export_private_key(identity_key))
    path.chmod(0o600)
    if os.geteuid() == 0:
        # Root's files are always allowed, so give the file away.
        os.chown(path, 12345, -1)
        me = 0
    else:
        me = os.geteuid() + 12345  # as if this user were another: no chown needed

    with pytest.raises(keystore.KeyFileError, match="belongs to another user"):
        keystore.check_safe_path(path, "server key", private=True, uid=me)
    other_dir = tmp_path / "theirs"
    other_dir.mkdir()
    if os.geteuid() == 0:
        os.chown(other_dir, 12345, -1)
    with pytest.raises(keystore.KeyFileError, match=f"directory {other_dir} belongs to another user"):
        keystore.check_safe_path(other_dir / "known_hosts", "known hosts file", uid=me)


def test_a_symlinked_key_is_checked_where_it_leads(tmp_path, identity_key):
    shared = tmp_path / "shared"
    shared.mkdir()
    real = shared / "server_key.pem"
    real.write_bytes(crypto_utils.export_private_key(identity_key))
    real.chmod(0o600)
    shared.chmod(0o777)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "server_key.pem").symlink_to(real)

    with pytest.raises(keystore.KeyFileError, match=f"chmod go-w {shared}"):
        keystore.load_or_create_identity_key(mine / "server_key.pem")


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
