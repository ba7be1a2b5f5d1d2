"""Attacks on loopback: a server that is not the one the client knows, a
relay that swaps the server's X25519 share, and a recording decrypted later
with the server's private key (forward secrecy)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
import threading

import pytest

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import DecryptionError, EphemeralKey, RecordOpener
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    ClientConnection,
    ConnectionClosed,
    HandshakeComplete,
    RemoteProtocolError,
    ServerHello,
    UserJoined,
    decode_message,
)
from tests.conftest import start_server, stop_server
from tests.helpers import ChatTestClient
from tests.procs import ROOT

TIMEOUT = 15.0
MARKER = "tangerine-zeppelin-4417"  # distinctive: must never be on the wire in plaintext
CLIENT_EPHEMERAL = bytes(range(1, 33))  # the pinned X25519 private key of the recorded client
ATTACKER_EPHEMERAL = bytes(range(101, 133))


def fingerprint_of(key) -> str:
    return crypto_utils.fingerprint(crypto_utils.export_public_key(key))


def run_client(port: int, data_home, *options: str, stdin: str) -> subprocess.CompletedProcess:
    """client.py as a process, stdin a pipe with ``stdin`` in it, then closed."""
    env = dict(os.environ, XDG_DATA_HOME=str(data_home), PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-u", "client.py", "--host", "127.0.0.1", "--port", str(port), *options],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
    )


# --- a man in the middle with its own key -----------------------------------------


class Impostor:
    """An in-process server with the impostor's key that records every join attempt."""

    def __init__(self, key) -> None:
        self.server, self._thread = start_server(key)
        self.port = self.server.server_address[1]
        self.join_attempts: list[str] = []
        real_join = self.server.room.join

        def recording_join(member, name):
            self.join_attempts.append(name)
            return real_join(member, name)

        self.server.room.join = recording_join
        self._stopped = False

    def stop(self) -> None:
        """Stop, waiting for the connection threads: nothing can happen after."""
        if not self._stopped:
            self._stopped = True
            stop_server(self.server, self._thread)


@pytest.fixture
def impostor(impostor_key, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    impostor = Impostor(impostor_key)
    try:
        yield impostor
    finally:
        impostor.stop()


def assert_refused(result, impostor, real_fp, caplog) -> None:
    impostor.stop()
    assert result.returncode != 0
    assert "WARNING" in result.stderr
    assert real_fp in result.stderr and impostor.server.fingerprint in result.stderr
    assert "Traceback" not in result.stderr
    assert "Encryption is established." not in result.stdout
    assert impostor.join_attempts == [] and impostor.server.room.names() == []
    log = caplog.text
    assert ": connected" in log  # the client did reach the impostor
    assert "handshake complete" not in log and "joined" not in log


def test_recorded_key_refuses_a_server_with_another_key(impostor, identity_key, tmp_path, caplog):
    real_fp = fingerprint_of(identity_key)
    port = impostor.port
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"127.0.0.1:{port} {real_fp}\n", encoding="utf-8")

    result = run_client(
        port, tmp_path / "data", "--known-hosts", str(known_hosts), stdin="Randall Flagg\nthe plans are in the vault\n"
    )

    assert_refused(result, impostor, real_fp, caplog)
    assert known_hosts.read_text(encoding="utf-8") == f"127.0.0.1:{port} {real_fp}\n"


def test_pinned_fingerprint_refuses_a_server_with_another_key(impostor, identity_key, tmp_path, caplog):
    real_fp = fingerprint_of(identity_key)
    known_hosts = tmp_path / "known_hosts"

    result = run_client(
        impostor.port,
        tmp_path / "data",
        "--known-hosts",
        str(known_hosts),
        "--fingerprint",
        real_fp,
        stdin="Randall Flagg\nthe plans are in the vault\n",
    )

    assert_refused(result, impostor, real_fp, caplog)
    assert not known_hosts.exists() or known_hosts.read_text(encoding="utf-8") == ""


def test_pinned_fingerprint_accepts_the_real_server(running_server, connect, identity_key, tmp_path):
    observer = connect("Observer")
    known_hosts = tmp_path / "known_hosts"

    result = run_client(
        running_server.server_address[1],
        tmp_path / "data",
        "--known-hosts",
        str(known_hosts),
        "--fingerprint",
        fingerprint_of(identity_key),
        stdin="Randall Flagg\n",
    )

    assert result.returncode == 0, result.stderr
    assert "Encryption is established." in result.stdout.splitlines()
    assert observer.expect(UserJoined).name == "Randall Flagg"
    assert fingerprint_of(identity_key) in known_hosts.read_text(encoding="utf-8")


# --- a relay in the middle ----------------------------------------------------------


