"""The connection to the server: connecting, the handshake, and the trust
in the server's key (checked with ``socket_chat.crypto.keystore``; a key
seen for the first time is shown and asked about, as ssh does).

Also how an end of the session that the server makes before the chat (its
Goodbye, or the connection closed) becomes the ``ClientError`` that ends
the client: ``raise_if_ended``.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from socket_chat import crypto, protocol, transport
from socket_chat.chat import blocks
from socket_chat.chat.limits import Pacer
from socket_chat.chat.presentation import printable_text
from socket_chat.client.tickets import GUEST, TicketWallet
from socket_chat.crypto import keystore
from socket_chat.protocol import (
    ClientConnection,
    ClientTicket,
    ConnectionClosed,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    KeyProof,
    NewTicket,
    RateLimit,
    RemoteProtocolError,
    ServerHello,
    ServerRefused,
    TicketRequest,
    UserList,
    Welcome,
)
from socket_chat.protocol.handshake import MIN_EFFORT
from socket_chat.tty import Terminal

__all__ = [
    "ClientError",
    "ServerLink",
    "connect",
    "establish",
    "trust_server",
    "confirm_new_key",
    "refusal_text",
    "proving_work",
    "end_reason",
    "raise_if_ended",
]

CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
HELLO_TIMEOUT = 5.0  # a chat server greets at once: this long in silence, and it is not one
CONNECTION_LOST = "Connection to server lost."


class ClientError(Exception):
    """Ends the client with a message for the person and a non-zero status."""


class ServerLink:
    """The socket and the protocol state.

    The main thread sends; once the chat begins, the Receiver reads. They
    need no lock between them: once the connection is OPEN, the protocol
    lets one thread receive while another sends (``_Connection``'s rule, as
    the server's reader and sender threads rely on), and after the handshake
    receiving writes nothing for the sending half. Only the handshake, run
    by the main thread before the Receiver starts, answers what it reads
    (``handshake_event``). The main thread sends, and the Receiver may too
    (a quiet user list, for guest marks): ``send`` holds a lock, so that two
    records are never interleaved on the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = ClientConnection()
        self._pacer: Pacer | None = None
        self.rate_limit: RateLimit | None = None
        self.on_hold: Callable[[], None] | None = None  # a line must wait for the rate limit
        #: The server told its username deadline: it is of a version that
        #: echoes a member's own lines on request (PROTOCOL.md, 0x20 on).
        self.server_echoes_on_request = False
        #: The person's key, proved when the server asks (ProofRequest); None: a guest.
        self.identity: crypto.PersonKey | None = None
        self._send_lock = threading.Lock()  # one record written at a time
        #: Where resumption tickets are kept, and this server's name there.
        self.wallet: TicketWallet | None = None
        self.server_id = ""
        self._ticket_asked = self._ticket_answered = False
        self._ticket: ClientTicket | None = None  # the one held for this server and person

    def use_tickets(self, wallet: TicketWallet, server_id: str) -> None:
        """Before the handshake, with ``identity`` set: offer the ticket held
        for ``server_id`` (``HOST:PORT``) and this person, if any, and keep
        the one this connection gets."""
        self.wallet, self.server_id = wallet, server_id
        self._ticket = wallet.peek(server_id, self.person)
        self.conn = ClientConnection(ticket=self._ticket)

    @property
    def person(self) -> str:
        """Whose tickets this link holds: the key's fingerprint, or GUEST."""
        return self.identity.fingerprint if self.identity is not None else GUEST

    def accept_server_key(self) -> None:
        """The server's key is trusted: answer its hello. The ticket is
        spent only if it went out (a refusal or a refused key keeps it)."""
        self.conn.accept_server_key()
        if self.conn.state is protocol.ConnectionState.AWAIT_RESUMPTION and self.wallet and self._ticket:
            self.wallet.spend(self.server_id, self.person, self._ticket)

    def request_ticket(self) -> None:
        """Ask for a ticket for the next connection (once, after the key
        proof: the ticket carries the key proved), if tickets are kept."""
        if self.wallet is not None and not self._ticket_asked:
            self._ticket_asked = True
            self.send(TicketRequest())

    def _keep_ticket(self, event: protocol.Event) -> bool:
        """Whether ``event`` was the answer to the ticket request (kept, not
        shown): a NewTicket, or an older server's "Message not understood"
        error for it, the first error after the request (it answers in
        order, and nothing sent before the request draws an error)."""
        if not self._ticket_asked or self._ticket_answered:
            return False
        if isinstance(event, (Welcome, UserList)):
            self._ticket_answered = True  # the answer came before, or was dropped (flood control)
            return False
        if isinstance(event, NewTicket):
            self._ticket_answered = True
            if event.lifetime and event.ticket and self.wallet is not None:
                ticket = ClientTicket(event.ticket, self.conn.resumption_secret, self.conn.server_fingerprint)
                self.wallet.put(self.server_id, self.person, ticket, event.lifetime)
            return True
        if isinstance(event, ErrorNotice) and event.text.startswith("Message not understood"):
            self._ticket_answered = True  # a server of before tickets
            return True
        return False

    def prove_identity(self) -> None:
        """Send the key proof for this connection, if there is a key: the
        server asked for one (ProofRequest), before the username."""
        if self.identity is not None:
            signature = self.identity.sign_proof(self.conn.session_id)
            self.send(KeyProof(crypto.KEY_TYPE, self.identity.public_bytes, signature))

    def handshake_event(self) -> protocol.Event:
        """The next event of the handshake, reading as needed; what the
        handshake writes by itself (its answers) is sent before waiting for
        more, and after the event."""
        event = self._read_event(answering=True)
        self._flush()
        return event

    def next_event(self) -> protocol.Event:
        """The next event after the handshake, reading as needed; it writes
        nothing, so the Receiver may call it while the main thread sends.
        The server's rate limit is kept here, not returned."""
        while True:
            event = self._read_event()
            if isinstance(event, RateLimit):
                self._pacer = Pacer(event)
                self.rate_limit = event
            elif not self._keep_ticket(event):
                return event

    def send_paced(self, message: protocol.Message) -> None:
        """Send a message the server counts against its rate limit, first
        waiting as long as the limit asks (``on_hold()`` is called before a
        wait)."""
        if self._pacer is not None:
            delay = self._pacer.delay(blocks.cost(message))  # a block: one token a line, as the server counts
            if delay:
                if self.on_hold is not None:
                    self.on_hold()
                time.sleep(delay)
        self.send(message)

    def send(self, message: protocol.Message) -> None:
        """Seal ``message`` and write it to the socket at once (no pacing)."""
        with self._send_lock:
            self.conn.send(message)
            self.sock.sendall(self.conn.data_to_send())

    def _read_event(self, answering: bool = False) -> protocol.Event:
        while (event := self.conn.next_event()) is protocol.NEED_DATA:
            if answering:
                self._flush()
            self.conn.receive_data(self.sock.recv(transport.RECV_SIZE))
        return event

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)


