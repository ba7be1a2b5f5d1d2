"""The cost floor: a plaintext chat of the same shape as the real one.

Same framing (u32 length + body), the same message encoding, the same
``server.Room`` and one reader and one writer thread per client; no
handshake and no encryption. The writer takes what is queued and sends it
with one ``sendall``, as the real server's writer does, so the ratio of
the two measures the cryptography, not a difference in syscalls.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import socket
import struct
import threading

import protocol
from protocol import ChatLine, ChatMessage, Message, Username, UsernameRequest
from server import Room

_HEADER = struct.Struct("!I")
RECV_SIZE = 65536


def frame(message: Message) -> bytes:
    payload = protocol.encode_message(message)
    return _HEADER.pack(len(payload)) + payload


class PlainConnection:
    """Sans-I/O like ``protocol.ClientConnection``, in plaintext.

    The load generator drives it the same way; it starts with a
    ``UsernameRequest`` event, as if the server had asked.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._outbox = bytearray()
        self._events = collections.deque([UsernameRequest("")])
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self):
        if self._events:
            return self._events.popleft()
        if len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + length
            if len(self._buffer) >= end:
                payload = bytes(self._buffer[_HEADER.size : end])
                del self._buffer[:end]
                return protocol.decode_message(payload)
        return protocol.ConnectionClosed(clean=False) if self._eof else protocol.NEED_DATA

    def send(self, message: Message) -> None:
        self._outbox += frame(message)

    def data_to_send(self) -> bytes:
        data = bytes(self._outbox)
        self._outbox.clear()
        return data


class _PlainHandler:
    """One client of the plaintext server: a reader and a writer thread."""

    def __init__(self, room: Room, sock: socket.socket) -> None:
        self.room, self.sock = room, sock
        self.name: str | None = None
        self.outbox: queue.Queue = queue.Queue()
        self._conn = PlainConnection()
        self._conn.next_event()  # drop the client-side UsernameRequest

    def deliver(self, message: Message) -> None:
        self.outbox.put_nowait(message)

    def handle(self) -> None:
        writer = threading.Thread(target=self._write_loop, daemon=True)
        writer.start()
        try:
            self._read_loop()
        except OSError:
            pass
        finally:
            self.room.leave(self)
            self.outbox.put_nowait(None)
            writer.join(2)
            self.sock.close()

    def _read_loop(self) -> None:
        while True:
            event = self._conn.next_event()
            if event is protocol.NEED_DATA:
                self._conn.receive_data(self.sock.recv(RECV_SIZE))
            elif isinstance(event, Username):
                self.room.join(self, event.name)
            elif isinstance(event, ChatLine) and self.name is not None:  # as the server, not before a name
                self.room.broadcast(ChatMessage(self.name, event.text), sender=self)
            elif isinstance(event, protocol.ConnectionClosed):
                return

    def _write_loop(self) -> None:
        try:
            while (message := self.outbox.get()) is not None:
                frames = [frame(message)]
                while True:  # everything queued goes out in one sendall
                    try:
                        message = self.outbox.get_nowait()
                    except queue.Empty:
                        break
                    if message is None:
                        self.sock.sendall(b"".join(frames))
                        return
                    frames.append(frame(message))
                self.sock.sendall(b"".join(frames))
        except OSError:
            pass


class PlainServer:
    """Accepts clients on ``address`` and runs a ``_PlainHandler`` for each."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.room = Room()
        self._listener = socket.create_server((host, port), backlog=1024)
        self.server_address = self._listener.getsockname()[:2]

    def serve_forever(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handler = _PlainHandler(self.room, sock)
            threading.Thread(target=handler.handle, daemon=True).start()

    def server_close(self) -> None:
        with contextlib.suppress(OSError):  # not connected: nothing to shut down
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in serve_forever; close alone does not
        self._listener.close()
