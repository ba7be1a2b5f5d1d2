"""The connection objects: ``ClientConnection`` and ``ServerConnection``,
and ``_Connection``, what both share.

A connection is driven by its caller (``receive_data``, ``next_event``,
``send``, ``send_batch``, ``data_to_send``) and does no I/O. It holds the
state (``state``: it moves only along ``TRANSITIONS``), the receive buffer
(``framing``), the two halves of the record layer, and what the handshake
keeps until it is done. What a frame means depends on the state: each side
has a table, ``_receivers``, from the states in which it reads frames to
the method that reads one; a frame in any other state is the peer's fault.

Records (PROTOCOL.md section 3) are AES-GCM under each direction's key,
with the frame header as associated data. A direction may carry
``MAX_RECORDS``; both ends read that limit from this module each time they
seal or open, so a test may lower it here to reach the end in a few records.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from socket_chat import crypto as crypto_utils
from socket_chat.crypto import (
    RANDOM_SIZE,
    SECRET_SIZE,
    TAG_SIZE,
    CryptoError,
    EphemeralKey,
    RecordOpener,
    RecordSealer,
    SequenceExhaustedError,
    tickets,
)
from socket_chat.crypto import work as puzzles
from socket_chat.crypto.rng import Rng
from socket_chat.protocol import handshake
from socket_chat.protocol.codec import (
    BATCH_TYPE,
    Encoded,
    batch_groups,
    decode_message,
    decode_record,
    encode,
    encode_batch,
)
from socket_chat.protocol.errors import LocalProtocolError, RecordLimitError, RemoteProtocolError
from socket_chat.protocol.events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    MalformedMessage,
    NeedData,
    ResumptionOffered,
    ServerHello,
    ServerRefused,
)
from socket_chat.protocol.framing import HEADER, ReceiveBuffer, frame
from socket_chat.protocol.handshake import (
    CLIENT_CONFIRM,
    RESUMPTION_DECLINED,
    SERVER_CONFIRM,
    SERVER_FINISHED,
    WORK_REFUSAL,
    ClientTicket,
    ServerIdentity,
)
from socket_chat.protocol.messages import CLIENT_SENDS, SERVER_SENDS, Goodbye, Message
from socket_chat.protocol.state import ConnectionState, Step, allows, next_state

__all__ = ["MAX_RECORDS", "ClientConnection", "ServerConnection"]

#: Records one direction may carry, its HI included (PROTOCOL.md section 3).
#: RFC 8446 section 5.5 allows AES-GCM 2**24.5 full-size TLS records under
#: one key; ours may be 4 times as large (64 KiB), and 2**24 of them keep
#: about the margin TLS keeps (an attacker's advantage near 2**-57). The last
#: is kept for a Goodbye, so that a side at the limit can say why it ends.
MAX_RECORDS = 2**24
_BATCH_BYTE = bytes([BATCH_TYPE])

_T = TypeVar("_T")
#: Reads one frame in a given state: (connection, header, body) -> the
#: event, or None if the frame makes none.
_Receiver = Callable[[Any, bytes, bytes], "Event | None"]


def _set(value: _T | None, what: str) -> _T:
    """``value``, which the state machine guarantees is set by now: keys
    once installed, an ephemeral key until used. None is a bug here."""
    assert value is not None, f"{what} is not set in this state"
    return value


class _Connection:
    """What both ends share: frames, records, messages, and the state.

    Two threads may drive one connection once it is OPEN, and only then:
    one receiving (``receive_data``, ``next_event``) and one sending
    (``send``, ``send_batch``, ``data_to_send``); the sending half must be
    driven by one thread at a time (the server's one sender thread drives
    the sending halves of all its connections). The two halves share no
    buffer and no cipher: the receiving half owns the receive buffer, the
    opener and the pending events; the sending half owns the outbox and the
    sealer. The only state both touch is ``state``, which the receiving half
    alone changes after the handshake (to CLOSED or ERROR), with a single
    assignment that the sending half merely reads. During the handshake,
    receiving writes answers to the outbox, so one thread must do both until
    ``HandshakeComplete`` and its ``data_to_send()`` are done.
    """

    _may_send: ClassVar[frozenset[type[Message]]]
    _may_receive: ClassVar[frozenset[type[Message]]]
    #: The states in which this side reads frames, and how it reads one.
    _receivers: ClassVar[Mapping[ConnectionState, _Receiver]]

    def __init__(self, state: ConnectionState, rng: Rng | None):
        self._rng = rng or crypto_utils.random_bytes
        self._state = state
        self._buffer = ReceiveBuffer()
        # Sealed frames not yet taken by data_to_send: a list of them, so that
        # one record alone is handed over as it is, without a copy.
        self._outbox: list[bytes] = []
        self._events: collections.deque[Message | MalformedMessage] = collections.deque()  # the rest of a Batch
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._received_goodbye = False
        self._sent_goodbye = False
        self._session_id = b""  # the transcript hash, once the keys are agreed
        self._handshake_complete = False  # set with OPEN; it stays through CLOSED and ERROR
        self._resumption_secret = b""  # what a ticket given on this connection resumes with
        self._resumed = False  # this connection resumed by a ticket (no RSA)
        self._transcript: list[bytes] = []  # the handshake's plaintext frames, in order

    @property
    def state(self) -> ConnectionState:
        """Where the connection is; changed only by the methods below."""
        return self._state

    @property
    def session_id(self) -> bytes:
        """The connection's session identifier: the transcript hash of its
        handshake (PROTOCOL.md section 2), the same on both sides, and what a
        key proof signs (as ssh's session identifier). Known once the
        handshake is complete (``HandshakeComplete``), and for good after.

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if not self._handshake_complete:
            raise LocalProtocolError(f"no session identifier in state {self._state.name}: the handshake is not done")
        return self._session_id

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed by a ticket (PROTOCOL.md,
        "Resumption") rather than a full key exchange."""
        return self._resumed

    @property
    def resumption_secret(self) -> bytes:
        """The secret a ticket given on this connection resumes with
        (PROTOCOL.md, "Resumption"): the server seals it in the ticket, the
        client keeps it beside the ticket. Never logged.

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if not self._handshake_complete:
            raise LocalProtocolError(f"no resumption secret in state {self._state.name}: the handshake is not done")
        return self._resumption_secret

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of an event. After ``next_event()``
        returned ``NEED_DATA``, more than zero means a frame has begun but not
        ended: a server can put a deadline on it (against slowloris)."""
        return len(self._buffer)

    @property
    def records_sent(self) -> int:
        """Records this side has sealed, its handshake records included: the
        sequence number of the next one (0 before the keys are agreed). Part
        of the sending half."""
        return 0 if self._sealer is None else self._sealer.sequence

    @property
    def records_received(self) -> int:
        """Records this side has opened, its handshake records included (0
        before the keys are agreed). Part of the receiving half."""
        return 0 if self._opener is None else self._opener.sequence

    # Methods for the caller.

    def receive_data(self, data: bytes) -> None:
        """Hand over bytes read from the peer; ``b""`` means EOF.

        Raises:
            LocalProtocolError: data after EOF was already reported.
        """
        if self._buffer.at_eof:
            raise LocalProtocolError("data received after EOF")
        if data:
            self._buffer.append(data)
        else:
            self._buffer.at_eof = True

    def next_event(self) -> Event | NeedData:
        """The next event, or ``NEED_DATA`` if more bytes are needed.

        Handshake steps that need an answer write it to ``data_to_send()``
        by themselves; check that after every call.

        EOF gives ``ConnectionClosed`` (``clean`` if a Goodbye came first),
        at a frame boundary or not: an unfinished frame is dropped unread.
        Once CLOSED, every call returns ``ConnectionClosed`` again.

        Raises:
            RemoteProtocolError: the peer broke the protocol (an oversized
                frame, a record that fails authentication, a handshake that
                does not check out, a frame after a Goodbye, more records
                than a direction may carry); the state becomes ``ERROR``
                and every later call raises again.
        """
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("the connection already failed")
        if self._state is ConnectionState.CLOSED:
            return ConnectionClosed(clean=self._received_goodbye)
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._advance(Step.PEER_FAILED)
            raise

    def send(self, message: Message) -> None:
        """Seal an application message; its bytes go to ``data_to_send()``.

        Raises:
            LocalProtocolError: not OPEN yet (or any more), after a Goodbye,
                a message this role may not send, one too large for a frame,
                or text that cannot be encoded (see ``encode_message``). The
                state does not change.
            RecordLimitError: this direction has no record left but the one
                kept for a Goodbye (a LocalProtocolError: the state does not
                change).
        """
        self._send_encoded([encode(message)])

    def send_batch(self, items: Sequence[Encoded]) -> None:
        """Seal several encoded messages, in order, in as few records as fit
        in a frame (a Batch; one message alone is sent as by ``send``). The
        peer reads the same messages in the same order; the cipher setup,
        which costs more than sealing a short message, is paid once per
        record.

        Raises:
            LocalProtocolError: as ``send``, for any of the messages, a
                Goodbye that is not the last, or a client calling it. Nothing
                is sent then, and the state does not change.
            RecordLimitError: the records these messages need are more than
                this direction has sequence numbers left for. Nothing is
                sent, and the state does not change.
        """
        if not self._may_send_batch:
            raise LocalProtocolError(f"a {self._role} may not send a Batch")
        self._send_encoded(items)

    def data_to_send(self) -> bytes:
        """Everything written since the last call, ready for ``sendall``."""
        data = b"".join(self._outbox)  # one frame: that frame itself, not a copy
        self._outbox.clear()
        return data

    def send_raw_record(self, plaintext: bytes) -> None:
        """Seal ``plaintext`` as the next record just as it is: no encoding,
        and none of ``send``'s checks (the state, the role, a Goodbye sent,
        the record limit); its bytes go to ``data_to_send()``.

        This is how a test or a fuzzer plays a peer that breaks the rules
        (a message of no known type, text that is not UTF-8, a record after
        a Goodbye or past the limit), which the typed API cannot do; the
        record is authentic, under the right key and sequence number, so
        what the peer makes of its content is what is tested. A program
        has no use for it. Part of the sending half.

        Raises:
            LocalProtocolError: the keys are not agreed yet.
            SequenceExhaustedError: this direction's 2**64 sequence numbers
                are used up (the cipher's own limit, which nothing bypasses).
        """
        if self._sealer is None:
            raise LocalProtocolError(f"can't send a record in state {self._state.name}: no keys yet")
        self._send_record(plaintext)

    # Internals.

    _role = "peer"
    _may_send_batch = False
    _may_receive_batch = False

    def _send_encoded(self, items: Sequence[Encoded]) -> None:
        if len(items) == 1:
            self._send_one(items[0])
            return
        if any(isinstance(item.message, Goodbye) for item in items[:-1]):
            raise LocalProtocolError("Goodbye must be the last message")
        for item in items:
            self._check_sendable(item.message)
        goodbye = bool(items) and isinstance(items[-1].message, Goodbye)
        self._send_records([item.payload for item in items], ends_with_goodbye=goodbye)
        self._sent_goodbye = goodbye

    def _send_one(self, item: Encoded) -> None:
        """``_send_encoded`` for one message, the usual case (a record per
        message whenever a room is quiet), with the same checks in the same
        order, and none of the grouping."""
        message = item.message
        self._check_sendable(message)
        goodbye = isinstance(message, Goodbye)
        if _set(self._sealer, "the sealer").sequence >= (MAX_RECORDS if goodbye else MAX_RECORDS - 1):
            raise RecordLimitError(
                "this direction has carried the records its keys may protect: the connection must end"
            )
        self._send_record(item.payload)  # encode() made it fit in one record
        self._sent_goodbye = goodbye

    def _check_sendable(self, message: Message) -> None:
        """LocalProtocolError unless ``message`` may be sent now."""
        if self._state is not ConnectionState.OPEN or self._sent_goodbye:
            raise LocalProtocolError(f"can't send {type(message).__name__} in state {self._state.name}")
        if type(message) not in self._may_send:
            raise LocalProtocolError(f"a {self._role} may not send {type(message).__name__}")

    def _send_records(self, payloads: list[bytes], ends_with_goodbye: bool = False) -> None:
        groups = batch_groups(payloads)
        # Checked before sealing any, so that a batch is sent whole or not at
        # all. The last record is a Goodbye's only.
        limit = MAX_RECORDS if ends_with_goodbye else MAX_RECORDS - 1
        if _set(self._sealer, "the sealer").sequence + len(groups) > limit:
            raise RecordLimitError(
                "this direction has carried the records its keys may protect: the connection must end"
            )
        for group in groups:
            self._send_record(group[0] if len(group) == 1 else encode_batch(group))

    def _next_event(self) -> Event | NeedData:
        if self._events:
            return self._events.popleft()
        while True:
            whole = self._buffer.next_frame()
            if whole is None:
                return self._end_of_data()
            event = self._handle_frame(*whole)
            if event is not None:
                return event

    def _end_of_data(self) -> Event | NeedData:
        if not self._buffer.at_eof:
            return NEED_DATA
        # A close in the middle of a frame is a lost connection, like any
        # close without a Goodbye (PROTOCOL.md section 1), not a sign of an
        # attack: a server cutting off a client that does not read closes
        # wherever its writer was. Nothing of the unfinished frame was
        # authenticated, so nothing of it is delivered.
        self._buffer.clear()
        self._advance(Step.RECEIVE_EOF)
        return ConnectionClosed(clean=self._received_goodbye)

    def _handle_frame(self, header: bytes, body: bytes) -> Event | None:
        receive = self._receivers.get(self._state)
        if receive is None:
            raise RemoteProtocolError(f"unexpected data in state {self._state.name}")
        return receive(self, header, body)

    def _advance(self, step: Step) -> None:
        self._state = next_state(self._state, step)

    def _send_frame(self, body: bytes) -> None:
        self._outbox.append(frame(body))

    def _send_record(self, plaintext: bytes) -> None:
        # The header is the record's associated data, so its length is
        # authenticated too.
        header = HEADER.pack(len(plaintext) + TAG_SIZE)
        self._outbox.append(header + _set(self._sealer, "the sealer").seal(plaintext, aad=header))

    def _open_record(self, header: bytes, body: bytes) -> bytes:
        opener = _set(self._opener, "the opener")
        if opener.sequence >= MAX_RECORDS:
            raise RemoteProtocolError("the peer sent more records than a direction may carry (2**24)")
        try:
            return opener.open(body, aad=header)
        except SequenceExhaustedError:
            raise RemoteProtocolError("the peer sent more records than a direction may carry (2**24)") from None
        except CryptoError:
            raise RemoteProtocolError("record failed authentication") from None

    def _expect_record(self, header: bytes, body: bytes, expected: bytes) -> None:
        if self._open_record(header, body) != expected:
            raise RemoteProtocolError("key confirmation failed")

    def _agree_keys(self, first_secret: bytes, shared: bytes, *, resumed: bool, is_client: bool) -> None:
        """Derive and install the keys from the transcript so far: the
        session's, and the secret a ticket given on it will carry."""
        transcript = self._session_id = crypto_utils.transcript_hash(*self._transcript)
        keys = crypto_utils.derive_session_keys(first_secret, shared, transcript, resumed=resumed)
        self._resumption_secret = tickets.resumption_secret(first_secret, shared, transcript)
        self._install_keys(keys, is_client=is_client)

    def _install_keys(self, keys: crypto_utils.SessionKeys, *, is_client: bool) -> None:
        c2s = (keys.client_to_server_key, keys.client_to_server_iv)
        s2c = (keys.server_to_client_key, keys.server_to_client_iv)
        self._sealer = RecordSealer(*(c2s if is_client else s2c))
        self._opener = RecordOpener(*(s2c if is_client else c2s))

    def _receive_message(self, header: bytes, body: bytes) -> Message | MalformedMessage:
        if self._received_goodbye:
            raise RemoteProtocolError("data after Goodbye")
        plaintext = self._open_record(header, body)
        if plaintext[:1] != _BATCH_BYTE:  # one message, as most records are
            event = self._check_role(decode_message(plaintext))
            self._received_goodbye = isinstance(event, Goodbye)
            return event
        if not self._may_receive_batch:
            return MalformedMessage(f"a {self._role} does not receive a Batch")
        events = [self._check_role(event) for event in decode_record(plaintext)]
        if any(isinstance(event, Goodbye) for event in events[:-1]):
            raise RemoteProtocolError("data after Goodbye")
        self._received_goodbye = isinstance(events[-1], Goodbye)
        self._events.extend(events[1:])
        return events[0]

    def _check_role(self, event: Message | MalformedMessage) -> Message | MalformedMessage:
        if isinstance(event, Message) and type(event) not in self._may_receive:
            # The peer may only send what its own role sends.
            return MalformedMessage(f"a {self._role} does not receive {type(event).__name__}")
        return event

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self._state.name}>"


