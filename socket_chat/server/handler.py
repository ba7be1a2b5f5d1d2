"""One connection's reader: its socket, its deadlines, and the hand-off to
the server's sender.

A ``ClientHandler`` holds no rule of the chat: once the handshake is done
and a place is taken, it reads events and gives them to its member session
(``chat.member``), which says what they mean. What it keeps are the socket,
the deadlines (handshake, username, a frame once begun), the admission
ticket, and the end of the connection.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from socket_chat import protocol, transport
from socket_chat.chat.limits import Limits, Outbox
from socket_chat.chat.member import MemberSession, Stage
from socket_chat.crypto import work
from socket_chat.protocol import (
    ConnectionClosed,
    ConnectionState,
    Encoded,
    Goodbye,
    HandshakeComplete,
    Message,
    ProtocolError,
    ResumptionOffered,
    ServerConnection,
    encode,
)
from socket_chat.protocol.events import NeedData
from socket_chat.server import admission
from socket_chat.server.sender import Outlet

if TYPE_CHECKING:
    from socket_chat.server.app import ChatServer

__all__ = ["ClientHandler", "RECORDS_USED_UP", "SERVER_FULL", "SHUTDOWN_GRACE", "handshake_seconds", "server_full"]

SHUTDOWN_GRACE = 2.0  # seconds to let goodbyes go out on shutdown
SERVER_FULL = "The server is full ({places}). Try again later."
RECORDS_USED_UP = (
    "This connection has carried as many messages as its keys may protect (2^24). Reconnect to go on, with new keys."
)

log = logging.getLogger("chat.server")


def server_full(max_clients: int) -> str:
    """The refusal of a connection over ``--max-clients``."""
    places = "1 person" if max_clients == 1 else f"{max_clients:,} people"
    return SERVER_FULL.format(places=places)


def handshake_seconds(limits: Limits, effort: int) -> float:
    """The handshake deadline of a connection asked for ``effort`` (0:
    none): the client's solving time is no part of the program's work
    that ``handshake_timeout`` bounds, so it gets a rare slow solve's."""
    return limits.handshake_timeout + work.solve_allowance(effort)


