"""What one connection may do, and the mechanisms that hold it to that:
the server's limits, flood control on both ends, and the bounded send
queue. Socket-free and clock-injected, so tests need no waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from socket_chat.protocol import Encoded, RateLimit

__all__ = [
    "Limits",
    "Startups",
    "DEFAULT_STARTUPS",
    "UNCAPPED",
    "startups_type",
    "TokenBucket",
    "Pacer",
    "Outbox",
    "QUEUED_OVERHEAD",
]

Clock = Callable[[], float]

#: What a queued message counts against the send queue beyond its bytes on
#: the wire: a fixed share for the objects that hold it.
QUEUED_OVERHEAD = 64


@dataclass(frozen=True)
class Startups:
    """sshd's ``MaxStartups start:rate:full``: random early drop of new
    connections while ``start`` or more are in their handshake; ``full``
    0 turns it off. (With a proof of work, ``Limits.max_work``, the server
    asks for work from ``start`` instead, and drops only from ``full``:
    see ``server.admission``.)

    sshd starts at 10; here 20, twice the default per-address cap, so that
    one address alone cannot make anyone else's connection be dropped.
    """

    start: int = 20
    rate: int = 30  # percent dropped at ``start``
    full: int = 100

    def drop_chance(self, in_handshake: int) -> float:
        """The probability that one more connection is dropped, with
        ``in_handshake`` connections already in their handshake."""
        if not self.full or in_handshake < self.start:
            return 0.0
        if in_handshake >= self.full:
            return 1.0
        span = self.full - self.start
        return (self.rate + (100 - self.rate) * (in_handshake - self.start) / span) / 100

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"


DEFAULT_STARTUPS = Startups()
UNCAPPED = Startups(0, 100, 0)  #: ``--max-startups 0``


def startups_type(text: str) -> Startups:
    """argparse type for ``--max-startups``: ``START:RATE:FULL`` as sshd's,
    ``N`` (a hard cap of N), or ``0`` (no cap).

    Raises:
        ValueError: anything else (argparse reports it as a usage error).
    """
    parts = text.split(":")
    if not all(part.isdigit() for part in parts) or len(parts) not in (1, 3):
        raise ValueError(f"{text!r} is not START:RATE:FULL or N")
    if len(parts) == 1:
        return Startups(int(parts[0]), 100, int(parts[0]))
    start, rate, full = map(int, parts)
    if not (start <= full and rate <= 100 and full):
        raise ValueError(f"{text!r}: START must be at most FULL, RATE a percentage, FULL above 0")
    return Startups(start, rate, full)


@dataclass(frozen=True)
class Limits:
    """What one connection may do and how long it may take; every field is a
    server option (see ``server.command_line.parse_args``), and these are the defaults."""

    max_clients: int = 1000  # people at once (connections past the handshake); one more is told the server is full
    max_message_bytes: int = 4096  # of UTF-8 in one chat line (a block: all its lines); longer ones are refused
    max_lines: int = 50  # lines in one chat message (a block, chat.blocks); more are refused
    rate: float = 5.0  # messages a second, sustained; 0 turns flood control off
    burst: int = 20  # messages at once, so that a pasted block goes through
    sendq_bytes: int = 256 * 1024  # queued for one client before it is cut off
    handshake_timeout: float = 5.0  # s from connecting to keys confirmed: a program's work (more if asked for a puzzle)
    username_timeout: float = 300.0  # seconds to choose a name: a person first checks the fingerprint
    frame_timeout: float = 10.0  # seconds for a frame, once begun (slowloris)
    # Before the handshake (server.admission, after sshd): per address (IPv6: per /64)
    max_per_address: int = 10  # connections at once from one address; 0: no cap
    handshake_rate: float = 1.0  # new connections a second from one address, after 10 at once; 0: no limit
    max_startups: Startups = DEFAULT_STARTUPS  # handshakes in progress, START:RATE:FULL (see max_work)
    max_work: int = 16  # from START of them on, a proof of work up to this effort instead of the drop; 0: none
    guests: bool = True  # people without a key proof may join (--guests); False: only those with a key

    def rate_limit_message(self) -> RateLimit:
        """The limit as the client is told it, so that it can pace itself."""
        if not self.rate:
            return RateLimit(burst=0, interval_ms=0)
        return RateLimit(burst=self.burst, interval_ms=max(1, round(1000 / self.rate)))


class TokenBucket:
    """The server's flood control: ``burst`` messages at once, then ``rate``
    a second."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self, cost: int = 1) -> float:
        """Spend ``cost`` tokens (a message's one, a block's one a line):
        0.0 if there were enough, otherwise the seconds until there will be
        (and nothing is spent).

        A block larger than the burst needs a full bucket, and leaves it
        owing the rest (below zero), which it pays back at the rate before
        anything more goes: over time a block gets no more through than its
        lines sent one by one would."""
        if not self._rate:
            return 0.0
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        needed = min(cost, max(1, self._burst))
        if self._tokens >= needed:
            self._tokens -= cost
            return 0.0
        return (needed - self._tokens) / self._rate


