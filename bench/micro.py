"""Raw costs in process: one record, the RSA unwrap, a whole handshake, and
cProfile of the two hot paths (the server's handshake, the writer's sealing).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import struct
import time

from Cryptodome.Protocol import DH

from socket_chat import crypto as crypto_utils
from socket_chat import protocol
from socket_chat.crypto import aes_gcm
from socket_chat.protocol import ChatMessage

_KEY, _IV = bytes(range(32)), bytes(12)
SAMPLE = ChatMessage("alice", "r0 123 1234567890123456789")  # a typical bench line


def per_call_us(function, repeat: int) -> float:
    """Mean microseconds per call of ``function()`` over ``repeat`` calls:
    CPU time of this thread, so that whatever else runs on the machine does
    not count (the servers' figures beside these are CPU time too)."""
    begin = time.thread_time()
    for _ in range(repeat):
        function()
    return (time.thread_time() - begin) / repeat * 1e6


#: Names of figures other bench modules read (keep them stable).
SEAL = "seal one record (AES-256-GCM)"
OPEN = "open one record"
SEAL_AES_NEW = "AES.new(MODE_GCM) seal of one record (the yardstick)"
OPEN_AES_NEW = "AES.new(MODE_GCM) open of one record"
SEAL_BEFORE = "before issue 12: the record layer's seal (AES.new per record, per-byte nonce)"
OPEN_BEFORE = "before issue 12: the record layer's open"
UNWRAP = "RSA-3072 OAEP unwrap (server)"
X25519 = "X25519 key pair + agreement"
X25519_BEFORE = "before issue 12: X25519 key pair + agreement through pycryptodomex's ECC objects"
SERVER_HANDSHAKE = "server side of one handshake in process (CPU)"
SERVER_CRYPTO = "the server's own cryptography: one unwrap + one X25519 pair and agreement (CPU)"


def record_costs(repeat: int) -> dict[str, float]:
    """Microseconds for one record's seal and open, as the project makes them
    and as ``AES.new(key, MODE_GCM, nonce)`` per record made them before
    (the yardstick), all in this run."""
    from Cryptodome.Cipher import AES

    payload = protocol.encode_message(SAMPLE)
    header = b"\0\0\0\0"
    sealer = crypto_utils.RecordSealer(_KEY, _IV)
    sealed = [sealer.seal(payload, aad=header) for _ in range(repeat)]
    opener = crypto_utils.RecordOpener(_KEY, _IV)
    records = iter(sealed)
    fresh_sealer = crypto_utils.RecordSealer(_KEY, _IV)
    library = aes_gcm.LibraryGcm(_KEY)
    one = sealed[0]
    before_sealer, before_opener = _RecordsBefore(_KEY, _IV), _RecordsBefore(_KEY, _IV)
    before_records = iter(sealed)
    return {
        SEAL: per_call_us(lambda: fresh_sealer.seal(payload, aad=header), repeat),
        OPEN: per_call_us(lambda: opener.open(next(records), aad=header), repeat),
        "of which AES.new(MODE_GCM) setup": per_call_us(lambda: AES.new(_KEY, AES.MODE_GCM, nonce=_IV), repeat),
        SEAL_AES_NEW: per_call_us(lambda: library.seal(_IV, payload, header), repeat),
        OPEN_AES_NEW: per_call_us(lambda: library.open(_IV, one, header), repeat),
        SEAL_BEFORE: per_call_us(lambda: before_sealer.seal(payload, header), repeat),
        OPEN_BEFORE: per_call_us(lambda: before_opener.open(next(before_records), header), repeat),
        "encode one ChatMessage": per_call_us(lambda: protocol.encode_message(SAMPLE), repeat),
    }


class _RecordsBefore:
    """The record layer as it was before issue 12, for a before/after in one
    run: ``AES.new`` for every record and the nonce made byte by byte."""

    def __init__(self, key: bytes, iv: bytes):
        self.key, self.iv, self.sequence = key, iv, 0

    def _cipher(self):
        from Cryptodome.Cipher import AES

        padded = bytes(4) + struct.pack("!Q", self.sequence)
        self.sequence += 1
        nonce = bytes(a ^ b for a, b in zip(self.iv, padded, strict=True))
        return AES.new(self.key, AES.MODE_GCM, nonce=nonce)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        cipher = self._cipher()
        cipher.update(aad)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)
        return ciphertext + tag

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        cipher = self._cipher()
        cipher.update(aad)
        return cipher.decrypt_and_verify(sealed[:-16], sealed[-16:])