def connect(host: str, port: int) -> ServerLink:
    """A link to ``host``:``port``, connected, not yet through the handshake.

    Raises:
        ClientError: the connection could not be made.
    """
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ClientError(
            f"Could not connect to {transport.format_address(host, port)}: {exc.strerror or exc}"
        ) from None
    transport.tune(sock)
    return ServerLink(sock)


Trusted = TypeVar("Trusted")


def establish(link: ServerLink, trust: Callable[[ServerHello], Trusted], server: str = "The server") -> Trusted:
    """Run the handshake with ``server`` (``HOST:PORT``, for messages).

    ``trust(ServerHello)`` checks the key before anything is sent, and
    raises to refuse it. What it returns is returned once the handshake is
    complete: only then has the server proved it holds the key (key
    confirmation), so only then may a new key be recorded.

    Raises:
        ClientError: the server turned the connection away, or is not a chat
            server at all (it said nothing, or something else).
        RemoteProtocolError: the handshake failed.
    """
    hello = read_hello(link, server)
    if isinstance(hello, ServerRefused):
        raise ClientError(refusal_text(hello.reason))
    if not isinstance(hello, ServerHello):
        raise RemoteProtocolError("expected the server's hello, but the connection was closed")
    trusted = trust(hello)
    link.accept_server_key()
    event = link.handshake_event()
    if not isinstance(event, HandshakeComplete):
        raise RemoteProtocolError(f"handshake ended with {event}")
    link.sock.settimeout(None)
    return trusted


def read_hello(link: ServerLink, server: str) -> protocol.Event:
    """The server's first event: its hello, a refusal, or the end.

    A chat server sends its hello the moment it accepts, and it is the first
    thing on the wire; so silence for ``HELLO_TIMEOUT``, or first bytes that
    cannot begin a hello, mean this is some other program (a web server
    waits for the client to speak first). Say so at once, with what it sent.
    """
    link.sock.settimeout(HELLO_TIMEOUT)
    first = b""
    try:
        while (event := link.conn.next_event()) is protocol.NEED_DATA:
            data = _recv_greeting(link)
            first = first or data
            link.conn.receive_data(data)
            link.sock.settimeout(HANDSHAKE_TIMEOUT)
    except TimeoutError:
        if first:
            raise
        raise ClientError(
            f"{server} accepted the connection but said nothing for {HELLO_TIMEOUT:g} s, "
            "while a chat server greets at once: it is not a chat server (or it is overloaded)."
        ) from None
    except RemoteProtocolError:
        if protocol.may_be_server_greeting(first):
            raise  # a chat server, of a version or form this client cannot read
        raise ClientError(f"{server} is not a chat server (it answered with {quote_bytes(first)}).") from None
    link.sock.settimeout(HANDSHAKE_TIMEOUT)
    return event


def _recv_greeting(link: ServerLink) -> bytes:
    """The next bytes of the server's greeting. After a busy server's
    refusal (its puzzle should follow), a connection reset is the end of
    the greeting: the refusal stands (b"", EOF)."""
    try:
        return link.sock.recv(transport.RECV_SIZE)
    except (ConnectionResetError, ConnectionAbortedError):
        if link.conn.state is protocol.ConnectionState.AWAIT_PUZZLE:
            return b""
        raise


