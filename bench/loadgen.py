"""The load generator: many protocol clients in one process, on one selector.

Each ``BenchClient`` is a non-blocking socket and a sans-I/O connection
(``protocol.ClientConnection``, ``plain.PlainConnection`` for the floor, or
any other ``WireConnection``, such as bench/irc.py's IRC client over TLS);
``LoadGen.pump`` reads whatever is ready, feeds the connections and writes
their answers. No thread per client, so a thousand fit in one process.
Every loop here is bounded by a deadline.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Protocol

from bench.plain import PlainConnection
from socket_chat import protocol
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    MalformedMessage,
    NewTicket,
    ServerHello,
    TicketRequest,
    UserJoined,
    UserLeft,
    Username,
    UsernameRequest,
    Welcome,
)

RECV_SIZE = 256 * 1024
_IGNORED = (UserJoined, UserLeft, protocol.Notice)
_ROOMS = (
    protocol.RoomMessage,
    protocol.Joined,
    protocol.Parted,
    protocol.RoomNotice,
    protocol.RoomHistoryLine,
    protocol.RoomList,
    protocol.RoomMembers,
)


class BenchError(Exception):
    """The run cannot go on (a client was refused, a deadline passed)."""


class WireConnection(Protocol):
    """What the load generator drives: a sans-I/O client connection."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self): ...

    def send(self, message) -> None: ...

    def data_to_send(self) -> bytes: ...


#: Makes a client's connection; None: ours (or the plaintext floor's).
ConnectionFactory = Callable[[], WireConnection] | None


class BenchClient:
    """One simulated person: a socket, a connection and what it still has to write."""

    def __init__(
        self,
        address,
        name: str,
        plain: bool,
        connection: ConnectionFactory = None,
        ticket: protocol.ClientTicket | None = None,
    ) -> None:
        self.name = name
        self.started = time.perf_counter()
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the client does (transport.tune)
        self.sock.setblocking(False)
        self.conn: WireConnection = (
            connection() if connection else PlainConnection() if plain else protocol.ClientConnection(ticket=ticket)
        )
        self.pending = bytearray()
        self.ready_at: float | None = None
        self.username_sent = False
        self.closed = False
        self.want_ticket = False  # ask for a resumption ticket before the username (bench/resume.py)
        self.resumed = False  # the handshake resumed by a ticket
        self.rooms = False  # take the server's offer of rooms (bench/rooms.py)
        self.new_ticket: protocol.ClientTicket | None = None  # the ticket the server gave


