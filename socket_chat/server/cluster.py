"""Several servers, one chat: the room's cluster on Redis.

Every server of a cluster connects to one Redis. There it shares

- the conversation: one stream, ``socket-chat:chat``. A server adds what its
  members say (XADD) and delivers to its members what it reads back (XREAD),
  its own lines too, in the stream's order: so everyone, on every server,
  sees the same order;
- the bans (``ClusterBans``): one hash, ``socket-chat:bans``, a field a
  target (a fingerprint, an address or network) whose value is the ban in
  JSON, read at every admission, so a ban set on one server holds on all;
- the names: one key per name, ``socket-chat:name:<names.key(name)>`` (its
  confusable skeleton: two servers cannot admit look-alikes either), a hash
  of the server holding it, the name as typed and since when, claimed
  atomically and set to expire: each server refreshes its members' names
  while it lives, so the names of a server that died come free by themselves.

What the room keeps by a person's key (when they left, their away state,
the private lines waiting for them) is in Redis too: cluster_history.py.

If Redis is lost, the server tells its members the chat is degraded, goes on
as a server alone, and tries again with a growing pause; when Redis is back
it claims its members' names again and says so. See PROTOCOL.md for the
entries and SECURITY.md for what Redis is trusted with.

The ``redis`` package (requirements-cluster.txt) is imported only here, and
this module only when ``--cluster`` is given.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit, urlunsplit

from socket_chat import crypto, protocol
from socket_chat.chat import names
from socket_chat.chat.bans import Ban, Bans, parse_target
from socket_chat.chat.history import HistoryUnavailable, Line
from socket_chat.protocol import (
    ActionMessage,
    ChatMessage,
    MalformedMessage,
    Message,
    NickChanged,
    Notice,
    PrivateMessage,
    UserBanned,
    UserJoined,
    UserKicked,
    UserLeft,
    UserParted,
)
from socket_chat.server.cluster_scripts import AGREE, CLAIM, REFRESH, RELEASE

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # only needed with --cluster: main() says how to install it
    redis = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from socket_chat.chat.room import Room

log = logging.getLogger("chat.cluster")

#: A stream entry as redis-py returns it: its ID and its fields.
Entry = tuple[bytes, dict[bytes, bytes]]

PREFIX = "socket-chat:"
STREAM = PREFIX + "chat"
NAME_PREFIX = PREFIX + "name:"
AWAY = PREFIX + "away"  # hash: name key (names.key) -> "NAME<LF>MESSAGE", for those away
#: A resumption ticket key by period (server/tickets.py): set once (SET NX) by
#: the first server that needs it, dropped by Redis once no ticket under it lives.
TICKET_KEY_PREFIX = PREFIX + "ticket-key:"
#: A used ticket's id (hex), until the ticket would have expired anyway.
TICKET_USED_PREFIX = PREFIX + "ticket-used:"
#: names.RULES of the servers in the cluster: set by the first to join, kept
#: alive by every server's refresh, so that it lapses once they are all gone.
NAMES_RULES = PREFIX + "names-rules"
#: Stream entries kept: far more than any history, and bounded memory.
STREAM_LENGTH = 10_000
DEFAULT_NAME_TTL = 15.0  # seconds a name outlives its server's last refresh
READ_BLOCK_MS = 500  # how long one XREAD waits: also how soon close() is noticed
READ_COUNT = 500  # entries at most per XREAD
SOCKET_TIMEOUT = 5.0  # seconds for any Redis reply: a vanished Redis is noticed
BACKOFF_FIRST, BACKOFF_MOST = 0.1, 5.0  # seconds between tries to reach Redis again
#: How long /users answers from the last read of the names (a SCAN of every
#: name's key) when no one joined, left or was renamed meanwhile.
MEMBERS_CACHE_SECONDS = 2.0
#: A name hash as read: the name, since when (Unix time), and whether its
#: member is a guest.
_Held = tuple[str, float, bool]

#: What a stream entry may hold (PROTOCOL.md section 8): what servers tell
#: clients about the conversation. Anything else (a client's ChatLine, a
#: Goodbye, a RateLimit...) is skipped: it would end connections or pose as
#: this server.
STREAM_TYPES = (
    ChatMessage,
    ActionMessage,
    PrivateMessage,
    UserJoined,
    UserLeft,
    UserParted,
    UserKicked,  # as PROTOCOL.md section 8 says: a kick's notice reaches every server
    UserBanned,
    NickChanged,
    Notice,
)
#: The fields of those messages that hold a username.
NAME_FIELDS = frozenset({"sender", "recipient", "name", "old", "new"})
#: ``from``: a server's 12 hex digits, then a member's count.
MEMBER_ID = re.compile(rb"[0-9a-f]{12}/[1-9][0-9]{0,18}")
#: An entry's message must fit in one record, with room for the history's
#: own fields around its text.
MAX_ENTRY_BYTES = protocol.MAX_FRAME_SIZE - 1024
#: Clock skew forgiven between Redis and this server, in seconds.
CLOCK_SKEW = 60.0
#: Entries after which the user list is read again; a Notice may sum up
#: joins and leaves in a busy room (chat/presence.py).
MEMBERS_CHANGED = (UserJoined, UserLeft, UserParted, UserKicked, UserBanned, NickChanged, Notice)

DEGRADED = (
    "The chat is degraded: this server has lost touch with the others. "
    "Messages reach only the people on this server until it is back."
)
RESTORED = "The cluster is back: messages reach everyone again."
RULES_DIFFER = (
    "Cannot join the cluster at {url}: its servers compare usernames by other rules ({theirs}) "
    "than this one ({ours}); every server of a cluster needs the same Python version's Unicode."
)
NAME_LOST = (
    "Your username {name} was taken on another server while this one was cut off "
    "from the cluster. Please connect again and choose another."
)


#: The bans every server of the cluster holds (ClusterBans).
BANS = "socket-chat:bans"


class ClusterUnavailable(Exception):
    """The cluster cannot be used; the message says why."""


class ClusterIncompatible(ClusterUnavailable):
    """The cluster's servers compare names by other rules (names.RULES)."""


