"""The chat server: sockets, threads and the room. The protocol is in protocol.py.

Run ``python server.py --help`` for the options. Each connection gets a
reader thread (handshake, username, then the messages it sends) and, once the
handshake is done, a writer thread that seals and sends what the room puts in
its bounded outbox. The room itself knows nothing of sockets.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import select
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import crypto_utils
import protocol
from protocol import (
    ChatLine,
    ChatMessage,
    ConnectionClosed,
    ErrorNotice,
    Goodbye,
    HandshakeComplete,
    MalformedMessage,
    Message,
    ProtocolError,
    ServerConnection,
    UserJoined,
    UserLeft,
    Username,
    UsernameRequest,
    Welcome,
)

DEFAULT_PORT = 8756
HANDSHAKE_TIMEOUT = 10.0  # seconds from connecting to the end of the handshake
USERNAME_TIMEOUT = 120.0  # seconds to choose a name: a person is typing it
MAX_MESSAGE_BYTES = 4096  # of UTF-8 in one chat line; longer ones are refused
OUTBOX_SIZE = 1024  # messages queued for one slow reader before it is cut off
SHUTDOWN_GRACE = 2.0  # seconds to let goodbyes go out on shutdown
RECV_SIZE = 65536

ASK_USERNAME = "Please enter a username."
USERNAME_TAKEN = "That username is taken. Please enter another username."
USERNAME_INVALID = (
    f"Please enter a valid username. A username is 1 to {protocol.MAX_USERNAME_LENGTH}"
    " printable characters."
)
SHUTTING_DOWN = "Server is shutting down."

log = logging.getLogger("chat.server")

# One writer seals at a time. pycryptodomex lets go of the GIL around each of
# its C calls (a dozen or more per record), so with a writer per client sealing
# at once, each call hands the GIL to another writer, and the reader that feeds
# them all waits behind every one. Writers waiting here sleep instead, and
# batch up what arrives meanwhile (measured in docs/benchmarks.md).
_SEALING = threading.Lock()


# --- the identity key --------------------------------------------------------


def data_dir() -> Path:
    """Where the chat keeps its files: ``$XDG_DATA_HOME/socket-chat``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "socket-chat"


class KeyFileError(Exception):
    """The identity key file cannot be used; the message says why and what to do."""


def load_or_create_identity_key(path: Path):
    """The server's long-term RSA key: read from ``path``, or made and saved
    there (mode 0600) on first run.

    Raises:
        KeyFileError: cannot be read or written, not a key, or readable by others.
    """
    try:
        if path.exists():
            return _read_identity_key(path)
        log.info("Making a new %d-bit server key (first run; this takes a few seconds)", crypto_utils.RSA_KEY_BITS)
        key = crypto_utils.generate_rsa_keypair()
        _write_private_file(path, crypto_utils.export_private_key(key))
        log.info("Created a new server key at %s", path)
        return key
    except OSError as exc:
        raise KeyFileError(f"Cannot use the server key file {path}: {exc.strerror or exc}") from None


def _read_identity_key(path: Path):
    if not path.is_file():
        raise KeyFileError(f"The server key {path} is not a file.")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"Permissions {stat.S_IMODE(mode):04o} for {path} are too open: "
            f"the key must be readable by its owner only. Run: chmod 600 {path}"
        )
    try:
        return crypto_utils.import_private_key(path.read_bytes())
    except (ValueError, IndexError, TypeError) as exc:
        raise KeyFileError(f"Cannot read the server key {path}: {exc}") from None


def _write_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL with mode 0600: the file is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# --- the room ----------------------------------------------------------------


