"""Randomness: the default source, and the type of one passed in.

Every function that needs random bytes takes an optional ``rng`` (a
callable from a size to that many bytes), so tests can pin it; without
one, the operating system's CSPRNG is used.
"""

from __future__ import annotations

from collections.abc import Callable

from Cryptodome.Random import get_random_bytes

__all__ = ["Rng", "random_bytes"]

#: A source of random bytes: ``rng(size)`` returns ``size`` bytes.
Rng = Callable[[int], bytes]


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG: the default ``rng``."""
    return get_random_bytes(size)
