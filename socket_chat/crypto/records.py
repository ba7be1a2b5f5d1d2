"""The record layer: AES-256-GCM with a per-direction sequence number
folded into the nonce, as TLS 1.3 does, so no nonce ever repeats under a
key (PROTOCOL.md sections 3 and 6).

Each direction of a session has a ``RecordSealer`` at one end and a
``RecordOpener`` at the other, with the same key and IV. The sequence
number is implicit: both ends count, so a record replayed, reordered or
dropped is opened under the wrong nonce and fails. The AES key schedule and
GHASH's tables are made once per direction (``aes_gcm``), not per record.
"""

from __future__ import annotations

from socket_chat.crypto import aes_gcm
from socket_chat.crypto.errors import DecryptionError, SequenceExhaustedError

__all__ = ["KEY_SIZE", "IV_SIZE", "TAG_SIZE", "MAX_SEQUENCE", "RecordSealer", "RecordOpener"]

KEY_SIZE = 32  # AES-256
IV_SIZE = 12  # GCM's natural nonce size
TAG_SIZE = 16
# The nonce is iv XOR a 64-bit counter: sequence numbers 0 to MAX_SEQUENCE,
# so a direction may seal 2**64 records, the last with sequence 2**64 - 1
# (PROTOCOL.md sections 3 and 6). No chat gets near that; the check is there
# so the rule is written down.
MAX_SEQUENCE = 2**64 - 1


def _nonce(iv: bytes, sequence: int) -> bytes:
    # TLS 1.3 (RFC 8446 section 5.3): left-pad the sequence number to the IV
    # length and XOR it in, so every record of a direction has its own nonce.
    # One XOR of two integers: the sequence is below 2**64, so it only
    # reaches the IV's last 8 bytes.
    return (int.from_bytes(iv, "big") ^ sequence).to_bytes(IV_SIZE, "big")


class _RecordDirection:
    __slots__ = ("_gcm", "_iv", "_iv_number", "_sequence")

    def __init__(self, key: bytes, iv: bytes, first_sequence: int = 0):
        """Args: the direction's key and IV; ``first_sequence`` (0 in the
        protocol) lets tests start near the end.

        The AES key schedule and GHASH's tables are made here, once for the
        direction (``aes_gcm``), not once a record.

        Raises:
            ValueError: the key is not 32 bytes, or the IV not 12.
        """
        if len(key) != KEY_SIZE or len(iv) != IV_SIZE:
            raise ValueError("AES-256-GCM needs a 32-byte key and a 12-byte IV")
        self._gcm = aes_gcm.new(key)
        self._iv = iv
        self._iv_number = int.from_bytes(iv, "big")  # _nonce's first step, done once
        self._sequence = first_sequence

    @property
    def sequence(self) -> int:
        """The sequence number the next record will use."""
        return self._sequence

    def _next_nonce(self) -> bytes:
        if self._sequence > MAX_SEQUENCE:
            raise SequenceExhaustedError("no sequence numbers left in this direction")
        nonce = _nonce(self._iv, self._sequence)
        self._sequence += 1
        return nonce

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sequence={self._sequence}>"


class RecordSealer(_RecordDirection):
    """Encrypts the records of one direction, each under its own nonce."""

    __slots__ = ()

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Return ``ciphertext || tag`` for the next sequence number.

        Raises:
            SequenceExhaustedError: the record with sequence ``MAX_SEQUENCE``
                was already sealed; nothing is sealed, and every later call
                raises again.
        """
        # _next_nonce, inline: this runs once for every delivery.
        sequence = self._sequence
        if sequence > MAX_SEQUENCE:
            raise SequenceExhaustedError("no sequence numbers left in this direction")
        self._sequence = sequence + 1
        return self._gcm.seal((self._iv_number ^ sequence).to_bytes(IV_SIZE, "big"), plaintext, aad)


class RecordOpener(_RecordDirection):
    """Decrypts the records of one direction, expecting them in order.

    The sequence number is implicit: a record replayed, reordered, dropped
    or sent back in the other direction is decrypted under the wrong nonce
    or key, and fails.
    """

    __slots__ = ()

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Return the plaintext of the next record.

        Raises:
            DecryptionError: the record is not the next one of this direction,
                or any of its bytes (or the aad) were changed.
            SequenceExhaustedError: the record with sequence ``MAX_SEQUENCE``
                was already opened: the peer sent more than a direction may
                carry.
        """
        if len(sealed) < TAG_SIZE:
            raise DecryptionError("record too short")
        nonce = self._next_nonce()
        try:
            # The tag is checked first, in constant time; no plaintext
            # exists for a record that fails it.
            return self._gcm.open(nonce, sealed, aad)
        except ValueError:
            raise DecryptionError("record failed authentication") from None
