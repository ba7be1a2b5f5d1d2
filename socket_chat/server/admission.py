"""Who may connect, decided before any cryptography is spent on them.

Following sshd:

- ``PerSourceMaxStartups``: at most ``max_per_source`` connections at once
  from one source (an IPv4 address, or an IPv6 /64, what one host or one
  customer usually holds);
- a token bucket of new connections per source (``rate`` a second after a
  ``burst``), so that one address cannot make the server do an RSA
  decryption as often as it likes; ``PerSourcePenalties``: a handshake that
  fails or times out costs the source ``penalty`` tokens more;
- ``MaxStartups start:rate:full``: connections still in their handshake are
  few. From ``start`` of them on, a new one is dropped with probability
  ``rate`` percent, rising linearly to 100 % at ``full``. With a proof of
  work (``work``, an ``effort.EffortController``), a connection from
  ``start`` on is asked for one instead (its ``Ticket.work``), and only
  those from ``full`` on are dropped: the work prices what the random drop
  only rationed;
- places: ``max_established`` counts connections that finished the
  handshake. A connection in its handshake never holds a place, so idle
  sockets cannot lock people out: they fill the startups, not the chat.

Pure: decisions from addresses, a clock and a random source (both injected,
so tests need no waiting and no luck). No sockets; the server calls it from
its accept loop and its reader threads, so it holds one lock.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from socket_chat.chat.limits import DEFAULT_STARTUPS, Startups
from socket_chat.server.effort import EffortController

__all__ = ["Admission", "Ticket", "Refused", "Why", "source_of"]

#: Sources whose connection rate is remembered. Beyond that the least
#: recently seen is forgotten, which gives it a full bucket: no worse than
#: the fresh bucket any new address gets, so an attacker with more addresses
#: than this gains nothing by filling the table, and cannot exhaust memory.
TABLE_SIZE = 4096
IPV6_PREFIX = 64  # an IPv6 source is its /64, as sshd's default ipv6 mask


def source_of(host: str) -> str:
    """Whose connection this is, for the per-source limits: the IPv4
    address, or the IPv6 /64 (an IPv4-mapped IPv6 address is its IPv4 one).
    A host that is not an IP address (a Unix socket's) is itself."""
    if ":" not in host and "%" not in host:
        # An IPv4 address (as accept() writes it, and ipaddress would write
        # it again) or not an address at all: itself either way, without
        # parsing it for every connection.
        return host
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class Why(enum.Enum):
    """Why a connection is turned away."""

    FULL = "full"  #: every place is taken by people who finished the handshake
    SOURCE_CONNECTIONS = "source connections"  #: its source has max_per_source open
    SOURCE_RATE = "source rate"  #: its source opens connections too fast
    STARTUPS = "startups"  #: too many handshakes in progress (random early drop)


@dataclass(frozen=True)
class Refused:
    """A connection turned away: ``why``, and for ``SOURCE_RATE`` the
    seconds until its source may try again."""

    why: Why
    source: str
    retry_after: float = 0.0


@dataclass(eq=False)
class Ticket:
    """A connection let in: its source, the effort of the proof of work it
    must give before its handshake (0: none), and whether it finished the
    handshake (then it holds a place). Given back with ``Admission.release``."""

    source: str
    work: int = 0
    established: bool = False
    released: bool = False


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens, self.updated = tokens, updated


class Admission:
    """The admission policy of one server (see the module's docstring).

    Args:
        max_established: places for people who finished the handshake.
        max_per_source: connections at once from one source (0: no cap).
        rate: new connections a second from one source, sustained (0: no
            limit); ``burst`` at once.
        penalty: tokens a failed or timed-out handshake costs its source.
        startups: the cap on connections in their handshake.
        clock, chance: the monotonic clock and a uniform random number in
            [0, 1), for tests to pin.
        work: the effort controller of the proof of work asked from
            ``startups.start`` on; None: none asked (random early drop).
    """

    def __init__(
        self,
        max_established: int,
        max_per_source: int = 10,
        rate: float = 1.0,
        burst: int = 10,
        penalty: float = 2.0,
        startups: Startups = DEFAULT_STARTUPS,
        clock: Callable[[], float] = time.monotonic,
        chance: Callable[[], float] = random.random,
        work: EffortController | None = None,
    ) -> None:
        self.max_established, self.max_per_source = max_established, max_per_source
        self.rate, self.burst, self.penalty = rate, burst, penalty
        self.startups = startups
        self._clock, self._chance = clock, chance
        self.work = work if startups.full else None  # no cap on startups: never busy
        self._lock = threading.Lock()
        self._open: collections.Counter[str] = collections.Counter()  # source -> connections open
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self.in_handshake = 0
        self.established = 0

    def admit(self, host: str) -> Ticket | Refused:
        """Let a new connection from ``host`` in (a ``Ticket``), or not."""
        source = source_of(host)
        with self._lock:
            if self.established >= self.max_established:
                return Refused(Why.FULL, source)
            if self.max_per_source and self._open[source] >= self.max_per_source:
                return Refused(Why.SOURCE_CONNECTIONS, source)
            drop = self.startups.drop_chance(self.in_handshake)
            work = 0 if self.work is None else self.work.effort(self.in_handshake >= self.startups.start)
            if work and drop < 1.0:
                drop = 0.0  # it pays instead; from ``full`` on, none is let in
            if drop and self._chance() < drop:
                return Refused(Why.STARTUPS, source)
            wait = self._take(source, 1.0)
            if wait:
                return Refused(Why.SOURCE_RATE, source, wait)
            self._open[source] += 1
            self.in_handshake += 1
            return Ticket(source, work)

    def establish(self, ticket: Ticket) -> bool:
        """The connection finished its handshake: it takes a place. False if
        every place was taken meanwhile (it must then be closed)."""
        with self._lock:
            if ticket.established or ticket.released:
                return ticket.established
            if self.established >= self.max_established:
                return False
            self.in_handshake -= 1
            self.established += 1
            ticket.established = True
            return True

    def penalize(self, ticket: Ticket) -> None:
        """The handshake failed or timed out: its source pays for it."""
        with self._lock:
            self._take(ticket.source, self.penalty, force=True)

    def release(self, ticket: Ticket) -> None:
        """The connection ended (once; later calls do nothing)."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            if ticket.established:
                self.established -= 1
            else:
                self.in_handshake -= 1
            self._open[ticket.source] -= 1
            if not self._open[ticket.source]:
                del self._open[ticket.source]

    def open_from(self, host: str) -> int:
        """Connections open now from ``host``'s source."""
        with self._lock:
            return self._open.get(source_of(host), 0)

    @property
    def sources_remembered(self) -> int:
        """Sources whose connection rate is remembered now: TABLE_SIZE at most."""
        with self._lock:
            return len(self._buckets)

    def _take(self, source: str, cost: float, force: bool = False) -> float:
        """Spend ``cost`` tokens of ``source``'s bucket: 0.0 if it had them,
        else the seconds until it will (and nothing is spent, unless
        ``force``: a penalty is spent anyway, down to one burst in debt)."""
        if not self.rate:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(source, None) or _Bucket(float(self.burst), now)
        self._buckets[source] = bucket  # now the most recently seen
        if len(self._buckets) > TABLE_SIZE:
            self._buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        if force:
            bucket.tokens = max(-self.burst, bucket.tokens - cost)
        return (cost - bucket.tokens) / self.rate


class RefusalLog:
    """When to log refusals: the first of each kind from a source, then at
    most one line per ``interval`` seconds counting those not logged, so
    that a flood of refused connections is not also a flood of log lines.

    ``note(refused)`` returns how many refusals the line should report
    (this one and the ones held back), or 0 for no line now.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._held: collections.OrderedDict[tuple[Why, str], tuple[float, int]] = collections.OrderedDict()

    def note(self, refused: Refused) -> int:
        key, now = (refused.why, refused.source), self._clock()
        with self._lock:
            logged_at, held = self._held.pop(key, (float("-inf"), 0))
            if now - logged_at >= self._interval:
                self._held[key] = (now, 0)
                count = held + 1
            else:
                self._held[key] = (logged_at, held + 1)
                count = 0
            if len(self._held) > TABLE_SIZE:
                self._held.popitem(last=False)
            return count