def name_key(name: str) -> str:
    """The Redis key of a name: two names that look the same have one."""
    return NAME_PREFIX + names.key(name)


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: str) -> str:
    """``url`` if it names a Redis server (redis://, rediss:// or unix://).

    Raises:
        ValueError: it does not.
    """
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{redacted(url)!r} is not a Redis address: it must start with redis://, rediss:// or unix://")
    return url


def encode_entry(message: Message, sender_id: str | None) -> dict[bytes, bytes]:
    """The stream entry of a message: its bytes in the chat protocol's own
    encoding, and which member sent it (empty: no member)."""
    return {b"m": protocol.encode_message(message), b"from": (sender_id or "").encode("utf-8")}


def decode_entry(fields: dict[bytes, bytes]) -> tuple[Message, str | None]:
    """The message and sender of a stream entry, every field checked.

    Raises:
        ValueError: not an entry a server of this chat writes (the message
            says what is wrong).
    """
    if set(fields) != {b"m", b"from"}:
        raise ValueError(f"not a chat entry: its fields are {sorted(fields)!r}")
    payload, sender = fields[b"m"], fields[b"from"]
    if len(payload) > MAX_ENTRY_BYTES:
        raise ValueError(f"a message of {len(payload)} bytes: more than one record holds")
    if sender and not MEMBER_ID.fullmatch(sender):
        raise ValueError(f"'from' is not a member ID: {sender[:40]!r}")
    message = protocol.decode_message(payload)
    if isinstance(message, MalformedMessage):
        raise ValueError(message.reason)
    if not isinstance(message, STREAM_TYPES):
        raise ValueError(f"a {type(message).__name__} is not a message servers share")
    for field in dataclasses.fields(message):
        if field.name in NAME_FIELDS and not is_username(getattr(message, field.name)):
            raise ValueError(f"{type(message).__name__}.{field.name} is not a username")
    return message, sender.decode("ascii") or None


