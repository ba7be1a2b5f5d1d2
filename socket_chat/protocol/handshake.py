"""The handshake's messages (PROTOCOL.md section 2), bytes to values and
back: the server's hello or refusal, the client's key exchange, and the
confirmations that travel inside the first records.

Only the wire format lives here; what each side does with a message (the
key agreement, the transcript, the state) is the connection's
(``connection``). The readers check the layout and the version, and raise
``RemoteProtocolError`` for anything else; the keys inside are checked by
the crypto layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import RANDOM_SIZE, X25519_KEY_SIZE, work
from socket_chat.protocol.codec import FIELD_LENGTH, Reader
from socket_chat.protocol.errors import LocalProtocolError, RemoteProtocolError
from socket_chat.protocol.framing import HEADER, MAX_FRAME_SIZE, frame

__all__ = [
    "PROTOCOL_VERSION",
    "SERVER_CONFIRM",
    "CLIENT_CONFIRM",
    "SERVER_FINISHED",
    "ServerIdentity",
    "Hello",
    "KeyExchange",
    "hello",
    "read_hello",
    "key_exchange",
    "read_key_exchange",
    "is_refusal",
    "refusal",
    "read_refusal",
    "may_be_server_greeting",
    "Resumption",
    "ClientTicket",
    "resumption",
    "resumption_without_binder",
    "read_resumption",
    "is_resumption",
    "RESUMPTION_DECLINED",
    "is_resumption_declined",
    "MIN_EFFORT",
    "MAX_EFFORT",
    "WORK_REFUSAL",
    "puzzle",
    "read_puzzle",
    "proof",
    "read_proof",
]

PROTOCOL_VERSION = 1
_SERVER_HELLO = 0x01
_KEY_EXCHANGE = 0x02
_REFUSAL = 0x03
# Resumption (PROTOCOL.md section 2, "Resumption"): the client's second
# frame in place of the key exchange, and the server's answer when it will
# not resume (a full handshake follows on the same connection).
_RESUMPTION = 0x50
_RESUMPTION_DECLINED = 0x51
# Proof of work (PROTOCOL.md section 2, "Proof of work"): the busy server's
# puzzle, after a refusal an older client stops at, and the client's answer.
_PUZZLE = 0x54
_PROOF = 0x55
#: The plaintexts of the handshake's records: the server's HI, the client's
#: HI back, and the server's OK. Each proves the sender derived the keys.
SERVER_CONFIRM = b"HI"
CLIENT_CONFIRM = b"HI"
SERVER_FINISHED = b"OK"


@dataclass(frozen=True)
class ServerIdentity:
    """The server's long-term key and what it shows of it, worked out once
    for every connection: the DER public key its hello carries (encoding
    it costs more than half a millisecond) and that key's fingerprint.
    The repr names the fingerprint only, never the key."""

    key: crypto_utils.RSA.RsaKey = field(repr=False)
    public_der: bytes = field(repr=False)
    fingerprint: str

    @classmethod
    def of(cls, key: crypto_utils.RSA.RsaKey) -> ServerIdentity:
        """The identity of an RSA private key."""
        der = crypto_utils.export_public_key(key)
        return cls(key, der, crypto_utils.fingerprint(der))


@dataclass(frozen=True)
class ClientTicket:
    """A resumption ticket as a client holds it: the ticket (opaque), the
    resumption secret the connection that got it derived, and the
    fingerprint of the server key it was given under (a ticket is offered
    only to that key). Secret and ticket stay out of ``repr``."""

    ticket: bytes = field(repr=False)
    secret: bytes = field(repr=False)
    server_fingerprint: str


@dataclass(frozen=True)
class Hello:
    """A server hello as read. Its random is not kept: it is bound in
    through the transcript, which hashes the whole message."""

    version: int
    share: bytes  # the server's X25519 public key
    public_der: bytes  # its RSA public key, DER SubjectPublicKeyInfo


@dataclass(frozen=True)
class KeyExchange:
    """A client's key exchange as read (its random, as the hello's, is bound
    in through the transcript)."""

    share: bytes  # the client's X25519 public key
    wrapped: bytes  # the secret, RSA-OAEP to the server's key


def _check_version(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported protocol version {version}")


def hello(random: bytes, share: bytes, public_der: bytes) -> bytes:
    """The body of a server hello."""
    return _shares(_SERVER_HELLO, random, share, public_der)


def read_hello(body: bytes) -> Hello:
    """Read a server hello's body.

    Raises:
        RemoteProtocolError: not a hello, another version, or malformed.
    """
    return Hello(PROTOCOL_VERSION, *_read_shares(body, _SERVER_HELLO, "server hello"))


def key_exchange(random: bytes, share: bytes, wrapped: bytes) -> bytes:
    """The body of a client key exchange."""
    return _shares(_KEY_EXCHANGE, random, share, wrapped)


def read_key_exchange(body: bytes) -> KeyExchange:
    """Read a key exchange's body.

    Raises:
        RemoteProtocolError: not a key exchange, another version, or malformed.
    """
    return KeyExchange(*_read_shares(body, _KEY_EXCHANGE, "key exchange"))


@dataclass(frozen=True)
class Resumption:
    """A client's resumption as read: its X25519 share, the ticket, the
    binder, and the body up to the binder (what the binder is taken over,
    with the server's hello)."""

    share: bytes
    ticket: bytes = field(repr=False)
    binder: bytes = field(repr=False)
    before_binder: bytes = field(repr=False)


def resumption(random: bytes, share: bytes, ticket: bytes, binder: bytes) -> bytes:
    """The body of a resumption: ``0x50 || version || random[32] ||
    share[32] || ticket_length:u16 || ticket || binder[32]``, the binder
    last (``resumption_without_binder`` gives what it is made over).

    Raises:
        LocalProtocolError: the ticket does not fit in a field.
    """
    return resumption_without_binder(random, share, ticket) + binder


def resumption_without_binder(random: bytes, share: bytes, ticket: bytes) -> bytes:
    if len(ticket) > 0xFFFF:
        raise LocalProtocolError("ticket is too long to encode")
    return _shares(_RESUMPTION, random, share, ticket)


def is_resumption(body: bytes) -> bool:
    """Whether the client's second frame is a resumption, not a key exchange."""
    return body[:1] == bytes([_RESUMPTION])


#: The first byte of a resumption's body (``is_resumption``), for a look
#: at a frame not yet whole (framing.ReceiveBuffer.body_starts_with).
RESUMPTION_TYPE = _RESUMPTION


def read_resumption(body: bytes) -> Resumption:
    """Read a resumption's body.

    Raises:
        RemoteProtocolError: not a resumption, another version, or malformed.
    """
    if len(body) < _BINDER_SIZE:
        raise RemoteProtocolError("resumption is cut short")
    before, binder = body[:-_BINDER_SIZE], body[-_BINDER_SIZE:]
    share, ticket = _read_shares(before, _RESUMPTION, "resumption")
    return Resumption(share, ticket, binder, before)


#: The body of the server's answer to a resumption it will not take: the
#: client then sends its key exchange, as in a full handshake.
RESUMPTION_DECLINED = bytes([_RESUMPTION_DECLINED, PROTOCOL_VERSION])


def is_resumption_declined(body: bytes) -> bool:
    """Whether a frame the client reads after its resumption is the
    server's decline (two bytes, in clear) rather than its first record (a
    record is at least 16 bytes: its tag).

    Raises:
        RemoteProtocolError: a decline of another version.
    """
    if len(body) != len(RESUMPTION_DECLINED) or body[0] != _RESUMPTION_DECLINED:
        return False
    _check_version(body[1])
    return True


_BINDER_SIZE = 32

# The hello and the key exchange have one layout: type, version, random[32],
# X25519 share[32], then a sized field (the server's key, the wrapped secret).


def _shares(kind: int, random: bytes, share: bytes, sized: bytes) -> bytes:
    return bytes([kind, PROTOCOL_VERSION]) + random + share + FIELD_LENGTH.pack(len(sized)) + sized


def _read_shares(body: bytes, kind: int, what: str) -> tuple[bytes, bytes]:
    reader = Reader(body, what)
    if reader.take_byte() != kind:
        raise RemoteProtocolError(f"expected the {what}")
    _check_version(reader.take_byte())
    reader.take(RANDOM_SIZE)  # the sender's random: bound in through the transcript
    share = reader.take(X25519_KEY_SIZE)
    sized = reader.take_sized()
    reader.finish()
    return share, sized


def is_refusal(body: bytes) -> bool:
    """Whether the server's first frame is a refusal rather than a hello."""
    return body[:1] == bytes([_REFUSAL])


def refusal(reason: str) -> bytes:
    """The frame a server sends instead of its hello to turn a connection
    away (when it is full, for example), before any key is spent on it.

    Raises:
        LocalProtocolError: the reason does not fit in a field.
    """
    data = reason.encode("utf-8")
    if len(data) > 0xFFFF:
        raise LocalProtocolError("reason is too long to encode")
    return frame(bytes([_REFUSAL, PROTOCOL_VERSION]) + FIELD_LENGTH.pack(len(data)) + data)


def read_refusal(body: bytes) -> str:
    """The reason a refusal's body gives.

    Raises:
        RemoteProtocolError: another version, or malformed.
    """
    reader = Reader(body, "server refusal")
    reader.take_byte()
    _check_version(reader.take_byte())
    try:
        reason = reader.take_text()
    except UnicodeDecodeError:
        raise RemoteProtocolError("server refusal is not valid UTF-8") from None
    reader.finish()
    return reason


#: The efforts a puzzle may ask (leading zero bits): the lowest costs a
#: client about as many hashes as an RSA-3072 decryption costs the server
#: (4,096 SHA-256, about 3 ms in Python); the highest, about 2 s on a busy
#: machine (a million hashes; a server's handshake deadline allows for the
#: solving, ``crypto.work.solve_allowance``). A puzzle outside these is a
#: protocol error.
MIN_EFFORT = 12
MAX_EFFORT = 20
#: The reason of the refusal a busy server sends before its puzzle, byte
#: for byte: an older client stops there and shows it; a client that can
#: prove work reads on, for the puzzle. At most 80 characters, what a
#: client shows of a reason.
WORK_REFUSAL = "The server is busy and asks for a proof of work, which this client cannot do."


def puzzle(effort: int) -> bytes:
    """The body of a puzzle: ``0x54 || version || effort:u8``. Its seed is
    the hash of the hello that follows it (``crypto.work.seed_of``).

    Raises:
        LocalProtocolError: an effort outside MIN_EFFORT..MAX_EFFORT.
    """
    if not MIN_EFFORT <= effort <= MAX_EFFORT:
        raise LocalProtocolError(f"effort {effort} is not between {MIN_EFFORT} and {MAX_EFFORT}")
    return bytes([_PUZZLE, PROTOCOL_VERSION, effort])


def read_puzzle(body: bytes) -> int:
    """The effort a puzzle's body asks.

    Raises:
        RemoteProtocolError: not a puzzle, another version, malformed, or an
            effort outside MIN_EFFORT..MAX_EFFORT (a client does not spin
            for ever on a server's word).
    """
    reader = Reader(body, "puzzle")
    if reader.take_byte() != _PUZZLE:
        raise RemoteProtocolError("expected the server's puzzle after its refusal")
    _check_version(reader.take_byte())
    effort = reader.take_byte()
    reader.finish()
    if not MIN_EFFORT <= effort <= MAX_EFFORT:
        raise RemoteProtocolError(f"the server asks for a proof of work of effort {effort} (at most {MAX_EFFORT})")
    return effort


def proof(nonce: bytes) -> bytes:
    """The body of a proof of work: ``0x55 || version || nonce[8]``."""
    assert len(nonce) == work.NONCE_SIZE, "a nonce is 8 bytes"
    return bytes([_PROOF, PROTOCOL_VERSION]) + nonce


def read_proof(body: bytes) -> bytes:
    """The nonce of a proof of work's body.

    Raises:
        RemoteProtocolError: not a proof (a key exchange without one, say),
            another version, or malformed.
    """
    reader = Reader(body, "proof of work")
    if reader.take_byte() != _PROOF:
        raise RemoteProtocolError("the server asked for a proof of work, and the client sent none")
    _check_version(reader.take_byte())
    nonce = reader.take(work.NONCE_SIZE)
    reader.finish()
    return nonce


def may_be_server_greeting(data: bytes) -> bool:
    """Whether ``data``, the first bytes a server sent, could begin a server
    hello or refusal of some version of this protocol: a frame header within
    the limit, then the hello's or the refusal's type byte. False means the
    peer is some other program (a web or mail server, say), which a client
    can tell the person at once."""
    if len(data) < HEADER.size:
        return False
    (length,) = HEADER.unpack_from(data)
    if not 0 < length <= MAX_FRAME_SIZE:
        return False
    return len(data) == HEADER.size or data[HEADER.size] in (_SERVER_HELLO, _REFUSAL)
