"""The server's output: one thread seals and writes for every client.

Readers (a thread per connection) put messages into members' bounded
outboxes, in the room's one order. The ``Sender`` thread takes what an
outbox holds, seals it as one record (a Batch, when several wait) and
writes it with a non-blocking ``send``. What a socket does not take waits
in that client's ``Outlet``, and its outbox is not touched again until a
selector says the socket has room; meanwhile the outbox fills, and a client
that does not read is cut off when it would pass its limit (limits.Outbox).
So one slow client never holds up the others, and the server keeps no
thread per client for output: the way IRC servers do it.

Why one thread and not the readers themselves: a message to N members is
one wake-up of the sender, after which it seals and sends N times without a
context switch or a lock held; the hand-off costs once per message, not once
per delivery. Sealing in the reader instead would need a lock per client's
sending half, and gain nothing from threads: a chat line's seal keeps the
GIL throughout (crypto.aes_gcm calls its C functions without letting it
go), so readers sealing at once would only take turns, a thread switch
between each two.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import sys
import threading

from socket_chat.chat.limits import Outbox
from socket_chat.protocol import Encoded, Message, ProtocolError, RecordLimitError, ServerConnection

#: Whether ``Sender.wake`` may look at ``_asleep`` without the lock: only
#: where the GIL orders one thread's write before another's read (a
#: free-threaded Python gives no such order, so there it takes the lock).
LOCK_FREE_WAKE = getattr(sys, "_is_gil_enabled", lambda: True)()

__all__ = ["Outlet", "Sender"]

#: What an outlet holds once all is sent: not an empty slice of the last
#: batch, which would keep the whole batch's bytes alive while it idles.
_NOTHING: bytes | memoryview = b""


class Outlet:
    """One client's way out: its socket, the sending half of its connection,
    its outbox, and the sealed bytes the socket has not yet taken.

    After ``Sender.add``, only the sender thread uses ``conn``'s sending half
    and the socket's sending side. ``cut()`` may come from any thread.
    ``finished`` is set once the sender has let go of the socket for good:
    only then may the socket be closed. ``failure`` is the error that ended
    the sending, if one did. ``used_up`` is sent, in the last record the
    keys may seal, if the connection reaches that limit.
    """

    def __init__(self, sock: socket.socket, conn: ServerConnection, outbox: Outbox, used_up: Message) -> None:
        self.sock = sock
        self.conn = conn
        self.outbox = outbox
        self.used_up = used_up
        self.finished = threading.Event()
        self.failure: Exception | None = None
        self._cut = False
        self._unsent: bytes | memoryview = _NOTHING
        self._watched = False  # registered with the sender's selector, waiting for room

    def cut(self) -> None:
        """Send nothing more, not even what is queued or half written."""
        self._cut = True


class Sender:
    """The thread that writes to every client (see the module docstring).

    Methods for the caller (any thread):
        start(); add(outlet), once the connection's handshake is done;
        wake(outlet), when its outbox has something or it was cut;
        stop(), at the end, once the readers are done.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        # Appended to by any thread and emptied by the sender, with no lock:
        # a deque's append and popleft are each atomic. See ``wake``.
        self._ready: collections.deque[Outlet] = collections.deque()
        self._lock = threading.Lock()  # _asleep, _woken, _stopping: their changes
        self._asleep = False
        self._woken = False
        self._stopping = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, outlet: Outlet, wake: bool = True) -> None:
        """Take over the sending for ``outlet``; its socket becomes non-blocking.
        ``wake=False``: its outbox is known to be empty and to call
        ``on_ready`` at its next put, so there is nothing to look at yet."""
        outlet.sock.setblocking(False)
        if wake:
            self.wake(outlet)

    def wake(self, outlet: Outlet) -> None:
        """Have the sender look at ``outlet`` soon. Never blocks for long: an
        append, and at most one byte written per sleep.

        This runs once per delivery (a reader queueing a message for each
        member), so it takes no lock unless the sender sleeps. It appends,
        then reads ``_asleep``; the sender sets ``_asleep``, then looks at
        ``_ready`` again before it sleeps (``_take_ready``). Under the GIL
        one of the two sees the other's write: either the sender finds the
        outlet, or this call sees it asleep and wakes it. ``_stopping`` is
        read after the append for the same reason: ``stop`` sets it, then
        releases whatever ``_ready`` holds once the thread has ended.
        """
        self._ready.append(outlet)
        if self._stopping:
            outlet.finished.set()  # no one will send: let the reader close
            return
        if LOCK_FREE_WAKE and (not self._asleep or self._woken):
            return
        with self._lock:
            if not self._asleep or self._woken:
                return
            self._woken = True
        with contextlib.suppress(OSError):  # full: it is awake anyway
            self._wake_writer.send(b"\0")

    def stop(self) -> None:
        """Stop the thread and release every client it still held."""
        with self._lock:
            self._stopping = True
            self._woken = True
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        if self._thread.is_alive():
            self._thread.join()
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                key.data.finished.set()
        for outlet in self._drain_ready():  # a wake from now on sees _stopping itself
            outlet.finished.set()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # The sender thread.

    def _run(self) -> None:
        while True:
            for outlet in self._take_ready():
                self._serve(outlet)
            if self._stopping:
                return
            events = self._selector.select(None if self._asleep else 0)
            self._after_sleep()
            for key, _ in events:
                if key.data is None:
                    self._drain_wakes()
                else:
                    self._serve(key.data)

    def _take_ready(self) -> list[Outlet]:
        """The outlets woken since the last call; if none, the sender may
        sleep in the selector (and ``wake`` must then write a byte)."""
        ready = self._drain_ready()
        if ready:
            return ready
        with self._lock:
            self._asleep = True
        ready = self._drain_ready()  # after _asleep is set: see wake
        if ready:
            with self._lock:  # awake after all; a byte a waker wrote meanwhile is read after select
                self._asleep = False
        return ready

    def _drain_ready(self) -> list[Outlet]:
        ready, popleft = [], self._ready.popleft
        with contextlib.suppress(IndexError):
            while True:
                ready.append(popleft())
        return ready

    def _after_sleep(self) -> None:
        with self._lock:
            self._asleep = False
            self._woken = False

    def _drain_wakes(self) -> None:
        """Read every wake byte there is, whatever ``_woken`` says: a waker
        writes after releasing the lock, so its byte may come after the
        sender woke for another reason; left unread, it would make every
        select return at once (a core spinning until the next wake)."""
        with contextlib.suppress(OSError):  # BlockingIOError: all read
            while self._wake_reader.recv(4096):
                pass

    def _serve(self, outlet: Outlet) -> None:
        """Write what the socket takes of ``outlet``'s sealed bytes, then seal
        and write what its outbox holds, until the outbox is empty or the
        socket is full."""
        if outlet.finished.is_set():
            return
        took = False
        try:
            while not outlet._cut:
                if outlet._unsent:
                    sent = outlet.sock.send(outlet._unsent)
                    if sent < len(outlet._unsent):
                        outlet._unsent = memoryview(outlet._unsent)[sent:]  # no copy of the rest
                        self._watch(outlet)  # full: come back when there is room
                        return
                    outlet._unsent = _NOTHING
                if took and not outlet.outbox.closed:  # a put since the take woke the sender again
                    self._unwatch(outlet)
                    return
                items, took = outlet.outbox.take(), True
                if items is None:
                    break  # closed and all sent
                if not items:
                    self._unwatch(outlet)
                    return
                self._seal(outlet.conn, items)
                outlet._unsent = outlet.conn.data_to_send()
        except BlockingIOError:
            self._watch(outlet)
            return
        except RecordLimitError as exc:  # nothing of the batch was sealed
            outlet.failure = exc
            self._say_used_up(outlet)
        except (OSError, ProtocolError) as exc:
            outlet.failure = exc
        self._finish(outlet)

    def _say_used_up(self, outlet: Outlet) -> None:
        """The keys have one record left: it says why the connection ends
        (the client may reconnect, with new keys). Written if the socket has
        room for it, as anything else is now."""
        try:
            outlet.conn.send(outlet.used_up)
            outlet.sock.send(outlet.conn.data_to_send())
        except (OSError, ProtocolError):
            pass  # gone already, or full: nothing more to tell

    def _seal(self, conn: ServerConnection, items: list[Encoded]) -> None:
        """Everything queued as one record (a Batch): the cipher's setup is
        paid once per record, not once per message."""
        conn.send_batch(items)

    def _watch(self, outlet: Outlet) -> None:
        if not outlet._watched:
            self._selector.register(outlet.sock, selectors.EVENT_WRITE, outlet)
            outlet._watched = True

    def _unwatch(self, outlet: Outlet) -> None:
        if outlet._watched:
            self._selector.unregister(outlet.sock)
            outlet._watched = False

    def _finish(self, outlet: Outlet) -> None:
        """Let go of ``outlet`` for good, and wake its reader: a shut-down
        socket reads as the end."""
        self._unwatch(outlet)
        outlet._unsent = _NOTHING
        with contextlib.suppress(OSError):  # already shut, or gone
            outlet.sock.shutdown(socket.SHUT_RDWR)
        outlet.finished.set()
