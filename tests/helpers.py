"""A protocol-level chat client for tests: a socket, a ClientConnection and
timeouts on every read, so no test can wait forever."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from socket_chat import protocol
from socket_chat.chat.limits import UNCAPPED, Limits
from socket_chat.crypto import KEY_TYPE, PersonKey
from socket_chat.protocol import (
    ChatLine,
    ClientConnection,
    ConnectionClosed,
    Greeting,
    HandshakeComplete,
    KeyProof,
    ProofRequest,
    RateLimit,
    ServerHello,
    Stamps,
    Username,
    UsernameDeadline,
    UsernameRequest,
    Welcome,
)
from socket_chat.server import app as server

TIMEOUT = 5.0  # seconds any single expected event may take
DEADLINE = 5.0  # seconds for anything the tests poll for

#: The per-address limits before the handshake, off: a test opens dozens of
#: connections from 127.0.0.1 within a second, as no person does. The tests
#: of those limits (test_admission.py) turn them on.
OPEN_DOOR = {"max_per_address": 0, "handshake_rate": 0.0, "max_startups": UNCAPPED}


def open_door_limits(**changed) -> Limits:
    """Limits for a test server: the defaults with ``OPEN_DOOR``, then ``changed``."""
    return Limits(**{**OPEN_DOOR, **changed})


def key_proof(identity: PersonKey, session_id: bytes) -> KeyProof:
    """The KeyProof ``identity`` makes for the connection ``session_id`` names."""
    return KeyProof(KEY_TYPE, identity.public_bytes, identity.sign_proof(session_id))


class ChatTestClient:
    def __init__(self, address, conn: ClientConnection | None = None, source: str | None = None) -> None:
        # ``source``: the loopback address to connect from (127.0.0.2 and up
        # are loopback too), for the per-address limits.
        self.sock = socket.create_connection(address, timeout=TIMEOUT, source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the client does (transport.tune)
        self.conn = conn or ClientConnection()
        self.hello: ServerHello | None = None
        self.rate_limit: RateLimit | None = None
        self.greeting: Greeting | None = None

    def handshake(
        self,
        identity: PersonKey | None = None,
        guest: bool = False,
        stamps: bool = False,
        multiline: bool = False,
        rooms: bool = False,
    ) -> None:
        """The handshake and the server's first words, then a key proof as
        a newer client sends it: of ``identity``, or of a key made for the
        connection. ``guest``: no proof, as an older client or a script.
        ``stamps``: answer the server's offer of message IDs and times (else
        it is passed over, as an older client does). ``multiline``: take
        blocks whole (else each comes as one message a line). ``rooms``:
        answer the offer of rooms (else the client stays in the lobby, as an
        older one)."""
        self.hello = self.next_event()
        assert isinstance(self.hello, ServerHello)
        self.conn.accept_server_key()
        self.flush()
        assert isinstance(self.next_event(), HandshakeComplete)
        self.rate_limit = self.expect(RateLimit)
        self.username_deadline = self.expect(UsernameDeadline)
        event = self.next_event()
        if isinstance(event, ProofRequest):  # not from a server of before keys for people
            if not guest:
                self.identity = identity or PersonKey.generate()
                self.send(key_proof(self.identity, self.conn.session_id))
            event = self.next_event()
        if isinstance(event, Stamps):  # not from a server of before the history
            if stamps:
                self.send(Stamps())
            event = self.next_event()
        if isinstance(event, protocol.MultilineOffer):  # not from a server of before blocks
            self.max_lines = event.max_lines
            if multiline:
                self.send(protocol.Multiline())
            event = self.next_event()
        if isinstance(event, protocol.Rooms):  # not from a server of a cluster, nor of before rooms
            if rooms:
                self.send(protocol.Rooms())
            event = self.next_event()
        assert isinstance(event, UsernameRequest), event

    def join(self, name: str) -> Welcome:
        """Send ``name`` and expect it accepted, then the Greeting that
        follows every Welcome (kept in ``greeting``)."""
        self.send(Username(name))
        welcome = self.next_event()
        assert isinstance(welcome, Welcome), welcome
        self.greeting = self.expect(Greeting)
        return welcome

    def say(self, text: str) -> None:
        self.send(ChatLine(text))

    def send(self, message) -> None:
        self.conn.send(message)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def next_event(self, timeout: float = TIMEOUT):
        """The next event; raises socket.timeout if none comes in time."""
        deadline = time.monotonic() + timeout
        while (event := self.conn.next_event()) is protocol.NEED_DATA:
            self.flush()
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            self.conn.receive_data(self.sock.recv(65536))
        self.flush()
        return event

    def expect(self, event_type, timeout: float = TIMEOUT):
        """The next event, which must be of ``event_type``."""
        event = self.next_event(timeout)
        assert isinstance(event, event_type), f"expected {event_type.__name__}, got {event!r}"
        return event

    def events_until(self, marker, timeout: float = TIMEOUT) -> list:
        """The events before the first one equal to ``marker``, which is
        read too. To show that something did not arrive, without waiting
        to see: send a marker after it, along the same path (a line said
        later by the same client), and expect nothing before the marker."""
        deadline = time.monotonic() + timeout
        before = []
        while (event := self.next_event(max(0.001, deadline - time.monotonic()))) != marker:
            before.append(event)
        return before

    def wait_closed(self, timeout: float = TIMEOUT) -> ConnectionClosed:
        """Read until the server closes the connection; return the close event."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.001, deadline - time.monotonic()))
            if isinstance(event, ConnectionClosed):
                return event

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def wait_until(predicate, timeout: float = DEADLINE) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class OwnServer:
    """A ChatServer on 127.0.0.1:0 that the test starts and stops itself."""

    def __init__(self, key) -> None:
        self.key = key
        self.server: server.ChatServer | None = None
        self.thread: threading.Thread | None = None
        self.clients: list[ChatTestClient] = []
        self.stopped = False

    def start(self, cluster=None, registrations=None, kept=None, offline=None, **limits) -> server.ChatServer:
        """Start serving, with ``limits`` (fields of ``limits.Limits``) changed
        from ``open_door_limits()``, alone or in ``cluster``, registering
        names in ``registrations`` (None: none), keeping what it knows by
        key in ``kept`` and private lines for later in ``offline``
        (``ChatServer``'s; None: in memory)."""
        self.server = server.ChatServer(
            self.key,
            "127.0.0.1",
            0,
            open_door_limits(**limits),
            cluster=cluster,
            registrations=registrations,
            kept=kept,
            offline=offline,
        )
        self.thread = threading.Thread(target=self.server.serve_forever, name="serve_forever", daemon=True)
        self.thread.start()
        return self.server

    @property
    def port(self) -> int:
        """The port it listens on (as ``procs.Proc.port``, for client.py)."""
        return self.server.server_address[1]

    def client(self, name: str | None = None, handshake: bool = True, source: str | None = None) -> ChatTestClient:
        client = ChatTestClient(self.server.server_address, source=source)
        self.clients.append(client)
        if handshake:
            client.handshake()
        if name is not None:
            client.join(name)
        return client

    def stop(self) -> None:
        if self.server is not None and not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(DEADLINE)

    def cleanup(self) -> None:
        for client in self.clients:
            client.close()
        self.stop()


def run_threads(targets, timeout: float = DEADLINE * 2) -> None:
    """Run each callable in its own thread; re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(target):
        try:
            target()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish in time"
    if errors:
        raise errors[0]