class ClientConnection(_Connection):
    """The client's side of one connection.

    Args:
        rng: source of random bytes (default: the OS's).
        ephemeral_key: the X25519 key to use; tests pin it, others omit it.
        ticket: a resumption ticket to offer (once) if the server's hello
            shows the key it was given under; None: a full handshake.
    """

    _may_send, _may_receive = CLIENT_SENDS, SERVER_SENDS
    _role = "client"
    _may_receive_batch = True

    def __init__(
        self, rng: Rng | None = None, ephemeral_key: EphemeralKey | None = None, ticket: ClientTicket | None = None
    ):
        super().__init__(ConnectionState.AWAIT_SERVER_HELLO, rng)
        self._ephemeral: EphemeralKey | None = ephemeral_key or EphemeralKey.generate(self._rng)
        self._server_key: crypto_utils.RSA.RsaKey | None = None
        self._server_fingerprint = ""
        self._client_share = self._x25519_secret = b""
        self._ticket = ticket
        # Proof of work (PROTOCOL.md, "Proof of work"): a busy server's
        # refusal, held until its puzzle comes (or EOF makes it stand); the
        # effort asked and the seed, the hash of the hello that follows.
        self._work_refusal = ""
        self._work = 0
        self._work_seed = b""

    @property
    def server_fingerprint(self) -> str:
        """The fingerprint of the server key in the hello ("" before it)."""
        return self._server_fingerprint

    def accept_server_key(self) -> None:
        """Trust the server key from ``ServerHello`` and answer: with a
        resumption if a ticket was given for this key, else with the key
        exchange. Call it only once the key is checked (known hosts or pin).
        If a busy server asked for a proof of work (``ServerHello.work``),
        it is solved here first (2**work hashes on average: a few
        milliseconds at the lowest effort, about a second at the highest)
        and goes out before the answer.

        Raises:
            LocalProtocolError: not in ``AWAIT_TRUST``; state unchanged.
        """
        if not allows(self._state, Step.SEND_KEY_EXCHANGE):
            raise LocalProtocolError(f"can't accept a server key in state {self._state.name}")
        ticket, self._ticket = self._ticket, None  # offered once, whatever comes of it
        if self._work:
            # Sent before the key exchange, in the same write: no round trip.
            self._send_frame(handshake.proof(puzzles.solve(self._work_seed, self._work)))
        if ticket is not None and crypto_utils.fingerprints_equal(ticket.server_fingerprint, self._server_fingerprint):
            self._send_resumption(ticket)
            self._advance(Step.SEND_RESUMPTION)
        else:
            self._send_key_exchange()
            self._advance(Step.SEND_KEY_EXCHANGE)

    def _send_key_exchange(self) -> None:
        secret, client_random = self._rng(SECRET_SIZE), self._rng(RANDOM_SIZE)
        assert self._server_key is not None  # read with the hello, which AWAIT_TRUST follows
        wrapped = crypto_utils.wrap_key(self._server_key, secret, rng=self._rng)
        key_exchange = handshake.key_exchange(client_random, self._client_share, wrapped)
        self._transcript.append(key_exchange)
        self._agree_keys(secret, self._x25519_secret, resumed=False, is_client=True)
        self._x25519_secret = b""
        self._send_frame(key_exchange)

    def _send_resumption(self, ticket: ClientTicket) -> None:
        # PSK with (EC)DHE (RFC 8446 section 2.2): the ticket's secret and a
        # fresh X25519 exchange, no RSA; the binder proves the secret is held.
        before = handshake.resumption_without_binder(self._rng(RANDOM_SIZE), self._client_share, ticket.ticket)
        binder = tickets.binder(ticket.secret, crypto_utils.transcript_hash(*self._transcript, before))
        body = before + binder
        self._transcript.append(body)
        # Tentative: a decline brings the full key exchange, and its keys.
        self._agree_keys(ticket.secret, self._x25519_secret, resumed=True, is_client=True)
        self._send_frame(body)

    def _receive_resumption_answer(self, header: bytes, body: bytes) -> None:
        if handshake.is_resumption_declined(body):
            self._transcript.append(body)
            self._send_key_exchange()
            self._advance(Step.RECEIVE_DECLINE)
            return
        self._x25519_secret = b""
        self._resumed = True
        self._receive_server_hi(header, body)

    def _receive_greeting(self, header: bytes, body: bytes) -> ServerHello | ServerRefused | None:
        if handshake.is_refusal(body):
            return self._receive_refusal(body)
        return self._receive_hello(body)

    def _receive_refusal(self, body: bytes) -> ServerRefused | None:
        reason = handshake.read_refusal(body)
        if reason == WORK_REFUSAL and not self._work:
            # A busy server: its puzzle follows, for a client that can prove work.
            self._work_refusal = reason
            self._advance(Step.RECEIVE_WORK_REFUSAL)
            return None
        self._advance(Step.RECEIVE_REFUSAL)
        return ServerRefused(reason)

    def _receive_puzzle(self, header: bytes, body: bytes) -> None:
        self._work = handshake.read_puzzle(body)
        self._advance(Step.RECEIVE_PUZZLE)

    def _end_of_data(self) -> Event | NeedData:
        if self._state is ConnectionState.AWAIT_PUZZLE and self._buffer.at_eof:
            # No puzzle came: the busy server's refusal stands.
            self._buffer.clear()
            self._advance(Step.RECEIVE_EOF)
            return ServerRefused(self._work_refusal)
        return super()._end_of_data()

    def _receive_hello(self, body: bytes) -> ServerHello:
        hello = handshake.read_hello(body)
        try:
            ephemeral = _set(self._ephemeral, "the ephemeral key")
            self._server_key = crypto_utils.import_public_key(hello.public_der)
            self._x25519_secret = ephemeral.agree(hello.share)
        except CryptoError as exc:  # KeyFormatError, KeyAgreementError
            raise RemoteProtocolError(f"bad server hello: {exc}") from None
        self._client_share = ephemeral.public_bytes
        self._ephemeral = None  # forward secrecy: forget it as soon as used
        self._transcript.append(body)
        if self._work:
            self._work_seed = puzzles.seed_of(body)  # the puzzle is bound to this hello
        self._server_fingerprint = crypto_utils.fingerprint(hello.public_der)
        self._advance(Step.RECEIVE_HELLO)
        return ServerHello(hello.version, hello.public_der, self._server_fingerprint, self._work)

    def _receive_server_hi(self, header: bytes, body: bytes) -> None:
        self._expect_record(header, body, SERVER_CONFIRM)
        self._send_record(CLIENT_CONFIRM)
        self._advance(Step.RECEIVE_SERVER_HI)

    def _receive_server_ok(self, header: bytes, body: bytes) -> HandshakeComplete:
        self._expect_record(header, body, SERVER_FINISHED)
        self._advance(Step.RECEIVE_SERVER_OK)
        self._handshake_complete = True
        self._transcript = []
        return HandshakeComplete(resumed=self._resumed)

    _receivers: ClassVar[Mapping[ConnectionState, _Receiver]] = {
        ConnectionState.AWAIT_SERVER_HELLO: _receive_greeting,
        ConnectionState.AWAIT_PUZZLE: _receive_puzzle,
        ConnectionState.AWAIT_RESUMPTION: _receive_resumption_answer,
        ConnectionState.AWAIT_SERVER_HI: _receive_server_hi,
        ConnectionState.AWAIT_SERVER_OK: _receive_server_ok,
        ConnectionState.OPEN: _Connection._receive_message,
    }


