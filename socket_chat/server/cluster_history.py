"""What the room keeps by a person's key in a cluster: when each person with
a key last left (the last message ID they had then, and the time: their
unread count) and their away state, in the cluster's Redis, so that a person
who leaves one server and comes back on another is told what they missed,
gets their ``/mentions``, and is still away.

``ClusterHistory`` is the room's ``chat.history.HistoryStore`` with
``--cluster``. It keeps, under the cluster's key prefix (PROTOCOL.md section 8):

- ``socket-chat:seen``: a hash, one field a fingerprint, its value the last
  message ID and the time of leaving, two decimal numbers with a space
  between (``1733570000123000004 1733570042``);
- ``socket-chat:away-by-key``: a hash, one field a fingerprint, its value the
  away message (UTF-8, maybe empty);
- ``socket-chat:waiting:FINGERPRINT``: a list, the private lines waiting for
  that key while its person is offline (``ClusterOffline``: chat.offline's
  rules), each a JSON object, at most ``MAX_WAITING``, kept and taken by Lua
  scripts (so each is given once) and deleted once given.

The lines themselves are the stream's (cluster.py): the unread count and
``/mentions`` read it (the count in a Lua script, in Redis), and the room's
own lines for newcomers stay in memory (``MemoryHistory``), as before.

If Redis is lost, it fails as the rest of the cluster does (the chat is told
once that it is degraded): a leaving or an away state is kept by this server
(``MAX_PENDING`` at most) and written once Redis is back, and this server
answers from it meanwhile; a join of a key it knows nothing of finds no
record (no unread count, no kept away state, no waiting lines: they wait on
in Redis),
``/mentions`` says the history cannot be read now, and a private line for
someone offline is refused with its sender told (``OfflineUnavailable``).
Nothing waits for Redis under the room's lock: the room calls ``save_seen``
and ``save_away`` outside it.

This module is imported only with ``--cluster`` (it needs ``cluster``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

from socket_chat import protocol
from socket_chat.chat.history import HistoryUnavailable, Line, MemoryHistory, Seen
from socket_chat.chat.member import MAX_AWAY_LENGTH
from socket_chat.chat.offline import MAX_WAITING, OfflineMessages, OfflineUnavailable, Waiting
from socket_chat.chat.presentation import mentions
from socket_chat.protocol import ActionMessage, ChatMessage
from socket_chat.server.cluster import (
    MAX_ENTRY_BYTES,
    PREFIX,
    READ_COUNT,
    STREAM,
    STREAM_LENGTH,
    Entry,
    RedisCluster,
    entry_id_of,
    is_username,
)
from socket_chat.server.cluster_scripts import COUNT_LINES, KEEP_WAITING, TAKE_WAITING

__all__ = ["AWAY_BY_KEY", "ClusterHistory", "ClusterOffline", "SEEN", "WAITING_PREFIX"]

log = logging.getLogger("chat.cluster")

SEEN = PREFIX + "seen"  # hash: fingerprint -> "LAST_ID LEFT_AT"
AWAY_BY_KEY = PREFIX + "away-by-key"  # hash: fingerprint -> away message
WAITING_PREFIX = PREFIX + "waiting:"  # + fingerprint: list of JSON private lines
DAY = 86_400
#: The longest expiry a waiting list is given (seconds, about 68 years):
#: Redis refuses an EXPIRE past its clock's range ("invalid expire time")
#: after the script pushed the line, so a --keep-days beyond it is this.
MAX_EXPIRY = 2**31 - 1
#: Changes by key (leavings, away states) kept while Redis is lost, at most.
MAX_PENDING = 10_000
#: The slices of READ_COUNT entries an unread count reads at most: twice a
#: full stream (it is trimmed near STREAM_LENGTH).
COUNT_SLICES = 2 * STREAM_LENGTH // READ_COUNT
#: The type bytes of the stream entries that are lines (counted as unread).
LINE_TYPES = bytes(protocol.encode_message(m)[0] for m in (ChatMessage("a", ""), ActionMessage("a", "")))
_LOST = object()  # Redis did not answer


class ClusterHistory(MemoryHistory):
    """The room's history store in a cluster (see the module's docstring).

    Args:
        cluster: the connected cluster (its Redis, and its way of failing).
    """

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self._cluster = cluster
        self._count = cluster.redis.register_script(COUNT_LINES)
        # Writes to SEEN and AWAY_BY_KEY that Redis did not take yet (it was
        # lost): (hash, fingerprint) -> value, or None for a deletion.
        self._pending: dict[tuple[str, str], bytes | None] = {}
        # Those being sent, by one caller at a time (_send_pending).
        self._sending: dict[tuple[str, str], bytes | None] = {}
        self._pending_lock = threading.Lock()
        self._unsent = 0  # changes dropped: more than MAX_PENDING waited

    # The lines: in the stream.

    def count_after(self, line_id: int) -> int:
        """The chat lines and actions in the stream after ``line_id`` (those
        trimmed from a full stream are not counted), counted in Redis a
        slice of ``READ_COUNT`` entries a script: each holds Redis for a
        slice's time (1 to 2 ms), not the whole tail's (23 to 38 ms over 10,000).

        Raises:
            HistoryUnavailable: Redis did not answer.
        """
        start, total = "-" if line_id <= 0 else "(" + entry_id_of(line_id), 0
        for _ in range(COUNT_SLICES):  # bounded: a stream written faster than read is not followed for ever
            found = self._cluster.call(
                self._count, keys=[STREAM], args=[start, LINE_TYPES, READ_COUNT], otherwise=_LOST
            )
            if found is _LOST:
                raise HistoryUnavailable("the cluster's Redis did not answer")
            counted, last = found
            total += int(counted)
            if not last:
                break
            start = "(" + last.decode()
        return total

    def mentioning(self, name: str, after: int, upto: int, cap: int) -> list[Line]:
        """The lines of the stream with IDs in (``after``, ``upto``] that
        mention ``name``, newest first, ``cap`` at most: read back from
        ``upto`` in slices of ``READ_COUNT`` entries.

        Raises:
            HistoryUnavailable: Redis did not answer.
        """
        if upto <= 0 or upto <= after:
            return []
        found: list[Line] = []
        end, start = entry_id_of(upto), "-" if after <= 0 else "(" + entry_id_of(after)
        while len(found) < cap:
            entries = self._cluster.call(
                self._cluster.redis.xrevrange, STREAM, max=end, min=start, count=READ_COUNT, otherwise=_LOST
            )
            if entries is _LOST:
                raise HistoryUnavailable("the cluster's Redis did not answer")
            for entry_id, fields in cast("list[Entry]", entries):
                line = self._cluster.history_line(entry_id, fields)
                if line is not None and mentions(line.text, name):
                    found.append(line)
            if len(entries) < READ_COUNT:
                break
            end = "(" + entries[-1][0].decode()
        return found[:cap]

    # By key: in Redis.

    def seen(self, fingerprint: str) -> Seen | None:
        """When this key last left, on any server; None if never (or Redis
        cannot say now, and this server wrote none meanwhile)."""
        found = self._read(SEEN, fingerprint)
        return None if found is None else _seen_of(fingerprint, found)

    def save_seen(self, fingerprint: str, seen: Seen) -> None:
        self._write(SEEN, fingerprint, f"{seen.last_id} {seen.left_at}".encode())

    def away(self, fingerprint: str) -> str | None:
        """The away message kept for this key, by any server; None if none
        (or Redis cannot say now, and this server set none meanwhile)."""
        found = self._read(AWAY_BY_KEY, fingerprint)
        if found is None:
            return None
        message = found.decode("utf-8", "replace")
        if len(message) > MAX_AWAY_LENGTH:
            log.warning("cluster: skipped an away state that is not a server's (%s, %s)", AWAY_BY_KEY, fingerprint)
            return None
        return message

    def save_away(self, fingerprint: str, message: str | None) -> None:
        self._write(AWAY_BY_KEY, fingerprint, None if message is None else message.encode("utf-8"))

    def _read(self, name: str, fingerprint: str) -> bytes | None:
        """A field of one of the hashes: what this server wrote last and
        could not send yet if there is one (its own writes are never lost
        to it), else Redis's."""
        self._send_pending()
        with self._pending_lock:
            for waiting in (self._pending, self._sending):  # the newer first
                if (name, fingerprint) in waiting:
                    return waiting[name, fingerprint]
        return self._cluster.call(self._cluster.redis.hget, name, fingerprint)

    def _write(self, name: str, fingerprint: str, value: bytes | None) -> None:
        """Set (``value``) or delete (None) a field, now if Redis answers;
        else it waits, and is sent with the first write or read once Redis
        is back: a leaving or an away state said while Redis was lost is
        not lost with it (unless this server stops first)."""
        with self._pending_lock:
            full = (name, fingerprint) not in self._pending and len(self._pending) >= MAX_PENDING
            if full:
                self._unsent += 1
            else:
                self._pending[name, fingerprint] = value
            first_dropped = full and self._unsent == 1
        if first_dropped:
            log.warning("cluster: more than %d changes by key wait for Redis; the newer are dropped", MAX_PENDING)
        if not full:
            self._send_pending()

    def _send_pending(self) -> None:
        """Send what waits. One caller at a time: another leaves it to that
        one, which sends again what came meanwhile, so an older batch that
        failed never lands after a newer one (and is never put back over it)."""
        while True:
            with self._pending_lock:
                if self._sending or not self._pending or not self._cluster.connected:
                    return
                self._sending, self._pending = self._pending, {}
            sent = self._send(self._sending)
            with self._pending_lock:
                if not sent:
                    for key, value in self._sending.items():
                        self._pending.setdefault(key, value)  # a newer write meanwhile wins
                self._sending = {}
            if not sent:
                return

    def _send(self, batch: dict[tuple[str, str], bytes | None]) -> bool:
        """Write ``batch`` in one pipeline; False if Redis did not take it."""
        pipe = self._cluster.redis.pipeline(transaction=False)
        for (name, fingerprint), value in batch.items():
            if value is None:
                pipe.hdel(name, fingerprint)
            else:
                pipe.hset(name, fingerprint, value)
        return self._cluster.call(pipe.execute, otherwise=_LOST) is not _LOST