def is_username(text: str) -> bool:
    """Whether ``text`` is a username as a server here would give it out.
    Also bounds its length before any key is made from it.

    A name the room would refuse (chat/names.py's rules) is not a member's name.
    """
    if len(text) > protocol.MAX_USERNAME_LENGTH:
        return False
    try:
        return names.accept(text) == text
    except names.NameRefused:
        return False


def _away_entry(value: bytes) -> tuple[str, str]:
    """(name, away message) from a field of the away hash."""
    name, _, message = value.decode("utf-8", "replace").partition("\n")
    return name, message


#: A message ID in a cluster: the stream entry's milliseconds times this,
#: plus its sequence number (PROTOCOL.md, "Message IDs and server time").
ID_SEQUENCES = 1_000_000


def line_id_of(entry_id: bytes) -> int | None:
    """The message ID of the stream entry ``entry_id`` (``MS-SEQ``), or
    None if it is not an ID Redis makes (or its sequence is too large)."""
    milliseconds, dash, sequence = entry_id.partition(b"-")
    if not (milliseconds.isdigit() and dash and sequence.isdigit()) or int(sequence) >= ID_SEQUENCES:
        return None
    return int(milliseconds) * ID_SEQUENCES + int(sequence)


def entry_id_of(line_id: int) -> str:
    """The stream entry ID of a message ID (``line_id_of`` undone)."""
    return f"{line_id // ID_SEQUENCES}-{line_id % ID_SEQUENCES}"


def entry_time(entry_id: bytes) -> float | None:
    """When a stream entry was added, from its ID (milliseconds-sequence);
    None if the ID is not one Redis makes or the time is not a Unix time
    that fits a history line's field."""
    milliseconds, dash, sequence = entry_id.partition(b"-")
    if not (milliseconds.isdigit() and dash and sequence.isdigit()):
        return None
    seconds = int(milliseconds) / 1000
    return seconds if seconds < 2**32 else None