class Pacer:
    """The client's side of flood control: it keeps within the server's
    limit, so that a pasted block is sent a little slower instead of being
    refused line by line.

    It mirrors the server's token bucket with a wide margin: the server times
    a line when it gets to it, not when it left here, so on a busy machine two
    lines can reach its bucket closer together than they were sent. Half the
    burst is kept in reserve for that, and lines are spaced a quarter longer.
    """

    MARGIN = 1.25  # space lines a quarter longer than the server asks

    def __init__(self, limit: RateLimit, clock: Clock = time.monotonic) -> None:
        self._interval = limit.interval_ms / 1000 * self.MARGIN
        self._burst = max(1, limit.burst // 2)
        self._clock = clock
        self._tokens = float(self._burst)
        self._updated = clock()

    def delay(self, cost: int = 1) -> float:
        """Seconds to wait before sending the next line (``cost``: its
        tokens, a block's one a line, as the server's bucket charges them);
        the line is counted as sent at the end of that wait."""
        if not self._interval:
            return 0.0  # the server has no limit
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) / self._interval)
        self._updated = now
        needed = min(cost, self._burst)  # as the server's bucket: a big block waits for a full one
        wait = max(0.0, (needed - self._tokens) * self._interval)
        self._tokens -= cost
        return wait


class Outbox:
    """One client's messages waiting to be sent, bounded in bytes (IRC's
    SendQ): a client that does not read cannot make the server hold more.

    Any thread may ``put``, without blocking. The server's sender thread
    takes everything queued at once. ``on_ready`` says that there is
    something to take: it is called when the first item arrives after a
    ``take`` (or the outbox closes), not for the items that follow it, so
    that a burst to one client costs one wake-up. It is called outside the
    outbox's lock. A message counts its bytes on the wire plus
    ``QUEUED_OVERHEAD``.
    """

    def __init__(self, limit_bytes: int, on_ready: Callable[[], None] = lambda: None) -> None:
        self._limit = limit_bytes
        self._on_ready = on_ready
        self._items: list[Encoded] = []  # a list, not a deque: taken whole, and smaller while idle
        self._bytes = 0
        self._closed = False
        self._announced = False  # on_ready was called, and no take has found it empty since
        self._lock = threading.Lock()

    def put(self, item: Encoded) -> bool:
        """Queue ``item``; False if that would pass the limit, and then the
        outbox closes: the client will be cut off, and nothing more is
        queued for it. Once closed, items are dropped (True: the client is
        on its way out, and that is not an overflow)."""
        size = len(item.payload) + QUEUED_OVERHEAD
        with self._lock:
            if self._closed:
                return True
            if self._bytes + size > self._limit:
                self._closed = True
                return False
            self._items.append(item)
            self._bytes += size
            announce = not self._announced
            self._announced = True
        if announce:
            self._on_ready()
        return True

    def close(self, last: Encoded | None = None) -> None:
        """Queue nothing more, except ``last`` (a goodbye), which may pass the
        limit; the sender sends what is queued, then stops."""
        with self._lock:
            if last is not None and not self._closed:
                self._items.append(last)
            self._closed = True
            announce = not self._announced
            self._announced = True
        if announce:
            self._on_ready()

    def take(self) -> list[Encoded] | None:
        """Everything queued, oldest first, without waiting; the next
        ``put`` calls ``on_ready`` again. An empty list: nothing for now.
        None: the outbox is closed and empty, the sender's signal to stop."""
        with self._lock:
            self._announced = False
            if self._items:
                items, self._items = self._items, []
                self._bytes = 0
                return items
            return None if self._closed else []

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_bytes(self) -> int:
        with self._lock:
            return self._bytes