def _seen_of(fingerprint: str, value: bytes) -> Seen | None:
    """A field of ``SEEN`` read back, or None (logged) if it is not one a
    server wrote."""
    last_id, _, left_at = value.partition(b" ")
    if last_id.isdigit() and left_at.isdigit() and int(last_id) < 2**63 and int(left_at) < 2**32:
        return Seen(int(last_id), int(left_at))
    log.warning("cluster: skipped a leaving that is not a server's (%s, %s): %r", SEEN, fingerprint, value[:40])
    return None


class ClusterOffline(OfflineMessages):
    """The private lines waiting for someone offline, in the cluster's Redis
    (``chat.offline``'s rules: only for a key, ``cap`` a key, given once and
    then deleted), so that they reach their person on whichever server they
    come back to.

    Args:
        cluster: the connected cluster.
        keep_days: a key's list expires this many days after the last line
            put in it (0: never), as ``--keep-days`` drops old lines.
        cap: lines one key may have waiting.
        clock: Unix time (tests pin it).
    """

    def __init__(
        self,
        cluster: RedisCluster,
        keep_days: float = 30,
        cap: int = MAX_WAITING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(None, cap, clock)
        self._cluster = cluster
        self._expiry = min(max(0, int(keep_days * DAY)), MAX_EXPIRY)
        self._keep = cluster.redis.register_script(KEEP_WAITING)
        self._take = cluster.redis.register_script(TAKE_WAITING)

    def keep(self, fingerprint: str, sender: str, recipient: str, text: str) -> bool:
        line = {"sender": sender, "recipient": recipient, "text": text, "sent_at": int(self._clock())}
        args = [json.dumps(line), self.cap, self._expiry]
        kept = self._cluster.call(self._keep, keys=[WAITING_PREFIX + fingerprint], args=args, otherwise=_LOST)
        if kept is _LOST:
            raise OfflineUnavailable("the cluster's Redis did not answer")
        return bool(kept)

    def take(self, fingerprint: str) -> list[Waiting]:
        """The lines waiting for the key, oldest first, deleted from Redis;
        none while Redis is lost (they wait on there)."""
        found = self._cluster.call(self._take, keys=[WAITING_PREFIX + fingerprint], otherwise=[])
        waiting = [line for value in found if (line := _waiting_of(fingerprint, value)) is not None]
        if len(waiting) < len(found):
            log.warning("cluster: skipped %d waiting lines that are not a server's", len(found) - len(waiting))
        return waiting

    def count(self, fingerprint: str) -> int:
        return int(self._cluster.call(self._cluster.redis.llen, WAITING_PREFIX + fingerprint, otherwise=0))


def _waiting_of(fingerprint: str, value: bytes) -> Waiting | None:
    """A line of a waiting list read back, or None if it is not one a server
    wrote. Every check is here, before it is given: the script has deleted
    the list, so one bad line raising later would lose the good ones."""
    try:
        return _checked_waiting(fingerprint, json.loads(value))
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        return None


def _checked_waiting(fingerprint: str, fields: object) -> Waiting | None:
    """The line of a waiting list's decoded JSON, or None (``_waiting_of``)."""
    if not isinstance(fields, dict):
        return None
    sender, recipient, text, sent_at = fields["sender"], fields["recipient"], fields["text"], fields["sent_at"]
    if not all(isinstance(field, str) for field in (sender, recipient, text)):
        return None
    if type(sent_at) is not int or not 0 <= sent_at < 2**32:  # an OfflineMessage's range; not a bool
        return None
    if not (is_username(sender) and is_username(recipient)):
        return None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ENTRY_BYTES:
        return None
    return Waiting(fingerprint, sender, recipient, text, sent_at)