class RedisCluster:
    """The room's cluster on one Redis (see the module's docstring).

    Args:
        url: the Redis server, as redis://HOST:PORT/DB.
        name_ttl: seconds a name is kept after its server's last refresh;
            it is refreshed every third of that.
        clock: wall-clock time, for how long people have been online.
    """

    #: Its servers share rooms (server/cluster_rooms.py).
    shares_rooms = True

    def __init__(self, url: str, name_ttl: float = DEFAULT_NAME_TTL, clock=time.time) -> None:
        if redis is None:
            raise ClusterUnavailable("--cluster needs the redis package: pip install -r requirements-cluster.txt")
        self.url = url
        self.server_id = uuid.uuid4().hex[:12]
        self.name_ttl = name_ttl
        self._clock = clock
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a failure is news: the cluster thread retries, with backoff
        )
        self._agree = self._redis.register_script(AGREE)
        self._claim = self._redis.register_script(CLAIM)
        self._release = self._redis.register_script(RELEASE)
        self._refresh = self._redis.register_script(REFRESH)
        self._connected = threading.Event()
        self._told_rules_differ = False  # names.RULES differ from the cluster's, and the log says so
        self._state_lock = threading.Lock()
        self._closing = threading.Event()
        self._last_id = b"0-0"  # the last stream entry applied
        #: names.key(name) -> (when its member joined, its key's fingerprint or "" for a guest)
        self._claimed: dict[str, tuple[float, str]] = {}
        self._members_lock = threading.Lock()  # one read of the names at a time; the others wait for it
        self._members_read: list[_Held] | None = None  # (name, since, guest) at _members_read_at
        self._members_read_at = 0.0
        self._members_changes = 0  # joins, leaves, renames seen: a read begun before one is stale
        self._members_last: list[_Held] | None = None  # the last read, stale or not (a greeting's)
        self._members_last_at = 0.0
        self._thread: threading.Thread | None = None
        # What members said, waiting for the publisher thread (see publish).
        self._outgoing: collections.deque[tuple[Message, str | None]] = collections.deque()
        self._outgoing_ready = threading.Condition(threading.Lock())
        self._publisher: threading.Thread | None = None

    @classmethod
    def connect(cls, url: str, **options) -> RedisCluster:
        """A cluster whose Redis answers now.

        Raises:
            ClusterUnavailable: it does not (or the redis package is missing).
        """
        cluster = cls(url, **options)
        try:
            theirs = cluster._agree_on_names()
        except redis.RedisError as exc:
            cluster._redis.close()
            raise ClusterUnavailable(f"Cannot reach the cluster at {redacted(url)}: {exc}") from None
        if theirs is not None:
            cluster._redis.close()
            raise ClusterIncompatible(RULES_DIFFER.format(url=redacted(url), theirs=theirs, ours=names.RULES))
        cluster._connected.set()
        return cluster

    def _agree_on_names(self) -> str | None:
        """Hold the cluster to this server's names.RULES: None if they are
        the cluster's now, else the rules its servers use."""
        held = self._agree(keys=[NAMES_RULES], args=[names.RULES, self._ttl_ms()])
        return None if held == names.RULES.encode() else held.decode(errors="replace")

    def describe(self) -> str:
        """Where the cluster is (without its password) and who this server is in it."""
        return f"{redacted(self.url)} (this server is {self.server_id})"

    @property
    def connected(self) -> bool:
        """True while Redis answers; False while the chat is degraded."""
        return self._connected.is_set()

    # The room's side.

    def attach(self, room: Room) -> None:
        self._room = room

    def start(self) -> None:
        """Fill the room's history from the stream, then follow the stream."""
        try:
            self._catch_up_history()
        except redis.RedisError as exc:
            self._lost(exc)
        self._thread = threading.Thread(target=self._run, name="cluster", daemon=True)
        self._thread.start()
        self._publisher = threading.Thread(target=self._publish_loop, name="cluster publisher", daemon=True)
        self._publisher.start()

    def close(self) -> None:
        """Stop following the stream (the members have left by now)."""
        with self._outgoing_ready:
            self._closing.set()
            self._outgoing_ready.notify()
        if self._publisher is not None:
            self._publisher.join(SOCKET_TIMEOUT)  # what is waiting goes out first
        self._redis.connection_pool.disconnect()  # wakes the cluster thread from its XREAD
        if self._thread is not None:
            self._thread.join(READ_BLOCK_MS / 1000 + SOCKET_TIMEOUT)
        self._redis.close()

    def claim(self, name: str, fingerprint: str | None = None) -> bool:
        """Take ``name`` for a member here, whose key is ``fingerprint`` (None:
        a guest); False if another has it anywhere. While degraded, only this
        server's own members are checked."""
        self._members_changed()
        since = self._clock()
        if not self._try(
            self._claim,
            keys=[name_key(name)],
            args=[self.server_id, name, since, self._ttl_ms(), fingerprint or ""],
            otherwise=1,
        ):
            return False
        key = names.key(name)
        self._claimed[key] = (since, fingerprint or "")
        self._try(self._redis.hdel, AWAY, key)  # left by a server that died: not this newcomer's
        return True

    def release(self, name: str) -> None:
        self._members_changed()
        key = names.key(name)
        self._claimed.pop(key, None)
        self._try(self._release, keys=[NAME_PREFIX + key], args=[self.server_id])
        self._try(self._redis.hdel, AWAY, key)

    def publish(self, message: Message, sender_id: str | None) -> None:
        """Put ``message`` in the stream; while degraded, deliver it here at once.

        The caller does not wait for Redis: the publisher thread adds what
        is waiting, in order, in one round trip (a pipeline of XADDs). A
        round trip per line, from each reader thread, was a clustered
        server's largest cost after delivery itself (docs/benchmarks.md).
        """
        if self.connected:
            with self._outgoing_ready:
                if self._publisher is not None and not self._closing.is_set():
                    self._outgoing.append((message, sender_id))
                    self._outgoing_ready.notify()
                    return
            if self._add_all([(message, sender_id)]):  # not started, or closing: at once
                return
        self._room.distribute(message, sender_id)

    def _publish_loop(self) -> None:
        """The publisher thread: what members said, into the stream."""
        while True:
            with self._outgoing_ready:
                while not self._outgoing and not self._closing.is_set():
                    self._outgoing_ready.wait()
                if not self._outgoing:
                    return  # closing, and nothing left
                batch = list(self._outgoing)
                self._outgoing.clear()
            if not self._add_all(batch):
                for message, sender_id in batch:  # degraded: this server's members still hear it
                    self._room.distribute(message, sender_id)

    def _add_all(self, batch: list[tuple[Message, str | None]]) -> bool:
        """XADD each of ``batch`` in one round trip; False if Redis failed
        (the chat is degraded then) or is already known to be lost."""
        if not self.connected:
            return False
        pipe = self._redis.pipeline(transaction=False)
        for message, sender_id in batch:
            fields: dict = encode_entry(message, sender_id)  # bytes to bytes, as redis-py takes them
            pipe.xadd(STREAM, fields, maxlen=STREAM_LENGTH, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._lost(exc)
            return False
        return True

    def locate(self, name: str) -> str | None:
        """The name, as its holder typed it, of whoever holds ``name`` (or a
        name that looks the same) in the cluster, or None (also while degraded)."""
        if len(name) > protocol.MAX_USERNAME_LENGTH:  # bounded before it becomes a key
            return None
        found = self._try(self._redis.hget, name_key(name), "name")
        try:
            holder = found.decode("utf-8") if found else None
        except UnicodeDecodeError:
            holder = None
        if holder is not None and not (is_username(holder) and names.key(holder) == names.key(name)):
            log.warning("the name hash of %r holds another name: ignored", name)
            return None
        return holder

    def fingerprint_of(self, name: str) -> str | None:
        """The key fingerprint of whoever holds ``name`` in the cluster (""
        for a guest), from its name hash; None if no one does, the field is
        not a fingerprint, or while degraded."""
        if len(name) > protocol.MAX_USERNAME_LENGTH:
            return None
        found = self._try(self._redis.hmget, name_key(name), "name", "key")
        if not found or found[0] is None:
            return None
        fingerprint = found[1].decode("ascii", "replace") if found[1] is not None else ""
        if fingerprint and not crypto.FINGERPRINT_PATTERN.fullmatch(fingerprint):
            log.warning("the name hash of %r holds no fingerprint: ignored", name)
            return None
        return fingerprint

    def members(self, recent: bool = False) -> list[tuple[str, int]] | None:
        """(name, whole seconds online) of everyone in the cluster, or None
        while degraded. Read at most every ``MEMBERS_CACHE_SECONDS``, and
        again after a join, leave or rename anywhere; ``recent``: a read of
        the last ``MEMBERS_CACHE_SECONDS`` will do, changes or not (for a
        newcomer's greeting: no SCAN per join in a storm of joins)."""
        read = self._held(recent)
        if read is None:
            return None
        now = self._clock()
        return [(name, max(0, int(now - since))) for name, since, _ in read]

    def guests(self) -> set[str] | None:
        """The names of the guests in the cluster (from the read ``members``
        used), or None while degraded."""
        read = self._held(recent=False)
        return None if read is None else {name for name, _, guest in read if guest}

    def _held(self, recent: bool) -> list[_Held] | None:
        """The name hashes, read as ``members`` says."""
        with self._members_lock:
            fresh = time.monotonic() - self._members_read_at < MEMBERS_CACHE_SECONDS
            read = self._members_read if fresh else None
            if read is None and recent and time.monotonic() - self._members_last_at < MEMBERS_CACHE_SECONDS:
                read = self._members_last
            if read is None:
                changes = self._members_changes
                read = self._try(self._read_members)
                if read is None:
                    return None
                self._members_last, self._members_last_at = read, time.monotonic()
                if changes == self._members_changes:  # else something changed during the read: use it once
                    self._members_read, self._members_read_at = read, time.monotonic()
        return read

    def _members_changed(self) -> None:
        self._members_changes += 1
        self._members_read = None

    def set_away(self, name: str, message: str | None) -> None:
        """Mark a member here as away (``message``) or back (None) in Redis."""
        if message is None:
            self._try(self._redis.hdel, AWAY, names.key(name))
        else:
            # The name as held, so that /users needs no key of each name it lists.
            self._try(self._redis.hset, AWAY, names.key(name), f"{name}\n{message}")

    def away_messages(self) -> dict[str, str] | None:
        """The away message of everyone away, by name as held (entries of
        names no one holds are never listed), or None while degraded."""
        found = self._try(self._redis.hgetall, AWAY)
        if found is None:
            return None
        return dict(_away_entry(value) for value in found.values())

    def away_message(self, name: str) -> str | None:
        """The away message of ``name`` if they are away (None while degraded)."""
        found = self._try(self._redis.hget, AWAY, names.key(name))
        return None if found is None else _away_entry(found)[1]

    # The cluster thread.

    def _run(self) -> None:
        refresh_due = 0.0
        while not self._closing.is_set():
            if not self.connected:
                self._reconnect()
                continue
            try:
                if time.monotonic() >= refresh_due:
                    self._refresh_names()
                    refresh_due = time.monotonic() + self.name_ttl / 3
                self._follow_stream()
            except redis.RedisError as exc:
                self._lost(exc)
            except Exception:  # a bug must not stop the chat: it stays in the log
                log.exception("cluster thread")
                self._closing.wait(BACKOFF_MOST)

    def _follow_stream(self) -> None:
        block = min(READ_BLOCK_MS, int(self.name_ttl / 3 * 1000))
        replies = cast(
            "list[tuple[bytes, list[Entry]]]",
            self._redis.xread({STREAM: self._last_id}, count=READ_COUNT, block=block),
        )
        for _, entries in replies:
            # All that one XREAD brought, delivered together: each member's
            # writer then seals them as one record, not one record each.
            batch: list[tuple[Message, str | None, float | None]] = []
            ids: list[int | None] = []
            for entry_id, fields in entries:
                try:
                    message, sender_id = decode_entry(fields)
                except ValueError as exc:
                    log.warning("skipped stream entry %s: %s", entry_id.decode(errors="replace"), exc)
                    continue
                if isinstance(message, MEMBERS_CHANGED):
                    self._members_changed()
                batch.append((message, sender_id, self._sent_at(entry_id)))
                ids.append(line_id_of(entry_id))
            if entries:
                self._last_id = entries[-1][0]  # before: a bug must not deliver them twice
            self._room.distribute_all(batch, ids)

    def _refresh_names(self) -> None:
        theirs = self._agree_on_names()
        if theirs is not None and not self._told_rules_differ:  # they lapsed, and a server of other rules came
            log.error(RULES_DIFFER.format(url=redacted(self.url), theirs=theirs, ours=names.RULES))
        self._told_rules_differ = theirs is not None
        held = self._room.names()
        if not held:
            return
        args: list = [self.server_id, self._ttl_ms()]
        keys = [names.key(name) for name in held]
        for name, key in zip(held, keys, strict=True):
            # Not stored when missing: a name released since ``held`` was read stays forgotten.
            args += [name, *self._claimed.get(key, (self._clock(), ""))]
        lost = self._refresh(keys=[NAME_PREFIX + key for key in keys], args=args)
        for position in lost:
            self._evict(held[int(position) - 1])

    def _evict(self, name: str) -> None:
        """Another server holds the name of a member here: that member goes."""
        membership = self._room.find(name)
        if membership is not None:
            log.warning("%s: the name is held by another server now; disconnecting", name)
            self._claimed.pop(names.key(name), None)
            membership.member.close(NAME_LOST.format(name=name))

    def _reconnect(self) -> None:
        """Try Redis again, waiting longer each time, until it answers."""
        pause = BACKOFF_FIRST
        while not self._closing.wait(pause):
            try:
                self._redis.ping()
                self._refresh_names()
            except redis.RedisError as exc:
                pause = min(pause * 2, BACKOFF_MOST)
                log.info("cluster still unreachable (next try in %.1f s): %s", pause, exc)
                continue
            self._connected.set()
            log.warning("cluster reached again: the chat is whole")
            self._room.notify_here(Notice(RESTORED))
            return

    def _lost(self, exc: Exception) -> None:
        if self._closing.is_set():
            return
        with self._state_lock:  # one warning, however many threads notice
            if not self._connected.is_set():
                return
            self._connected.clear()
        log.warning("cluster lost: %s; the chat is degraded", exc)
        self._room.notify_here(Notice(DEGRADED))

    # Resumption tickets (tickets.SharedTicketKeys).

    def ticket_key(self, period: int, candidate: bytes | None, ttl: int) -> bytes | None:
        """The ticket key of ``period``, set to ``candidate`` first if no
        server has set one (for ``ttl`` seconds); None if there is none or
        Redis cannot be reached (no tickets given or taken meanwhile)."""
        name = TICKET_KEY_PREFIX + str(period)
        if candidate is not None:
            self._try(self._redis.set, name, candidate, nx=True, ex=ttl)
        found = self._try(self._redis.get, name)
        return found if isinstance(found, bytes) else None

    def spend_ticket(self, ticket_id: bytes, ttl: int) -> bool:
        """Mark a ticket used for ``ttl`` seconds; False if some server of
        the cluster took it already (or Redis cannot be reached)."""
        return bool(self._try(self._redis.set, TICKET_USED_PREFIX + ticket_id.hex(), b"1", nx=True, ex=ttl))

    # Helpers.

    @property
    def redis(self):
        """The Redis client (for cluster_names)."""
        return self._redis

    def call(self, command, *args, otherwise=None, **kwargs):
        """``command``'s reply, or ``otherwise`` if Redis fails (the chat is
        degraded then, and says so) or is already known to be lost."""
        return self._try(command, *args, otherwise=otherwise, **kwargs)

    def _try(self, command, *args, otherwise=None, **kwargs):
        """``command``'s reply, or ``otherwise`` if Redis fails (which makes
        the chat degraded) or is already known to be lost."""
        if not self.connected:
            return otherwise
        try:
            return command(*args, **kwargs)
        except redis.RedisError as exc:
            self._lost(exc)
            return otherwise

    def _catch_up_history(self) -> None:
        """Give the room the chat lines of the stream's tail, and start
        reading after them."""
        newest = cast("list[Entry]", self._redis.xrevrange(STREAM, count=READ_COUNT))
        if newest:
            self._last_id = newest[0][0]
        for entry_id, fields in reversed(newest):
            try:
                message, _ = decode_entry(fields)
            except ValueError:
                continue
            self._room.record_history(message, self._sent_at(entry_id), line_id_of(entry_id))

    def page(self, before: int | None, count: int) -> tuple[list[Line], bool] | None:
        """A page of the history from the stream, the cluster's archive
        (so every server answers the same): the chat lines and actions
        before the ID ``before``, read back in slices of ``READ_COUNT``
        entries past the joins and leaves among them.

        Raises:
            HistoryUnavailable: Redis did not answer.
        """
        if before is not None and before <= 0:
            return [], False  # nothing is before the first ID ("(0-0" is an error to Redis, not a lost link)
        found: list[Line] = []
        end = "+" if before is None else "(" + entry_id_of(before)
        while len(found) <= count:
            entries = self._try(self._redis.xrevrange, STREAM, max=end, min="-", count=READ_COUNT)
            if entries is None:
                raise HistoryUnavailable("the cluster's Redis did not answer")
            for entry_id, fields in cast("list[Entry]", entries):
                line = self.history_line(entry_id, fields)
                if line is not None:
                    found.append(line)
            if len(entries) < READ_COUNT:
                break
            end = "(" + entries[-1][0].decode()
        return found[:count][::-1], len(found) > count

    def forget(self, line_id: int) -> bool:
        """XDEL the line's entry from the stream (the other servers' memory
        of newcomers' lines keeps it until they restart)."""
        deleted = self._try(self._redis.xdel, STREAM, entry_id_of(line_id), otherwise=0)
        return bool(deleted)

    def history_line(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Line | None:
        """The chat line or action of a stream entry, or None if it is not one."""
        line_id = line_id_of(entry_id)
        try:
            message, _ = decode_entry(fields)
        except ValueError:
            return None
        if line_id is None or not isinstance(message, (ChatMessage, ActionMessage)):
            return None
        kind = "action" if isinstance(message, ActionMessage) else "chat"
        return Line(line_id, int(self._sent_at(entry_id)), kind, message.sender, message.text)

    def _sent_at(self, entry_id: bytes) -> float:
        """When an entry was added: its ID's time, or now if that is not a
        time or is later than now (an entry added with an ID of its own)."""
        now = self._clock()
        when = entry_time(entry_id)
        return now if when is None or when > now + CLOCK_SKEW else when

    def _read_members(self) -> list[_Held]:
        """(name, since, guest) of every name hash; a hash whose fields are
        not a server's (not a username, not a time) is left out, with a
        warning. No ``key`` (a server before keys for people) is a guest."""
        keys = list(self._redis.scan_iter(match=NAME_PREFIX + "*", count=1000))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "name", "since", "key")
        members, garbled = [], []
        for key, (name, since, fingerprint) in zip(keys, pipe.execute(), strict=True):
            if name is None or since is None:
                continue  # expired or freed between the SCAN and the read
            member = _name_and_since(key, name, since)
            if member is None:
                garbled.append(key)
            else:
                members.append((*member, not fingerprint))
        if garbled:
            log.warning("%d name hashes left out of the user list, not a server's: %r", len(garbled), garbled[:3])
        return members

    def _ttl_ms(self) -> int:
        return max(1, int(self.name_ttl * 1000))


class ClusterBans(Bans):
    """The bans of a cluster: every server reads them from one Redis hash
    (``BANS``) at each admission, and writes a ban or its lifting there at
    once, so a ban set on one server holds on all of them. While Redis is
    lost, the last bans read stand (and one set meanwhile holds here only).

    Args:
        cluster: the connected cluster (its Redis, and its way of failing).
        clock: Unix time (tests pin it and move it).
    """

    shared = True

    def __init__(self, cluster: RedisCluster, clock=time.time) -> None:
        self._cluster = cluster
        super().__init__(self, clock)

    # The store's side (chat.bans.BanStore): Redis, written at once.

    def bans(self) -> list[Ban]:
        return self._read_shared() or []

    def save_ban(self, ban: Ban) -> None:
        fields = {"reason": ban.reason, "by": ban.by, "set_at": ban.set_at, "until": ban.until, "name": ban.name}
        self._cluster._try(self._cluster._redis.hset, BANS, ban.target, json.dumps(fields))

    def drop_ban(self, target: str) -> None:
        self._cluster._try(self._cluster._redis.hdel, BANS, target)

    def _read_shared(self) -> list[Ban] | None:
        rows = self._cluster._try(self._cluster._redis.hgetall, BANS)
        if rows is None:
            return None
        return [ban for target, value in rows.items() if (ban := _decode_ban(target, value)) is not None]


def _decode_ban(target: bytes, value: bytes) -> Ban | None:
    """A ban of the hash, or None (logged) if it is not one a server wrote."""
    try:
        text = target.decode("utf-8")
        fields = json.loads(value)
        ban = Ban(
            text,
            str(fields["reason"]),
            str(fields["by"]),
            int(fields["set_at"]),
            int(fields["until"]),
            str(fields["name"]),
        )
        if parse_target(text) != text:
            raise ValueError(f"{text[:60]!r} is not a fingerprint or an address")
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        log.warning("cluster: skipped a ban that is not the chat's (%s): %s", BANS, exc)
        return None
    return ban


def _name_and_since(key: bytes, name: bytes, since: bytes) -> tuple[str, float] | None:
    """A name hash's ``name`` and ``since``, or None if they are not a
    username (whose key is the hash's) and a Unix time."""
    try:
        text, when = name.decode("utf-8"), float(since)
    except (UnicodeDecodeError, ValueError):
        return None
    if not is_username(text) or not math.isfinite(when) or not 0 <= when < 2**32:
        return None
    if key != name_key(text).encode("utf-8"):  # a second entry for someone, under a key not theirs
        return None
    return text, when