class Room:
    """Who is in the chat, under one lock, and the one order of its messages.

    Members are objects with a ``name`` attribute and a non-blocking
    ``deliver(message)``; the room calls ``deliver`` under its lock, so every
    member's outbox receives the messages in the same order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, object] = {}  # casefolded name -> member

    def join(self, member, name: str) -> bool:
        """Give ``member`` the name if nobody has it (case-insensitively);
        then it is welcomed and everyone else is told. False if taken."""
        with self._lock:
            if name.casefold() in self._members:
                return False
            member.name = name
            self._members[name.casefold()] = member
            member.deliver(Welcome(name))
            self._broadcast(UserJoined(name), sender=member)
            return True

    def leave(self, member) -> None:
        """Take ``member`` out (if it was in) and tell everyone else."""
        with self._lock:
            name = getattr(member, "name", None)
            if name is None or self._members.get(name.casefold()) is not member:
                return
            del self._members[name.casefold()]
            self._broadcast(UserLeft(name), sender=member)

    def broadcast(self, message: Message, sender=None) -> None:
        """Queue ``message`` for every member but ``sender``."""
        with self._lock:
            self._broadcast(message, sender)

    def names(self) -> list[str]:
        with self._lock:
            return sorted((m.name for m in self._members.values()), key=str.casefold)

    def _broadcast(self, message: Message, sender) -> None:
        for member in self._members.values():
            if member is not sender:
                member.deliver(message)


# --- one connection ----------------------------------------------------------


class _Stop:
    """Put in an outbox: the writer stops after what was queued before it."""


class ClientHandler:
    """One client: its socket, protocol state, outbox and threads.

    The reader thread runs ``handle()``; after the handshake it starts the
    writer thread, the only one that sends from then on.
    """

    def __init__(self, server: "ChatServer", sock: socket.socket, address) -> None:
        self.server = server
        self.sock = sock
        self.peer = _format_address(address)
        self.name: str | None = None
        self.outbox: queue.Queue = queue.Queue(maxsize=OUTBOX_SIZE)
        self.conn = ServerConnection(server.identity_key)
        self._writer: threading.Thread | None = None
        self._closing = threading.Event()

    # Called by the room, under its lock: must never block.
    def deliver(self, message: Message) -> None:
        if self._closing.is_set():
            return  # on its way out: the writer sends nothing more from the room
        try:
            self.outbox.put_nowait(message)
        except queue.Full:
            log.warning("%s: outbox full, disconnecting a client that does not read", self.peer)
            self.abort()

    def handle(self) -> None:
        """The reader thread: handshake, username, then chat, until the end."""
        try:
            self._handshake()
            self._start_writer()
            self._choose_username()
            self._chat()
        except _ClientLeft:
            pass
        except TimeoutError:
            log.info("%s: timed out", self.peer)
            self.close("Timed out waiting for a username.")
        except ProtocolError as exc:
            log.warning("%s: protocol error: %s", self.peer, exc)
        except OSError as exc:
            if not self._closing.is_set():
                log.info("%s: connection error: %s", self.peer, exc)
        finally:
            self._finish()

    def close(self, reason: str) -> None:
        """Say goodbye and close (from another thread, for example on shutdown)."""
        self._closing.set()
        if self._writer is None:
            self.abort()
            return
        try:
            self.outbox.put_nowait(Goodbye(reason))
        except queue.Full:
            self.abort()
        self._stop_writer()

    def _stop_writer(self) -> None:
        """The writer sends what is queued, then stops."""
        try:
            self.outbox.put_nowait(_Stop())
        except queue.Full:
            self.abort()

    def abort(self) -> None:
        """Cut the connection now; the reader thread wakes up and cleans up."""
        self._closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer or by us

    # The stages of a connection.

    def _handshake(self) -> None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.sock.sendall(self.conn.data_to_send())
        event = self._next_event(deadline, flush=True)
        if not isinstance(event, HandshakeComplete):
            raise protocol.RemoteProtocolError(f"handshake ended with {event}")
        log.info("%s: handshake complete", self.peer)

    def _choose_username(self) -> None:
        deadline = time.monotonic() + USERNAME_TIMEOUT
        self.deliver(UsernameRequest(ASK_USERNAME))
        while self.name is None:
            event = self._next_event(deadline)
            if isinstance(event, Username):
                self._try_username(event.name)
            elif not self._handle_common(event):
                self.deliver(ErrorNotice("Choose a username first."))

    def _try_username(self, requested: str) -> None:
        name = protocol.normalize_username(requested)
        if name is None:
            self.deliver(UsernameRequest(USERNAME_INVALID))
        elif not self.server.room.join(self, name):
            self.deliver(UsernameRequest(USERNAME_TAKEN))
        else:
            log.info("%s joined from %s", name, self.peer)

    def _chat(self) -> None:
        while True:
            event = self._next_event(deadline=None)
            if isinstance(event, ChatLine):
                self._relay(event.text)
            elif not self._handle_common(event):
                self.deliver(ErrorNotice(f"{type(event).__name__} is not expected now."))

    def _relay(self, text: str) -> None:
        if not text.strip():
            self.deliver(ErrorNotice("An empty message was not sent."))
            return
        size = len(text.encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            self.deliver(ErrorNotice(
                f"The message was not sent: it is {size} bytes long, and the limit is {MAX_MESSAGE_BYTES}."
            ))
            return
        log.info("%s: %s", self.name, protocol.printable_text(text))
        self.server.room.broadcast(ChatMessage(self.name, text), sender=self)

    def _handle_common(self, event) -> bool:
        """Events with the same meaning at every stage. True if handled."""
        if isinstance(event, (Goodbye, ConnectionClosed)):
            raise _ClientLeft()
        if isinstance(event, MalformedMessage):
            self.deliver(ErrorNotice(f"Message not understood: {event.reason}."))
            return True
        return False

    def _next_event(self, deadline: float | None, flush: bool = False):
        """The next event, reading the socket as needed (until ``deadline``)."""
        while True:
            event = self.conn.next_event()
            if flush:
                self.sock.sendall(self.conn.data_to_send())
            if event is not protocol.NEED_DATA:
                return event
            if deadline is not None:
                _wait_readable(self.sock, deadline - time.monotonic())
            self.conn.receive_data(self.sock.recv(RECV_SIZE))

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"writer {self.peer}", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        """The writer thread: seal and send the queued messages, in order.

        What queued up while it was sending goes out together, in one record
        (a Batch): the cipher setup is paid once per record, not once per
        message, and no message waits for others to arrive. Sealing is under
        ``_SEALING``; the send is not.
        """
        try:
            stop = False
            while not stop:
                messages, stop = self._take_queued()
                if messages:
                    with _SEALING:
                        self.conn.send_batch(messages)
                    self.sock.sendall(self.conn.data_to_send())
        except (OSError, ProtocolError) as exc:
            if not self._closing.is_set():
                log.info("%s: send failed: %s", self.peer, exc)
        finally:
            self.abort()

    def _take_queued(self) -> tuple[list[Message], bool]:
        """Wait for the next message, then take all queued behind it.
        Returns the messages and whether the stop mark came after them."""
        messages = []
        item = self.outbox.get()
        while not isinstance(item, _Stop):
            messages.append(item)
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                return messages, False
        return messages, True

    def _finish(self) -> None:
        self.server.room.leave(self)
        if self.name is not None:
            log.info("%s left", self.name)
        if self._writer is not None:
            if not self._closing.is_set():
                self._stop_writer()
            self._writer.join(SHUTDOWN_GRACE)
        self.abort()
        self.sock.close()
        self.server.forget(self)


class _ClientLeft(Exception):
    """The client said goodbye or closed the connection: a normal end."""


def _wait_readable(sock: socket.socket, timeout: float) -> None:
    # poll() rather than select(): it has no limit on descriptor numbers.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if timeout <= 0 or not poller.poll(timeout * 1000):
        raise TimeoutError


def _format_address(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the server --------------------------------------------------------------


class ChatServer:
    """Listens for clients and runs a ``ClientHandler`` thread for each.

    Methods for the caller:
        serve_forever(): accept connections until ``shutdown()``.
        shutdown(): from another thread; returns once the loop has stopped.
        server_close(): tell every client the server is shutting down, close
            the connections and wait for their threads. ``with`` calls it.
    """

    def __init__(self, identity_key, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> None:
        self.identity_key = identity_key
        self.fingerprint = crypto_utils.fingerprint(crypto_utils.export_public_key(identity_key))
        self.room = Room()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self._listener.getsockname()[:2]
        self._handlers: dict[ClientHandler, threading.Thread] = {}
        self._handlers_lock = threading.Lock()
        self._shutdown_request = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.server_close()

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            poller = select.poll()
            poller.register(self._listener, select.POLLIN)
            poller.register(self._wake_reader, select.POLLIN)
            while not self._shutdown_request.is_set():
                if any(fd == self._listener.fileno() for fd, _ in poller.poll()):
                    self._accept()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._shutdown_request.set()
        self._wake_writer.send(b"\0")
        if self._serving.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self._listener.close()
        with self._handlers_lock:
            handlers = dict(self._handlers)
        for handler in handlers:
            handler.close(SHUTTING_DOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for handler, thread in handlers.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                handler.abort()
                thread.join(SHUTDOWN_GRACE)
        self._wake_reader.close()
        self._wake_writer.close()

    def forget(self, handler: ClientHandler) -> None:
        """Called by a handler's reader thread as its last act."""
        with self._handlers_lock:
            self._handlers.pop(handler, None)

    def connection_count(self) -> int:
        with self._handlers_lock:
            return len(self._handlers)

    def _accept(self) -> None:
        try:
            sock, address = self._listener.accept()
        except OSError as exc:
            # Out of descriptors, most likely: say so, and retry after a pause
            # rather than spinning.
            log.error("accept failed: %s", exc)
            self._shutdown_request.wait(0.1)
            return
        # Every sendall is a whole message: don't let Nagle hold it back
        # waiting for an ACK (that costs a delayed-ACK wait, ~40 ms, per turn).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = ClientHandler(self, sock, address)
        thread = threading.Thread(target=handler.handle, name=f"reader {handler.peer}", daemon=True)
        with self._handlers_lock:
            self._handlers[handler] = thread
        log.info("%s: connected", handler.peer)
        thread.start()


# --- the command line --------------------------------------------------------


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Encrypted terminal group chat: the server.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all IPv4 interfaces)")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--key", type=Path, default=None,
        help="the server's RSA identity key, made on first use "
             "(default: $XDG_DATA_HOME/socket-chat/server_key.pem)",
    )
    return parser.parse_args(argv)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print("Server is commencing...", flush=True)
    key_path = args.key or data_dir() / "server_key.pem"
    try:
        key = load_or_create_identity_key(key_path)
        server = ChatServer(key, args.host, args.port)
    except KeyFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Cannot listen at {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"Listening at {_format_address(server.server_address)}")
    print(f"Server key fingerprint: {server.fingerprint}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the goodbyes short
            log.info("Shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
