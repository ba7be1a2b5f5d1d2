"""Raw costs in process: one record, the RSA unwrap, a whole handshake, and
cProfile of the two hot paths (the server's handshake, the writer's sealing).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

import crypto_utils
import protocol
from protocol import ChatMessage

_KEY, _IV = bytes(range(32)), bytes(12)
SAMPLE = ChatMessage("alice", "r0 123 1234567890123456789")  # a typical bench line


def per_call_us(function, repeat: int) -> float:
    """Mean microseconds per call of ``function()`` over ``repeat`` calls."""
    begin = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - begin) / repeat * 1e6


def record_costs(repeat: int) -> dict[str, float]:
    """Microseconds for one record's seal, open, and the cipher setup alone."""
    from Cryptodome.Cipher import AES

    payload = protocol.encode_message(SAMPLE)
    header = b"\0\0\0\0"
    sealer = crypto_utils.RecordSealer(_KEY, _IV)
    sealed = [sealer.seal(payload, aad=header) for _ in range(repeat)]
    opener = crypto_utils.RecordOpener(_KEY, _IV)
    records = iter(sealed)
    fresh_sealer = crypto_utils.RecordSealer(_KEY, _IV)
    return {
        "seal one record (AES-256-GCM)": per_call_us(lambda: fresh_sealer.seal(payload, aad=header), repeat),
        "open one record": per_call_us(lambda: opener.open(next(records), aad=header), repeat),
        "of which AES.new(MODE_GCM) setup": per_call_us(lambda: AES.new(_KEY, AES.MODE_GCM, nonce=_IV), repeat),
        "encode one ChatMessage": per_call_us(lambda: protocol.encode_message(SAMPLE), repeat),
    }


def handshake_costs(identity_key, repeat: int) -> dict[str, float]:
    """Microseconds for the handshake's parts and for a whole one in process."""
    public = identity_key.public_key()
    wrapped = crypto_utils.wrap_key(public, bytes(32))
    identity = protocol.ServerIdentity.of(identity_key)
    return {
        "RSA-3072 OAEP unwrap (server)": per_call_us(lambda: crypto_utils.unwrap_key(identity_key, wrapped), repeat),
        "RSA-3072 OAEP wrap (client)": per_call_us(lambda: crypto_utils.wrap_key(public, bytes(32)), repeat),
        "DER encoding of the server key (was once per connection, now once)": per_call_us(
            lambda: crypto_utils.export_public_key(identity_key), repeat
        ),
        "X25519 key pair + agreement": per_call_us(
            lambda: crypto_utils.EphemeralKey.generate().agree(_peer_share()), repeat
        ),
        "whole handshake in process (both sides)": per_call_us(lambda: handshake_in_process(identity), repeat),
    }


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