class LoadGen:
    """Drives many ``BenchClient``s. ``on_chat(client, message, now)`` is
    called for every ChatMessage, ``on_room(client, event, now)`` for every
    message of a room (RoomMessage, Joined, RoomNotice, ...); problems are
    collected in ``errors``.
    ``connection`` makes each client's connection (default: ours, or the
    plaintext floor's with ``plain``)."""

    def __init__(self, address, plain: bool = False, connection: ConnectionFactory = None) -> None:
        self.address, self.plain, self.connection = address, plain, connection
        self.selector = selectors.DefaultSelector()
        self.clients: list[BenchClient] = []
        self.errors: list[str] = []
        self.on_chat = lambda client, message, now: None
        self.on_room = lambda client, event, now: None

    def connect(
        self,
        name: str,
        address=None,
        ticket: protocol.ClientTicket | None = None,
        want_ticket: bool = False,
        rooms: bool = False,
    ) -> BenchClient:
        """A new client, to ``address`` (default: the generator's server),
        offering ``ticket`` and asking for a new one if ``want_ticket``, and
        in rooms besides the lobby if ``rooms``."""
        client = BenchClient(address or self.address, name, self.plain, self.connection, ticket)
        client.want_ticket, client.rooms = want_ticket, rooms
        self.selector.register(client.sock, selectors.EVENT_READ, client)
        self.clients.append(client)
        self._after_events(client)  # the plain connection asks for a name at once; TLS says hello
        return client

    def send_chat(self, client: BenchClient, text: str) -> None:
        self.send(client, ChatLine(text))

    def send(self, client: BenchClient, message) -> None:
        client.conn.send(message)
        self._flush(client)

    def close(self, client: BenchClient) -> None:
        if not client.closed:
            client.closed = True
            self.selector.unregister(client.sock)
        client.sock.close()

    def close_all(self) -> None:
        for client in self.clients:
            self.close(client)
        self.clients.clear()
        self.selector.close()

    def pump(self, timeout: float) -> int:
        """One round: wait up to ``timeout`` s, then serve every ready socket.
        Returns the number of bytes read."""
        read = 0
        for key, mask in self.selector.select(max(0.0, timeout)):
            client = key.data
            if mask & selectors.EVENT_WRITE:
                self._flush(client)
            if mask & selectors.EVENT_READ and not client.closed:
                read += self._read(client)
        return read

    def run_until(self, done, deadline: float, what: str) -> None:
        """Pump until ``done()`` is true; BenchError at ``deadline``."""
        while not done():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out: {what}")
            self.pump(0.05)

    def settle(self, quiet: float, deadline: float) -> None:
        """Pump until nothing arrives for ``quiet`` seconds (or the deadline)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() < deadline:
            if self.pump(quiet / 4):
                last = time.monotonic()

    def _read(self, client: BenchClient) -> int:
        try:
            data = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._lost(client, f"{client.name}: {exc}")
            return 0
        client.conn.receive_data(data)
        self._after_events(client)
        return len(data)

    def _after_events(self, client: BenchClient) -> None:
        now = time.perf_counter()
        while not client.closed and (event := client.conn.next_event()) is not protocol.NEED_DATA:
            self._handle(client, event, now)
        if not client.closed:
            self._flush(client)

    def _handle(self, client: BenchClient, event, now: float) -> None:
        if isinstance(event, ChatMessage):
            self.on_chat(client, event, now)
        elif isinstance(event, _IGNORED):
            pass
        elif isinstance(event, _ROOMS):
            self.on_room(client, event, now)
        elif isinstance(event, protocol.Rooms):
            if client.rooms:
                client.conn.send(protocol.Rooms())  # yes: the room messages too
        elif isinstance(event, HandshakeComplete):
            client.resumed = event.resumed
        elif isinstance(event, NewTicket):
            assert isinstance(client.conn, protocol.ClientConnection)
            if event.lifetime:
                conn = client.conn
                client.new_ticket = protocol.ClientTicket(event.ticket, conn.resumption_secret, conn.server_fingerprint)
        elif isinstance(event, ServerHello):
            assert isinstance(client.conn, protocol.ClientConnection)  # the plain floor has no handshake
            client.conn.accept_server_key()  # a benchmark trusts its own server
        elif isinstance(event, UsernameRequest):
            if client.username_sent:
                raise BenchError(f"the server refused the name {client.name}: {event.prompt}")
            if client.want_ticket:
                client.conn.send(TicketRequest())
            client.conn.send(Username(client.name))
            client.username_sent = True
        elif isinstance(event, Welcome):
            client.ready_at = now
        elif isinstance(event, (Goodbye, ConnectionClosed)):
            self._lost(client, f"{client.name}: the server closed the connection")
        elif isinstance(event, (ErrorNotice, MalformedMessage)):
            self.errors.append(f"{client.name}: {event}")

    def _flush(self, client: BenchClient) -> None:
        client.pending += client.conn.data_to_send()
        if client.pending:
            try:
                sent = client.sock.send(client.pending)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(client, f"{client.name}: {exc}")
                return
            del client.pending[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.pending else 0)
        if self.selector.get_key(client.sock).events != events:
            self.selector.modify(client.sock, events, client)

    def _lost(self, client: BenchClient, reason: str) -> None:
        self.errors.append(reason)
        self.close(client)
