"""The handshake thread: one thread that works out every connection's
handshake cryptography, one call at a time, for the readers.

Why a thread of its own (issue 22, part 3): an RSA-3072 unwrap in
pycryptodomex touches about 16 KiB more of the calling thread's stack than
an idle reader ever needs, and a thread's touched stack pages stay resident
as long as the thread lives. In each reader that was 16 KiB of RSS for every
client, for as long as it stayed connected (a third of what an idle client
cost); here it is paid once. It keeps ``ChatServer.handshaking``'s rule too:
one handshake's cryptography at a time, taken around each call.

A reader hands ``run`` a call (``conn.next_event`` while its handshake is
not done) and waits for it; the reader never waits for the network here, so
neither does this thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HandshakeThread"]

T = TypeVar("T")
STOP_TIMEOUT = 5.0  # seconds to wait for the thread to end


class _Call(Generic[T]):
    """One call handed over, and how it ended."""

    __slots__ = ("call", "done", "result", "error")

    def __init__(self, call: Callable[[], T]) -> None:
        self.call = call
        self.done = threading.Lock()  # released once it has run: cheaper than an Event
        self.done.acquire()
        self.result: T | None = None
        self.error: BaseException | None = None


class HandshakeThread:
    """Runs handed-over calls one at a time in one thread, under ``gate()``
    (the server's ``handshaking`` lock, looked up at each call).

    Methods for the caller: ``run`` (from any reader thread) and ``stop``.
    The thread starts with the object; after ``stop``, ``run`` does the
    call in the caller's thread, still under the gate.
    """

    def __init__(self, gate: Callable[[], contextlib.AbstractContextManager[object]]) -> None:
        self._gate = gate
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _stopped
        self._stopped = False
        # Started at once, as the sender is: the server's threads are all
        # there before its first client, and none appears with a handshake.
        self._thread = threading.Thread(target=self._serve, name="handshakes", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The thread's id in the system (for a benchmark to read its CPU time)."""
        return self._thread.native_id

    def run(self, call: Callable[[], T]) -> T:
        """``call()`` in the handshake thread; its result, or its exception raised here."""
        job = _Call(call)
        with self._lock:  # so that no call is handed over after stop's end mark
            here = self._stopped
            if not here:
                self._calls.put(job)
        if here:
            with self._gate():
                return call()
        job.done.acquire()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by _serve when there is no error

    def stop(self) -> None:
        """End the thread once what was handed over has run."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._calls.put(None)  # after every call handed over
        self._thread.join(STOP_TIMEOUT)

    def _serve(self) -> None:
        while (job := self._calls.get()) is not None:
            try:
                with self._gate():
                    job.result = job.call()
            except BaseException as exc:  # the caller's to handle: raised again in its thread
                job.error = exc
            finally:
                job.done.release()