class ClientHandler:
    """One client: its socket, protocol state, outbox and reader thread. A
    room ``Member``; what the client says is its ``session``'s to judge.

    The reader thread runs ``handle()``. After the handshake and the
    session's first words (which it writes itself: no one else can queue
    anything for a client not yet in the room) it hands the client's
    ``Outlet`` to the server's sender, the only thread that sends to it from
    then on: the reader drives the receiving half of ``conn`` and the sender
    its sending half, as ``protocol`` allows once the handshake is done.
    """

    def __init__(
        self,
        server: ChatServer,
        sock: socket.socket,
        address: tuple[str, int],
        ticket: admission.Ticket | None = None,
    ) -> None:
        self.server = server
        self.ticket = ticket  # its admission: given back when it ends
        self.limits: Limits = server.limits
        self.sock = sock
        self.peer = transport.format_address(*address[:2])
        self.host = address[0]  # the address alone, for the bans
        self.outbox = Outbox(self.limits.sendq_bytes, on_ready=self._wake_sender)
        # A busy server's proof of work (admission), asked before any RSA.
        self.conn = ServerConnection(server.identity, work=0 if ticket is None else ticket.work)
        self.outlet = Outlet(sock, self.conn, self.outbox, used_up=Goodbye(RECORDS_USED_UP))
        self._sending = False  # the keys are agreed: from the end of the handshake, a goodbye can be said
        self._handed_over = False  # the sender has the outlet (see _hand_over)
        self._readable = select.poll()  # poll() rather than select(): no limit on descriptor numbers
        self._readable.register(sock, select.POLLIN)
        self._closing = False  # a plain flag: an Event costs an idle client a Condition
        self._frame_began: float | None = None
        self._gate: Callable[[_NextEvent], protocol.Event | NeedData] = _here  # see _handshake
        # Made once the handshake is done (_converse): a connection still in
        # its handshake, or one that never finishes it, costs no session.
        self.session: MemberSession | None = None
        self._resumed_key: str | None = None  # the key a resumption's ticket carried

    # What the room calls (room.Member).

    def deliver(self, item: Encoded) -> bool:
        return self.outbox.put(item)

    def send_queue_overflowed(self) -> None:
        # IRC's "SendQ exceeded": it does not read, and the others must not
        # wait for it. A goodbye could not reach it either.
        log.warning(
            "%s: send queue over %d bytes: disconnecting a client that does not read",
            self.peer,
            self.limits.sendq_bytes,
        )
        self.abort()

    def close(self, reason: str) -> None:
        """Say goodbye and close (from another thread, for example on shutdown)."""
        self._closing = True
        if not self._sending:
            self.abort()  # no keys yet: nothing can be said
        else:
            self.outbox.close(last=encode(Goodbye(reason)))

    def abort(self) -> None:
        """Cut the connection now; the reader thread wakes up and cleans up."""
        self._closing = True
        self.outbox.close()
        self.outlet.cut()
        with contextlib.suppress(OSError):  # already closed by the peer or by us
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._handed_over:
            self.server.sender.wake(self.outlet)  # to let go of the socket

    def _wake_sender(self) -> None:
        if self._handed_over:  # before that, the reader writes (_hand_over)
            self.server.sender.wake(self.outlet)

    def _hand_over(self) -> None:
        """Write what is queued (the session's first words) from this thread,
        then give the sending to the sender for good. Before the client joins
        the room only its own reader (and a close from another thread, which
        the sender then sees) queues anything for it: writing here saves the
        sender a wake-up, two thread switches, per connection (issue 22)."""
        if self._handed_over:
            return
        try:
            items = self.outbox.take()  # from here, the next put calls on_ready
            if items:
                self.conn.send_batch(items)
                self.sock.sendall(self.conn.data_to_send())
        finally:
            self.server.sender.add(self.outlet, wake=False)  # non-blocking from here: before a put can wake it
            self._handed_over = True  # from here, a put wakes the sender
            # A put or a close since the take was not announced to the
            # sender (it did not have the outlet yet): wake it for that.
            # Else there is nothing for it to do until the next put.
            if self.outbox.closed or self.outbox.queued_bytes:
                self.server.sender.wake(self.outlet)

    # The reader thread.

    def handle(self) -> None:
        """The reader thread: handshake, then the session, until the end."""
        try:
            self._handshake()
            self._sending = True
            self._take_place()
            self._converse()
        except _ClientLeft:
            pass
        except _TurnedAway as exc:
            log.info("%s: %s", self.peer, exc.reason)
            self.close(exc.reason)
        except _DeadlinePassed as exc:
            log.info("%s: timed out %s", self.peer, exc.waiting_for)
            self.close(f"Timed out {exc.waiting_for}.")
        except ProtocolError as exc:
            log.warning("%s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            if not self._closing:
                log.info("%s: connection error: %s", self.peer, exc)
        finally:
            self._finish()

    def _handshake(self) -> None:
        try:
            deadline = _Deadline(handshake_seconds(self.limits, self.conn.work), "waiting for the handshake")
            self._gate = self._in_handshake_thread  # its cryptography there, one at a time
            self.sock.sendall(self.conn.data_to_send())
            event = self._next_event(deadline, flush=True)
            if isinstance(event, ResumptionOffered):
                self._answer_resumption(event)
                event = self._next_event(deadline, flush=True)
            if isinstance(event, ConnectionClosed):
                log.info("%s: closed during the handshake", self.peer)
                raise _ClientLeft()
            if not isinstance(event, HandshakeComplete):
                raise protocol.RemoteProtocolError(f"handshake ended with {event}")
            self._gate = _here
        except (_ClientLeft, _DeadlinePassed, ProtocolError, OSError) as exc:
            if self.ticket is not None and _costs_its_address(exc, self.conn):
                self.server.admission.penalize(self.ticket)
            raise
        how = " (resumed)" if self.conn.resumed else ""
        if self.conn.work:
            how += f" (proved work, effort {self.conn.work})"
        log.info("%s: handshake complete%s", self.peer, how)

    def _in_handshake_thread(self, call: _NextEvent) -> protocol.Event | NeedData:
        """``call()`` in the handshake thread when it has bytes to read before
        the client's HI (a proof of work, a key exchange and its unwrap).
        With nothing buffered, ``next_event`` reads nothing (NEED_DATA, or
        the end); a client HI is one record opened and one sealed, with the
        keys already agreed; a resumption's offer is an X25519 agreement and
        no RSA (its ticket is checked outside the gate anyway, in
        ``_answer_resumption``). The reader makes those calls itself: a
        hand-off costs two thread switches each way, and a full handshake
        made three of them for its one RSA unwrap; a resumed connection now
        makes none."""
        conn = self.conn
        if not conn.buffered_bytes or conn.state is ConnectionState.AWAIT_CLIENT_HI or conn.resumption_coming:
            return call()
        return self.server.handshakes.run(call)

    def _answer_resumption(self, offer: ResumptionOffered) -> None:
        """Resume if the ticket is good (never holding the handshake gate:
        in a cluster, its check asks Redis), else decline: the client
        then does a full handshake."""
        tickets = self.server.tickets
        contents = None if tickets is None else tickets.redeem(self.conn, offer.ticket)
        if contents is None:
            self.conn.decline_resumption()
        else:
            self.conn.resume(contents.secret)
            self._resumed_key = contents.fingerprint or None
        self.sock.sendall(self.conn.data_to_send())

    def _new_ticket(self, fingerprint: str | None) -> protocol.NewTicket:
        assert self.server.tickets is not None  # given to the session only then
        return self.server.tickets.issue(self.conn.resumption_secret, fingerprint)

    def _take_place(self) -> None:
        """Hold one of the ``max_clients`` places, now that the handshake
        is done (the places are for people, never for connections still in
        their handshake)."""
        if self.ticket is not None and not self.server.admission.establish(self.ticket):
            raise _TurnedAway(server_full(self.limits.max_clients))

    def _converse(self) -> None:
        """Feed the session what the client sends, under the username
        deadline until it has a name, then without one."""
        server = self.server
        session = self.session = MemberSession(
            server.room,
            self,
            self.limits,
            self._tell,
            peer=self.peer,
            log_messages=server.log_messages,
            allowed=server.allowed,
            registrations=server.registrations,
            offline=server.offline,
            search=server.store,
            bans=server.bans,
            host=self.host,
            operators=server.operators_list,
            operate=server.operate,
            tickets=None if server.tickets is None else self._new_ticket,
            rooms=server.rooms,
        )
        naming = _Deadline(self.limits.username_timeout, "waiting for a username")
        session.start(self.conn.session_id, self._resumed_key)  # the session id: what a key proof signs
        self._hand_over()
        while session.stage is not Stage.ENDED:
            session.receive(self._next_event(naming if session.stage is Stage.NAMING else None))
        if session.goodbye is not None:
            raise _TurnedAway(session.goodbye)

    def _tell(self, message: Message) -> None:
        """Queue a message for this client alone (from its reader thread)."""
        if not self.outbox.put(encode(message)):
            self.send_queue_overflowed()

    def _next_event(self, deadline: _Deadline | None, flush: bool = False) -> protocol.Event:
        """The next event, reading the socket as needed (until ``deadline``,
        and within ``frame_timeout`` of a frame's first byte)."""
        while True:
            event = self._gate(self.conn.next_event)
            if flush:
                self.sock.sendall(self.conn.data_to_send())
            if event is not protocol.NEED_DATA:
                self._frame_began = None
                return event
            self._wait_readable(self._earliest(deadline))
            try:
                data = self.sock.recv(transport.RECV_SIZE)
            except BlockingIOError:
                continue  # the sender made the socket non-blocking; poll() again
            self.conn.receive_data(data)

    def _earliest(self, deadline: _Deadline | None) -> _Deadline | None:
        """The deadline for the next read: the stage's, or the frame's once
        a frame has begun, whichever comes first."""
        if not self.conn.buffered_bytes:
            self._frame_began = None
            return deadline
        if self._frame_began is None:
            self._frame_began = time.monotonic()
        frame = _Deadline(self.limits.frame_timeout, "in the middle of a message", start=self._frame_began)
        return frame if deadline is None or frame.at < deadline.at else deadline

    def _wait_readable(self, deadline: _Deadline | None) -> None:
        """Wait in poll(), not in recv(): an idle reader then holds no receive
        buffer (recv allocates RECV_SIZE before it waits)."""
        timeout = None if deadline is None else max(0.0, deadline.at - time.monotonic()) * 1000
        if not self._readable.poll(timeout) and deadline is not None:
            raise _DeadlinePassed(deadline.waiting_for)

    def _finish(self) -> None:
        if self.session is not None:
            self.session.leave()
        if self._sending:
            self.outbox.close()  # what is queued still goes out, then the sender lets go
            with contextlib.suppress(OSError):  # gone: the sender still lets go
                self._hand_over()
            if not self.outlet.finished.wait(SHUTDOWN_GRACE):
                self.abort()
                self.outlet.finished.wait(SHUTDOWN_GRACE)
            failure = self.outlet.failure
            if isinstance(failure, protocol.RecordLimitError):
                log.info("%s: record limit reached: closing the connection", self.peer)
            elif failure is not None and not self._closing:
                log.info("%s: send failed: %s", self.peer, failure)
        self.abort()
        self.sock.close()  # only now: the sender has let go of it
        self.server.forget(self)


#: ``conn.next_event``, as the reader hands it over during the handshake.
_NextEvent = Callable[[], "protocol.Event | NeedData"]


def _here(call: _NextEvent) -> protocol.Event | NeedData:
    """``call()`` in this thread: the reader's own once the handshake is done."""
    return call()


def _costs_its_address(failure: Exception, conn: ServerConnection) -> bool:
    """Whether a handshake that ended in ``failure`` costs its address more
    (sshd's PerSourcePenalties: the server may have spent an RSA decryption).
    Not one that left before the proof of work it was asked: no RSA was
    spent, and an older client leaves there, as told. A connection error
    (a reset) only once the RSA is spent: else it cost next to nothing."""
    if isinstance(failure, OSError):
        return _rsa_spent(conn)
    return not (isinstance(failure, _ClientLeft) and conn.work_pending)


def _rsa_spent(conn: ServerConnection) -> bool:
    """Whether the server has unwrapped the client's key exchange (it then
    waits for the client's HI, or is done)."""
    return not conn.resumed and conn.state in (ConnectionState.AWAIT_CLIENT_HI, ConnectionState.OPEN)


class _ClientLeft(Exception):
    """The client said goodbye or closed the connection: a normal end."""


class _TurnedAway(Exception):
    """The connection is ended by a limit; ``reason`` is its goodbye."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Deadline:
    """A moment by which something must have arrived, and what it is."""

    def __init__(self, seconds: float, waiting_for: str, start: float | None = None) -> None:
        self.at = (time.monotonic() if start is None else start) + seconds
        self.waiting_for = waiting_for


class _DeadlinePassed(Exception):
    def __init__(self, waiting_for: str) -> None:
        super().__init__(waiting_for)
        self.waiting_for = waiting_for