#: Said before solving a puzzle harder than the lowest (which takes a few
#: milliseconds, and nobody notices): the person sees why the connection waits.
PROVING_WORK = "The server is busy; proving work to connect (effort {effort})\N{HORIZONTAL ELLIPSIS}"


def proving_work(hello: ServerHello) -> str | None:
    """What to tell the person before ``accept_server_key()`` solves the
    server's puzzle: None at the lowest effort, or for no puzzle."""
    if hello.work <= MIN_EFFORT:
        return None
    return PROVING_WORK.format(effort=hello.work)


def quote_bytes(data: bytes, length: int = 60) -> str:
    """The start of what a program sent, quoted and printable: ``"HTTP/1.1 400 Bad Request\\r\\n"``."""
    shown = repr(data[:length])[2:-1].replace('"', '\\"')
    return f'"{shown}..."' if len(data) > length else f'"{shown}"'


#: How much of a refusal's reason is shown: it is not authenticated.
MAX_REFUSAL_SHOWN = 80


def refusal_text(reason: str) -> str:
    """What the person is told when the server turns the connection away.

    The refusal comes before any key, so anyone on the path could have
    written it: the client says what happened in its own words, and shows
    at most the start of the reason, labelled as the server's and
    unverified, so that a forged one cannot pass for advice from the client.
    """
    words = " ".join(printable_text(reason).split())
    if len(words) > MAX_REFUSAL_SHOWN:
        words = words[: MAX_REFUSAL_SHOWN - 1] + "\N{HORIZONTAL ELLIPSIS}"
    text = (
        "The server turned the connection away before the handshake (it does so when it is full or busy,"
        " or when too many connections come from one address). Try again later."
    )
    return f"{text}\n(The server's words, unverified: {words})" if words else text


def trust_server(link: ServerLink, args: argparse.Namespace, terminal: Terminal) -> None:
    """The handshake, with the server's key checked against the pin or
    known hosts. A key seen for the first time is shown and, on a terminal
    (unless --accept-new), accepted by the person, as ssh does; it is
    recorded only once the handshake has proved the server holds it."""
    known = keystore.KnownHosts(args.known_hosts or keystore.data_dir() / "known_hosts")
    server = transport.format_address(args.host, args.port)

    def check(hello: ServerHello) -> keystore.KeyCheck:
        checked = keystore.check_server_key(known, server, hello.fingerprint, args.fingerprint)
        busy = proving_work(hello)  # solved once the key is checked, by accept_server_key()
        if busy is not None:
            terminal.show(busy)
        return checked

    checked = establish(link, check, server)
    ask = checked.first_contact and terminal.interactive and not args.accept_new
    if ask:
        confirm_new_key(terminal, checked)
    note = keystore.record_server_key(known, checked, confirmed=ask)
    if note:
        terminal.show(note)


FINGERPRINT_PATTERN = crypto.FINGERPRINT_PATTERN  # what a pasted answer must look like
CONFIRM_PROMPT = "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
CONFIRM_AGAIN = "Please type 'yes', 'no' or the fingerprint: "


def confirm_new_key(terminal: Terminal, checked: keystore.KeyCheck) -> None:
    """Ask the person to accept a key seen for the first time, as ssh does:
    ``yes``, ``no``, or the fingerprint pasted in (compared for them).

    Raises:
        ClientError: not accepted (``no``, another fingerprint, end of input).
    """
    terminal.show(f"The authenticity of {checked.server} can't be established: this is the first connection to it.")
    terminal.show(f"Its key fingerprint is {checked.offered}.")
    terminal.show("Check it with the server's operator (the server prints it when it starts).")
    prompt = CONFIRM_PROMPT
    while True:
        try:
            answer = terminal.read_line(prompt, remember=False).strip().rstrip(".")  # no chat line to recall
        except EOFError:
            answer = "no"
        if answer.lower() == "yes":
            return
        if answer.lower() == "no":
            raise ClientError("Not connected: the server's key was not accepted. Nothing was recorded.")
        if FINGERPRINT_PATTERN.fullmatch(answer):
            if crypto.fingerprints_equal(answer, checked.offered):
                return
            raise ClientError(
                f"Not connected: the fingerprint you gave ({answer}) is not the server's ({checked.offered}).\n"
                "Someone may be intercepting this connection. Nothing was recorded."
            )
        prompt = CONFIRM_AGAIN


def end_reason(event: protocol.Event | None) -> str:
    """What the person is told when ``event`` ends the session: the reason
    the server gave with its Goodbye, or CONNECTION_LOST (any other end, or
    none given)."""
    if isinstance(event, Goodbye) and event.reason:
        return printable_text(event.reason)
    return CONNECTION_LOST


def raise_if_ended(event: protocol.Event) -> None:
    """Before the chat (the username, the reconnection, the first events):
    end the client if ``event`` ends the session.

    Raises:
        ClientError: ``event`` is the server's Goodbye or the connection
            closed; its message is ``end_reason(event)``.
    """
    if isinstance(event, (Goodbye, ConnectionClosed)):
        raise ClientError(end_reason(event))
