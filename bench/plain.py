"""The cost floor: a plaintext chat of the same shape as the real one.

Same framing (u32 length + body), the same message encoding, the same
``room.Room`` and one reader and one writer thread per client; no
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

from socket_chat import protocol
from socket_chat.chat.room import Membership, Room
from socket_chat.protocol import ChatLine, ChatMessage, Encoded, Message, Username, UsernameRequest

_HEADER = struct.Struct("!I")
RECV_SIZE = 65536


def frame(payload: bytes) -> bytes:
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
        self._outbox += frame(protocol.encode_message(message))

    def data_to_send(self) -> bytes:
        data = bytes(self._outbox)
        self._outbox.clear()
        return data


class _PlainHandler:
    """One client of the plaintext server: a reader and a writer thread."""

    def __init__(self, room: Room, sock: socket.socket) -> None:
        self.room, self.sock = room, sock
        self.membership: Membership | None = None
        self.outbox: queue.Queue[Encoded | None] = queue.Queue()
        self._conn = PlainConnection()
        self._conn.next_event()  # drop the client-side UsernameRequest

    def deliver(self, item: Encoded) -> bool:
        self.outbox.put_nowait(item)
        return True  # unbounded: the floor has no send queue to overflow

    def send_queue_overflowed(self) -> None:
        pass  # never called: deliver never fails

    def close(self, reason: str) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)

    def handle(self) -> None:
        writer = threading.Thread(target=self._write_loop, daemon=True)
        writer.start()
        try:
            self._read_loop()
        except OSError:
            pass
        finally:
            if self.membership is not None:
                self.room.leave(self.membership)
            self.outbox.put_nowait(None)
            writer.join(2)
            self.sock.close()

    def _read_loop(self) -> None:
        while True:
            event = self._conn.next_event()
            if event is protocol.NEED_DATA:
                self._conn.receive_data(self.sock.recv(RECV_SIZE))
            elif isinstance(event, Username):
                self.membership = self.room.join(self, event.name)
            elif isinstance(event, ChatLine) and self.membership is not None:
                self.room.publish(ChatMessage(self.membership.name, event.text), sender=self.membership)
            elif isinstance(event, protocol.ConnectionClosed):
                return

    def _write_loop(self) -> None:
        try:
            while (item := self.outbox.get()) is not None:
                frames = [frame(item.payload)]
                while True:  # everything queued goes out in one sendall
                    try:
                        item = self.outbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self.sock.sendall(b"".join(frames))
                        return
                    frames.append(frame(item.payload))
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