def handshake_costs(identity_key, repeat: int) -> dict[str, float]:
    """Microseconds for the handshake's parts and for a whole one in process.

    The ratio of the server's side to its own cryptography is the handshake
    target of issue 12 (≤ 1.2), and issue 22's for the whole server (≤ 1.3:
    bench/tables.py).
    """
    public = identity_key.public_key()
    wrapped = crypto_utils.wrap_key(public, bytes(32))
    identity = protocol.ServerIdentity.of(identity_key)
    unwrap = per_call_us(lambda: crypto_utils.unwrap_key(identity_key, wrapped), repeat)
    x25519_us = per_call_us(lambda: crypto_utils.EphemeralKey.generate().agree(_peer_share()), repeat)
    return {
        UNWRAP: unwrap,
        "RSA-3072 OAEP wrap (client)": per_call_us(lambda: crypto_utils.wrap_key(public, bytes(32)), repeat),
        "DER encoding of the server key (was once per connection, now once)": per_call_us(
            lambda: crypto_utils.export_public_key(identity_key), repeat
        ),
        X25519: x25519_us,
        X25519_BEFORE: per_call_us(lambda: _x25519_through_ecc_objects(_peer_share()), repeat),
        SERVER_CRYPTO: unwrap + x25519_us,
        SERVER_HANDSHAKE: server_handshake_cpu_us(identity, repeat),
        "whole handshake in process (both sides)": per_call_us(lambda: handshake_in_process(identity), repeat),
    }


def _x25519_through_ecc_objects(peer_share: bytes) -> bytes:
    """A key pair and an agreement the way crypto_utils made them before
    issue 12 (pycryptodomex's public DH and ECC objects)."""
    private = DH.import_x25519_private_key(crypto_utils.random_bytes(32))
    private.public_key().export_key(format="raw")
    peer = DH.import_x25519_public_key(peer_share)
    return bytes(DH.key_agreement(eph_priv=private, eph_pub=peer, kdf=bytes))


def server_handshake_cpu_us(identity: protocol.ServerIdentity, repeat: int) -> float:
    """CPU microseconds the server's ``ServerConnection`` spends on one
    handshake, from its hello to its OK; the client's work is not counted."""
    spent = 0.0
    for _ in range(repeat):
        client = protocol.ClientConnection()
        begin = time.thread_time()
        server = protocol.ServerConnection(identity)
        hello = server.data_to_send()
        spent += time.thread_time() - begin
        client.receive_data(hello)
        client.next_event()
        client.accept_server_key()
        for _ in range(2):  # key exchange -> HI, HI -> OK
            data = client.data_to_send()
            begin = time.thread_time()
            server.receive_data(data)
            server.next_event()
            reply = server.data_to_send()
            spent += time.thread_time() - begin
            client.receive_data(reply)
            client.next_event()
        assert server.state is client.state is protocol.ConnectionState.OPEN
    return spent / repeat * 1e6


_share = None


def _peer_share() -> bytes:
    global _share
    if _share is None:
        _share = crypto_utils.EphemeralKey.generate().public_bytes
    return _share


def handshake_in_process(identity: protocol.ServerIdentity) -> protocol.ServerConnection:
    """Both connection objects, wired to each other, to OPEN; the server's."""
    server = protocol.ServerConnection(identity)
    client = protocol.ClientConnection()
    client.receive_data(server.data_to_send())
    client.next_event()
    client.accept_server_key()
    for _ in range(2):  # key exchange -> HI, HI -> OK: each side answers the other
        server.receive_data(client.data_to_send())
        server.next_event()
        client.receive_data(server.data_to_send())
        client.next_event()
    assert server.state is client.state is protocol.ConnectionState.OPEN
    return server


def profile(function, repeat: int, top: int = 10, order: str = "tottime") -> str:
    """cProfile of ``repeat`` calls: the ``top`` functions by ``order``."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        function()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(order).print_stats(top)
    return _trim_pstats(out.getvalue())


def _trim_pstats(text: str) -> str:
    """pstats output from the column header on, with paths shortened."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    body = [_short_path(line) for line in lines[start:] if line.strip()]
    return "\n".join([total, *body])


def _short_path(line: str) -> str:
    """A pstats row with the file's path cut to what matters."""
    parts = line.split(None, 5)
    if len(parts) < 6:
        return line
    where = parts[5]
    for marker in ("site-packages/", "/wt-bench/", "/lib/python"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return " ".join(f"{p:>9}" for p in parts[:5]) + "  " + where


def writer_sealing(batch: int, messages: int):
    """A function that seals ``messages`` ChatMessages the way the writer
    does: ``batch`` at a time (1 = one record per message)."""
    sealer = _open_server_connection()
    item = protocol.encode(SAMPLE)  # the room encodes a message once for every writer

    def run() -> None:
        for start in range(0, messages, batch):
            sealer.send_batch([item] * min(batch, messages - start))
            sealer.data_to_send()

    return run


def _open_server_connection() -> protocol.ServerConnection:
    """A ServerConnection in OPEN state, from an in-process handshake."""
    from bench.servers import TEST_KEY

    return handshake_in_process(protocol.ServerIdentity.of(crypto_utils.import_private_key(TEST_KEY.read_bytes())))