class ServerConnection(_Connection):
    """The server's side of one connection. Its hello is ready at once in
    ``data_to_send()``.

    Args:
        identity: the server's long-term key (``ServerIdentity.of(key)``,
            made once for all connections).
        rng: source of random bytes (default: the OS's).
        ephemeral_key: the X25519 key to use; tests pin it, others omit it.
        work: the effort of the proof of work to ask before any RSA (a busy
            server's: PROTOCOL.md, "Proof of work"); 0: none, as when idle.

    Raises:
        LocalProtocolError: ``work`` is neither 0 nor within
            MIN_EFFORT..MAX_EFFORT.
    """

    _may_send, _may_receive = SERVER_SENDS, CLIENT_SENDS
    _role = "server"
    _may_send_batch = True

    def __init__(
        self,
        identity: ServerIdentity,
        rng: Rng | None = None,
        ephemeral_key: EphemeralKey | None = None,
        work: int = 0,
    ):
        puzzle = handshake.puzzle(work) if work else b""  # checked before anything is made
        super().__init__(ConnectionState.AWAIT_PROOF if work else ConnectionState.AWAIT_KEY_EXCHANGE, rng)
        self._identity_key = identity.key
        self._ephemeral: EphemeralKey | None = ephemeral_key or EphemeralKey.generate(self._rng)
        hello = handshake.hello(self._rng(RANDOM_SIZE), self._ephemeral.public_bytes, identity.public_der)
        self._transcript.append(hello)
        self._work, self._work_seed = work, puzzles.seed_of(hello) if work else b""
        self._work_pending = bool(work)
        if work:
            # The refusal an older client stops at, then the puzzle (bound
            # to the hello after it); none of it is in the transcript.
            self._outbox.append(handshake.refusal(WORK_REFUSAL))
            self._send_frame(puzzle)
        self._send_frame(hello)
        self._offer: handshake.Resumption | None = None  # a resumption, until it is taken or declined
        self._offer_shared = b""

    @property
    def work(self) -> int:
        """The effort of the proof of work this connection was asked (0: none)."""
        return self._work

    @property
    def resumption_coming(self) -> bool:
        """Whether the client's next frame, begun in what is buffered, is a
        resumption offer rather than a key exchange: reading it costs an
        X25519 agreement and no RSA, so a server may read it wherever it
        likes (server/handler.py keeps it out of its handshake thread)."""
        return self._state is ConnectionState.AWAIT_KEY_EXCHANGE and self._buffer.body_starts_with(
            handshake.RESUMPTION_TYPE
        )

    @property
    def work_pending(self) -> bool:
        """Whether a proof of work was asked and has not come (so no RSA
        has been spent on this connection)."""
        return self._work_pending

    def _receive_proof(self, header: bytes, body: bytes) -> None:
        # One hash, before the client's key exchange is even read: a client
        # that has not paid costs no RSA.
        if not puzzles.verify(self._work_seed, self._work, handshake.read_proof(body)):
            raise RemoteProtocolError("the proof of work does not check out")
        self._work_pending = False
        self._advance(Step.RECEIVE_PROOF)

    # Resumption (PROTOCOL.md section 2): after ``ResumptionOffered``.

    def binder_matches(self, secret: bytes) -> bool:
        """Whether the client's binder proves it holds ``secret``, the
        resumption secret of the ticket it offered: check it before
        spending the ticket (marking it used), so that someone who only saw
        the ticket go by cannot spend it.

        Raises:
            LocalProtocolError: no resumption is waiting (``AWAIT_TICKET_CHECK``).
        """
        offer = self._waiting_offer("check a binder")
        expected = tickets.binder(secret, crypto_utils.transcript_hash(self._transcript[0], offer.before_binder))
        return tickets.binders_equal(expected, offer.binder)

    def resume(self, secret: bytes) -> None:
        """Take the resumption with ``secret`` (from the ticket, opened by
        the caller, its binder checked, its id not used before): the keys
        are agreed and the server's HI goes to ``data_to_send()``.

        Raises:
            LocalProtocolError: no resumption is waiting, or the binder does
                not match ``secret``; state unchanged.
        """
        if not self.binder_matches(secret):
            raise LocalProtocolError("the client's binder does not match this secret: decline the resumption")
        offer = _set(self._offer, "the offer")
        self._transcript.append(offer.before_binder + offer.binder)
        self._agree_keys(secret, self._offer_shared, resumed=True, is_client=False)
        self._ephemeral, self._offer, self._offer_shared = None, None, b""  # forward secrecy
        self._resumed = True
        self._send_record(SERVER_CONFIRM)
        self._advance(Step.ACCEPT_RESUMPTION)

    def decline_resumption(self) -> None:
        """Do not resume (the ticket is bad, used, expired, or the server
        takes none): the decline goes to ``data_to_send()``, and the client
        answers with a key exchange, as in a full handshake.

        Raises:
            LocalProtocolError: no resumption is waiting; state unchanged.
        """
        offer = self._waiting_offer("decline a resumption")
        self._transcript += [offer.before_binder + offer.binder, RESUMPTION_DECLINED]
        self._offer, self._offer_shared = None, b""
        self._send_frame(RESUMPTION_DECLINED)
        self._advance(Step.DECLINE_RESUMPTION)

    def _waiting_offer(self, what: str) -> handshake.Resumption:
        if self._state is not ConnectionState.AWAIT_TICKET_CHECK or self._offer is None:
            raise LocalProtocolError(f"can't {what} in state {self._state.name}")
        return self._offer

    def _receive_first(self, header: bytes, body: bytes) -> ResumptionOffered | None:
        if not handshake.is_resumption(body):
            self._receive_key_exchange(header, body)
            return None
        offer = handshake.read_resumption(body)
        try:
            self._offer_shared = _set(self._ephemeral, "the ephemeral key").agree(offer.share)
        except CryptoError as exc:
            raise RemoteProtocolError(f"bad resumption: {exc}") from None
        self._offer = offer
        self._advance(Step.RECEIVE_RESUMPTION)
        return ResumptionOffered(offer.ticket)

    def _receive_key_exchange(self, header: bytes, body: bytes) -> None:
        key_exchange = handshake.read_key_exchange(body)
        try:
            shared = _set(self._ephemeral, "the ephemeral key").agree(key_exchange.share)
        except CryptoError as exc:
            raise RemoteProtocolError(f"bad key exchange: {exc}") from None
        self._ephemeral = None  # forward secrecy: forget it as soon as used
        secret = self._unwrap_secret(key_exchange.wrapped)
        self._transcript.append(body)
        self._agree_keys(secret, shared, resumed=False, is_client=False)
        self._send_record(SERVER_CONFIRM)
        self._advance(Step.RECEIVE_KEY_EXCHANGE)

    def _unwrap_secret(self, wrapped: bytes) -> bytes:
        # A bad wrapping is not reported here: like TLS with RSA key transport
        # (RFC 5246 section 7.4.7.1), go on with a random secret, so the peer
        # learns only that key confirmation failed, never why (no padding oracle).
        try:
            secret = crypto_utils.unwrap_key(self._identity_key, wrapped)
        except CryptoError:
            secret = b""
        return secret if len(secret) == SECRET_SIZE else self._rng(SECRET_SIZE)

    def _receive_client_hi(self, header: bytes, body: bytes) -> HandshakeComplete:
        self._expect_record(header, body, CLIENT_CONFIRM)
        self._send_record(SERVER_FINISHED)
        self._advance(Step.RECEIVE_CLIENT_HI)
        self._handshake_complete = True
        self._transcript = []
        return HandshakeComplete(resumed=self._resumed)

    _receivers: ClassVar[Mapping[ConnectionState, _Receiver]] = {
        ConnectionState.AWAIT_PROOF: _receive_proof,
        ConnectionState.AWAIT_KEY_EXCHANGE: _receive_first,
        ConnectionState.AWAIT_FULL_KEY_EXCHANGE: _receive_key_exchange,
        ConnectionState.AWAIT_CLIENT_HI: _receive_client_hi,
        ConnectionState.OPEN: _Connection._receive_message,
    }
