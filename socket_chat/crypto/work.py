"""The proof of work a busy server asks of a new connection (PROTOCOL.md
section 2, "Proof of work"): a SHA-256 leading-zero-bits puzzle bound to
the server's hello.

As Tor's onion-service proof of work (hs_pow) and QUIC's Retry do, a
server under a flood of handshakes makes each new connection pay before it
spends an RSA decryption on it. The puzzle's seed is the hash of the
server's hello, whose random and X25519 share are new for every
connection, so a solution is worth nothing on any other connection. The
effort is a number of leading zero bits: 2**effort hashes on average to
solve, one to check.

Nothing compared here is secret (the seed and the solution travel in
clear), so the check needs no constant-time comparison.
"""

from __future__ import annotations

import hashlib
import itertools

__all__ = [
    "LABEL",
    "NONCE_SIZE",
    "MAX_EFFORT_BITS",
    "seed_of",
    "work_hash",
    "leading_zero_bits",
    "solve",
    "verify",
    "solve_allowance",
]

#: Prefixed to every hash, so that no other use of SHA-256 gives a solution.
LABEL = b"socket-chat proof of work 1"
NONCE_SIZE = 8  # bytes of a solution: far more than any effort needs
MAX_EFFORT_BITS = 32  # what ``verify`` can check (the protocol asks for much less)
#: A generous cost of one of ``solve``'s hashes: about three times the
#: 1.7 µs measured on a busy shared machine (a slow client's, say).
SECONDS_PER_HASH = 5e-6
#: A solve's hashes are geometric with mean 2**effort: one in a thousand
#: takes more than ln(1000), about 6.9, times that.
RARE_SOLVE_FACTOR = 7


def seed_of(hello: bytes) -> bytes:
    """The puzzle's seed: SHA-256 of the server's hello body, as sent."""
    return hashlib.sha256(hello).digest()


def _prefix(seed: bytes, effort: int) -> hashlib._Hash:
    if not 0 < effort <= MAX_EFFORT_BITS:
        raise ValueError(f"effort {effort} is not between 1 and {MAX_EFFORT_BITS}")
    if len(seed) != 32:
        raise ValueError("a seed is 32 bytes")
    return hashlib.sha256(LABEL + bytes([effort]) + seed)


def work_hash(seed: bytes, effort: int, nonce: bytes) -> bytes:
    """``SHA-256(LABEL || effort:u8 || seed || nonce)``."""
    hashed = _prefix(seed, effort)
    hashed.update(nonce)
    return hashed.digest()


def leading_zero_bits(digest: bytes) -> int:
    """How many of ``digest``'s first bits are zero."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solve(seed: bytes, effort: int, start: int = 0) -> bytes:
    """A nonce whose hash has ``effort`` leading zero bits: the first one
    counting up from ``start`` (2**effort tries on average).

    Raises:
        ValueError: an effort out of range, or a seed of the wrong size.
    """
    prefix = _prefix(seed, effort)
    shift = 32 - effort  # the first 4 bytes hold every bit that must be zero
    for counter in itertools.count(start):
        nonce = counter.to_bytes(NONCE_SIZE, "big")
        hashed = prefix.copy()
        hashed.update(nonce)
        if int.from_bytes(hashed.digest()[:4], "big") >> shift == 0:
            return nonce
    raise AssertionError("unreachable")  # pragma: no cover  (itertools.count never ends)


def verify(seed: bytes, effort: int, nonce: bytes) -> bool:
    """Whether ``nonce`` solves the puzzle of ``seed`` at ``effort``: one hash.

    Raises:
        ValueError: an effort out of range, or a seed of the wrong size.
    """
    if len(nonce) != NONCE_SIZE:
        return False
    return int.from_bytes(work_hash(seed, effort, nonce)[:4], "big") >> (32 - effort) == 0


def solve_allowance(effort: int) -> float:
    """Seconds that cover all but one in a thousand solves at ``effort``
    on a slow client (0 for no puzzle): what a server adds to its
    handshake deadline, so that an honest solver is not timed out."""
    if not effort:
        return 0.0
    return RARE_SOLVE_FACTOR * 2**effort * SECONDS_PER_HASH