def split_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """(header, body) of each whole frame: 4-byte big-endian length, then body."""
    frames, offset = [], 0
    while offset + 4 <= len(data):
        (length,) = struct.unpack_from("!I", data, offset)
        if offset + 4 + length > len(data):
            break
        frames.append((data[offset : offset + 4], data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    return frames


def parse_handshake(body: bytes, kind: int) -> tuple[bytes, bytes, bytes]:
    """(random, X25519 share, sized field) of a hello (0x01) or key exchange (0x02)."""
    assert body[0] == kind and body[1] == 1
    random, share = body[2:34], body[34:66]
    (length,) = struct.unpack_from("!H", body, 66)
    assert len(body) == 68 + length
    return random, share, body[68:]


def swap_share(hello_body: bytes, share: bytes) -> bytes:
    return hello_body[:34] + share + hello_body[66:]


class RecordingProxy:
    """Relays one connection to ``target`` and records every byte per direction
    (as forwarded). ``rewrite_hello`` may replace the first server frame's body."""

    def __init__(self, target, rewrite_hello=None) -> None:
        self.target = target
        self.rewrite_hello = rewrite_hello
        self.recorded = {"c2s": bytearray(), "s2c": bytearray()}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self.address = self._listener.getsockname()[:2]
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        try:
            downstream, _ = self._listener.accept()
            upstream = socket.create_connection(self.target, timeout=TIMEOUT)
        except OSError:
            return
        self._sockets += [downstream, upstream]
        for source, sink, direction in ((downstream, upstream, "c2s"), (upstream, downstream, "s2c")):
            thread = threading.Thread(target=self._pump, args=(source, sink, direction), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        pending = bytearray() if direction == "s2c" and self.rewrite_hello else None
        try:
            source.settimeout(None)
            while data := source.recv(65536):
                if pending is not None:
                    pending += data
                    frames = split_frames(bytes(pending))
                    if not frames:
                        continue
                    _header, body = frames[0]
                    new_body = self.rewrite_hello(body)
                    data = struct.pack("!I", len(new_body)) + new_body + bytes(pending[4 + len(body) :])
                    pending = None
                self.recorded[direction] += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed at the end of the test

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(5)


def finish_handshake(client: ChatTestClient) -> str:
    """How the rest of the handshake ends: "complete", "refused" or "closed"."""
    try:
        while True:
            event = client.next_event()
            if isinstance(event, HandshakeComplete):
                return "complete"
            if isinstance(event, ConnectionClosed):
                return "closed"
    except RemoteProtocolError:
        return "refused"


def test_relay_that_swaps_the_server_share_cannot_complete_the_handshake(running_server, identity_key):
    attacker_share = EphemeralKey(ATTACKER_EPHEMERAL).public_bytes
    proxy = RecordingProxy(running_server.server_address, lambda hello: swap_share(hello, attacker_share))
    client = None
    try:
        client = ChatTestClient(proxy.address)
        hello = client.expect(ServerHello)
        assert hello.fingerprint == fingerprint_of(identity_key)  # the real identity, relayed
        client.conn.accept_server_key()
        client.flush()

        assert finish_handshake(client) in ("refused", "closed")
        (_, forwarded_hello), *_ = split_frames(bytes(proxy.recorded["s2c"]))
        assert parse_handshake(forwarded_hello, 0x01)[1] == attacker_share
        assert running_server.room.names() == []
    finally:
        if client is not None:
            client.close()
        proxy.close()


# --- forward secrecy ------------------------------------------------------------------


def record_a_session(server_address, peer: ChatTestClient) -> RecordingProxy:
    """A client with a pinned ephemeral key chats with ``peer`` through a
    recording proxy: MARKER lines both ways. Returns the (closed) proxy."""
    proxy = RecordingProxy(server_address)
    client = None
    try:
        client = ChatTestClient(proxy.address, ClientConnection(ephemeral_key=EphemeralKey(CLIENT_EPHEMERAL)))
        client.handshake()
        client.join("Recorded")
        assert peer.expect(UserJoined).name == "Recorded"
        for n in (1, 2):
            client.say(f"{MARKER} from the client, line {n}")
            assert peer.expect(ChatMessage).text == f"{MARKER} from the client, line {n}"
            peer.say(f"{MARKER} from the peer, line {n}")
            assert client.expect(ChatMessage).text == f"{MARKER} from the peer, line {n}"
    finally:
        if client is not None:
            client.close()
        proxy.close()
    return proxy


def opener(keys, direction: str) -> RecordOpener:
    if direction == "s2c":
        return RecordOpener(keys.server_to_client_key, keys.server_to_client_iv)
    return RecordOpener(keys.client_to_server_key, keys.client_to_server_iv)


def test_recording_cannot_be_decrypted_with_the_server_private_key(running_server, connect, identity_key):
    peer = connect("Peer")
    proxy = record_a_session(running_server.server_address, peer)
    s2c = split_frames(bytes(proxy.recorded["s2c"]))
    c2s = split_frames(bytes(proxy.recorded["c2s"]))
    assert MARKER.encode() not in proxy.recorded["s2c"] + proxy.recorded["c2s"]

    # The attacker holds the server's RSA key and the recording.
    hello_body, kex_body = s2c[0][1], c2s[0][1]
    _, server_share, server_der = parse_handshake(hello_body, 0x01)
    _, client_share, wrapped = parse_handshake(kex_body, 0x02)
    assert server_der == crypto_utils.export_public_key(identity_key)
    secret = crypto_utils.unwrap_key(identity_key, wrapped)  # the attacker really has the key
    transcript = crypto_utils.transcript_hash(hello_body, kex_body)
    header, first_record = s2c[1]
    for guess in (bytes(32), server_share, client_share, secret):
        keys = crypto_utils.derive_session_keys(secret, guess, transcript)
        with pytest.raises(DecryptionError):
            opener(keys, "s2c").open(first_record, aad=header)

    # Positive control: with the client's ephemeral key (which the attacker
    # lacks) the same harness decrypts the recording.
    assert client_share == EphemeralKey(CLIENT_EPHEMERAL).public_bytes
    shared = EphemeralKey(CLIENT_EPHEMERAL).agree(server_share)
    keys = crypto_utils.derive_session_keys(secret, shared, transcript)
    assert opener(keys, "s2c").open(first_record, aad=header) == b"HI"
    client_records = opener(keys, "c2s")
    plaintexts = [client_records.open(body, aad=header) for header, body in c2s[1:]]
    assert plaintexts[0] == b"HI"
    assert ChatLine(f"{MARKER} from the client, line 1") in [decode_message(p) for p in plaintexts[1:]]
