"""Who is banned from the server (``/ban``): a key, or an address (or a
network) for the guests who come from it, for ever or for a time.

``Bans`` is the table, in memory, pure: it answers at once, with time from
an injected clock (Unix time), so a timed ban lapses by itself when the
clock passes its end, and tests move the clock instead of waiting. What
changes is handed to a ``BanStore`` (the server's SQLite file,
``socket_chat.server.store``), which writes it later, off the delivery
path; the table is read from it once, at start.

Rules (what a well-run IRC network's K-lines do, with keys for hosts):
- A ban by key holds against that key wherever it connects from, and
  against the devices the key let use its names (a device's owner banned:
  the device is too; a device banned alone: that key alone).
- A ban by address holds against the guests (no key proved) from that
  address or network. A person with a key is judged by their key: an
  address is shared (a NAT, a campus), and a key is who they are.
- A ban with a duration lapses at its end; one without holds until
  ``/unban``.
- Banning what is banned already replaces the ban (its reason, its end).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from socket_chat import crypto

__all__ = [
    "BANNED",
    "Ban",
    "BanStore",
    "BanTargetError",
    "Bans",
    "DURATION_PATTERN",
    "MAX_BAN_SECONDS",
    "banned_text",
    "parse_duration",
    "parse_target",
]

#: The Goodbye to a banned key, or a guest from a banned address.
BANNED = "You are banned from this server: {reason}"
#: A ban's duration as typed: a number and a unit (``10m``, ``2h``, ``7d``).
DURATION_PATTERN = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_BAN_SECONDS = 3650 * 86_400  # ten years: longer is "for ever", said so


def banned_text(reason: str) -> str:
    """What a banned person is told, and nothing more."""
    return BANNED.format(reason=reason) if reason else "You are banned from this server."


def parse_duration(word: str) -> int | None:
    """The seconds of a duration (``10m``, ``2h``, ``7d``, also ``30s`` and
    ``1w``), at most ``MAX_BAN_SECONDS``, or None if ``word`` is not one."""
    match = DURATION_PATTERN.fullmatch(word)
    if match is None:
        return None
    # Capped here, so the reply and UserBanned (a u32) say the ban's real length.
    return min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], MAX_BAN_SECONDS)


class BanTargetError(ValueError):
    """Neither a fingerprint nor an address; ``str`` says so."""


def parse_target(text: str) -> str | None:
    """A ban's target in its stored form: a fingerprint as it is, an address
    or network as ``ipaddress`` writes it (``203.0.113.7``,
    ``203.0.113.0/24``, ``2001:db8::/32``); None if ``text`` is neither (a
    name, then)."""
    if crypto.FINGERPRINT_PATTERN.fullmatch(text):
        return text
    network = _network(text)
    if network is None:
        return None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network ``text`` writes, an IPv4-mapped one (``::ffff:a.b.c.d``,
    what a ``--host ::`` socket says of an IPv4 peer) as its IPv4 network,
    so it matches the peer's IPv4 address; None if not one."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # in ::ffff:0:0/96
        return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's address, an IPv4-mapped IPv6 one as its IPv4 address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Ban:
    """One ban: its ``target`` (a fingerprint, or an address or network, as
    ``parse_target`` writes it), its reason (maybe empty), who set it (for
    ``/bans`` and the log), when (Unix time, whole seconds), when it
    lapses (0: never), and the name it was given by (empty: none), for
    ``/bans`` and ``/unban NAME``."""

    target: str
    reason: str
    by: str
    set_at: int
    until: int = 0
    name: str = ""

    @property
    def by_key(self) -> bool:
        """A ban of a key (else of an address or network)."""
        return self.target.startswith("SHA256:")

    def covers(self, fingerprint: str | None, address: str, owner: str | None = None) -> bool:
        """Whether this ban holds against a connection: its key or the
        key's ``owner`` (a device's, ``Registrations.owner_of``), or, for a
        guest (``fingerprint`` None), its address."""
        if self.by_key:
            return fingerprint is not None and self.target in (fingerprint, owner)
        if fingerprint is not None:
            return False
        peer = _address(address)
        if peer is None:
            return False
        network = _network(self.target)  # a mapped one stored before: as IPv4
        return network is not None and peer.version == network.version and peer in network


class BanStore(Protocol):
    """What the bans need of a store (the server's file)."""

    def bans(self) -> list[Ban]:
        """The bans stored before this server started (read when the store
        was opened: no I/O here)."""
        ...

    def save_ban(self, ban: Ban) -> None:
        """Store ``ban`` (replacing one of its target) later: O(1)."""
        ...

    def drop_ban(self, target: str) -> None:
        """Forget the ban of ``target`` later: O(1)."""
        ...


class Bans:
    """The bans in force, by target; safe to call from any thread. The
    store is called under the table's lock, so an add and a remove that
    cross reach it in the order they took effect here.

    Args:
        store: where changes go (None: in memory only, lost at exit).
        clock: Unix time (tests pin it and move it).
    """

    #: Whether other servers set these bans too (a cluster's): the server
    #: then reads them again now and then, for its own connections.
    shared = False

    def __init__(self, store: BanStore | None = None, clock: Callable[[], float] = time.time) -> None:
        self._store, self._clock = store, clock
        self._lock = threading.Lock()
        self._bans: dict[str, Ban] = {ban.target: ban for ban in (store.bans() if store else [])}

    def add(self, target: str, reason: str, by: str, seconds: int | None = None, name: str = "") -> Ban:
        """Ban ``target`` (as ``parse_target`` writes it) for ``seconds``
        (None: for ever), given by ``name`` if by a name; the ban, which
        replaces any of that target."""
        now = int(self._clock())
        until = 0 if seconds is None else now + min(seconds, MAX_BAN_SECONDS)
        ban = Ban(target, reason, by, now, until, name)
        with self._lock:  # the store under the lock: its writes in the table's order
            self._bans[target] = ban
            if self._store is not None:
                self._store.save_ban(ban)
        return ban

    def remove(self, target: str) -> Ban | None:
        """Lift the ban of ``target``; the ban it was, or None if there was
        none in force."""
        self.current()  # the shared bans as they are now: one set on another server is lifted too
        with self._lock:
            ban = self._bans.pop(target, None)
            if ban is not None and self._store is not None:
                self._store.drop_ban(target)
        return None if ban is None or self._lapsed(ban) else ban

    def find(self, fingerprint: str | None, address: str, owner: str | None = None) -> Ban | None:
        """The ban that holds against a connection (its key or the key's
        ``owner``, or for a guest its address), if any; a key's ban first."""
        current = self.current()
        return next((b for b in current if b.by_key and b.covers(fingerprint, address, owner)), None) or next(
            (b for b in current if b.covers(fingerprint, address, owner)), None
        )

    def current(self) -> list[Ban]:
        """The bans in force, oldest first (the lapsed are dropped here)."""
        shared = self._read_shared()
        with self._lock:
            if shared is not None:
                self._bans = {ban.target: ban for ban in shared}
            lapsed = [ban for ban in self._bans.values() if self._lapsed(ban)]
            for ban in lapsed:
                del self._bans[ban.target]
                if self._store is not None:
                    self._store.drop_ban(ban.target)
            return sorted(self._bans.values(), key=lambda b: (b.set_at, b.target))

    def _read_shared(self) -> list[Ban] | None:
        """The bans as they are now where they are shared (a cluster's
        Redis: ``server.cluster.ClusterBans``), read at every check; None:
        this table is the whole truth (or the shared copy cannot be read
        now, and the last one read stands)."""
        return None

    def remaining(self, ban: Ban) -> int | None:
        """Seconds until ``ban`` lapses (None: never)."""
        return None if not ban.until else max(0, ban.until - int(self._clock()))

    def _lapsed(self, ban: Ban) -> bool:
        return bool(ban.until) and self._clock() >= ban.until
