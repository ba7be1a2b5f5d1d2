"""Rooms that span a cluster's servers: the state of each room in Redis, and
one Redis stream a room for the one order of what is said in it.

Each server keeps, for the rooms it has members in, only what its own
members need: their seats and the room's recent lines (``rooms.Rooms``'s
tables). Everything the servers must agree on is in Redis (PROTOCOL.md
section 8, "Rooms in a cluster"):

- ``socket-chat:rooms``, the set of the rooms' keys (``rooms.room_key``);
- ``socket-chat:room:<key>``, a hash: the room's name, topic, mode (``+i``
  or empty) and founder (a member ID);
- ``socket-chat:room-members:<key>``, a sorted set of its members' IDs
  (scored in the order they joined: the founder's role passes to the
  lowest), and ``socket-chat:room-names:<key>``, a hash of their names;
- ``socket-chat:room-invited:<key>``, a set of invitations, ``key:`` a
  fingerprint or ``id:`` a guest's member ID;
- ``socket-chat:room-stream:<key>``, the room's stream: what is said in it,
  and its notices, in its one order; a room's history is its tail (it
  expires a day after its room is gone);
- ``socket-chat:room-server:<server>``, set to expire: a server alive, and
  ``socket-chat:room-servers``, the set of them. A server whose key lapsed is
  dead, and the next sweep of any server takes its members out of their
  rooms (as a dead server's names lapse).

A check and its change happen together, in one Lua script each (a room's
caps, its founder, its mode, its invitations). A server follows the
streams of the rooms it has members in with one XREAD for all of them
(``socket-chat:room-wake:<server>``, one entry, wakes it when it follows
one more), and delivers each entry to its members in the stream's order.

One stream a room rather than the lobby's stream with a room field: each
room is trimmed on its own (a busy room cannot push a quiet one's history
out), a server reads only the rooms it has members in, and one XREAD reads
them all, so it costs no more calls.

While Redis is lost, rooms cannot be used: a room command or line is
refused with the reason (nothing is sent that the others would not hear).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from socket_chat.chat import names
from socket_chat.chat.blocks import encoded_pieces, is_block
from socket_chat.chat.history import Line
from socket_chat.chat.presentation import excerpt, printable_text
from socket_chat.chat.room import Member, Membership, Room
from socket_chat.chat.rooms import (
    MAX_INVITATIONS,
    ChatRoom,
    RoomRefused,
    Rooms,
    _kept,
    deliver_line,
    members_answer,
    room_key,
    room_name,
    room_shape,
    topic_change,
)
from socket_chat.protocol import (
    GREETING_NAMES,
    MAX_USERNAME_LENGTH,
    Encoded,
    Joined,
    MalformedMessage,
    Message,
    Notice,
    Parted,
    RoomMessage,
    RoomNotice,
    decode_message,
    encode,
    encode_message,
)
from socket_chat.server.cluster import (
    MEMBER_ID,
    PREFIX,
    READ_BLOCK_MS,
    READ_COUNT,
    entry_time,
    is_username,
    line_id_of,
)

if TYPE_CHECKING:
    from socket_chat.server.cluster import RedisCluster

__all__ = ["ClusterRooms", "ROOM_STREAM_LENGTH", "UNREACHABLE"]

log = logging.getLogger("chat.cluster")

ROOMS = PREFIX + "rooms"
ROOM = PREFIX + "room:"
MEMBERS = PREFIX + "room-members:"
NAMES = PREFIX + "room-names:"
INVITED = PREFIX + "room-invited:"
STREAM = PREFIX + "room-stream:"
SERVER = PREFIX + "room-server:"
SERVERS = PREFIX + "room-servers"
WAKE = PREFIX + "room-wake:"
SEQUENCE = PREFIX + "room-seq"
#: How long /rooms answers from its last read when no room followed here changed.
LISTING_CACHE_SECONDS = 2.0
#: Entries a room's stream keeps (approximately, as the lobby's).
ROOM_STREAM_LENGTH = 10_000
#: How long a gone room's stream stays (a room made again within it has its
#: history back); without it every name ever joined would keep a stream.
ROOM_STREAM_EXPIRY_MS = 24 * 60 * 60 * 1000

UNREACHABLE = "The cluster cannot be reached, and rooms are shared by its servers: try again once it is back."
SERVER_GONE = "{name} left {room} (their server is gone)."
REMADE = (
    "The cluster lost {room} and made it again: it is invite-only (+i) until its founder sets -i; its topic is gone."
)
#: ``to`` of an entry: a member's ID (it is for them only), ``*`` (for
#: everyone: the room is closed), or empty.
TO = re.compile(rb"\*|[0-9a-f]{12}/[1-9][0-9]{0,18}")

# Join a room, made if new, and say so in its stream, in one step. KEYS: the
# room, its members, their names, its invitations, the rooms' set, the join
# counter, its stream; ARGV: member ID, name, the room's name if it is made
# (empty: it may not be), its key, the member's fingerprint (empty: a
# guest), the most rooms, the most people a room, the room's name the
# notice has, the notice, the stream's length. The first field of the answer
# says what was done ('renamed': the room's name is not the notice's, try
# again); then the room's name, topic, the ID of the join's entry (empty if
# they were in it already) and its members' names.
JOIN = """
local status, added = 'already', ''
local held = redis.call('HGET', KEYS[1], 'name') or ARGV[3]
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if held ~= ARGV[8] then return {'renamed', held} end
  if redis.call('EXISTS', KEYS[1]) == 0 then
    if ARGV[3] == '' then return {'bad name'} end
    if redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[6]) then return {'max rooms'} end
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    redis.call('HSET', KEYS[1], 'name', ARGV[3], 'topic', '', 'mode', '', 'founder', ARGV[1])
    redis.call('SADD', KEYS[5], ARGV[4])
    redis.call('PERSIST', KEYS[7])
  else
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then return {'full'} end
    local by_key = ARGV[5] ~= '' and redis.call('SREM', KEYS[4], 'key:' .. ARGV[5]) == 1
    local by_id = redis.call('SREM', KEYS[4], 'id:' .. ARGV[1]) == 1
    if redis.call('HGET', KEYS[1], 'mode') == '+i' and not (by_key or by_id) then return {'invite only'} end
  end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[6]), ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  added = redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[10], '*', 'm', ARGV[9], 'from', ARGV[1], 'to', '')
  status = 'joined'
end
local room = redis.call('HMGET', KEYS[1], 'name', 'topic')
local answer = {status, room[1], room[2], added}
for _, name in ipairs(redis.call('HVALS', KEYS[3])) do table.insert(answer, name) end
return answer
"""

# Take a member out of a room and say so in its stream, in one step. KEYS:
# the room, its members, their names, its invitations, the rooms' set, its
# stream; ARGV: member ID, the room's key, the stream's length, then the
# entries to add (m, from, to for each). -1 if they were not in it, else how
# many are left (an empty room is gone; a founder's role passes on).
LEAVE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[3], ARGV[1])
for i = 4, #ARGV, 3 do
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[i], 'from', ARGV[i + 1], 'to', ARGV[i + 2])
end
local left = redis.call('ZCARD', KEYS[2])
if left == 0 then
  redis.call('DEL', KEYS[1], KEYS[4])
  redis.call('SREM', KEYS[5], ARGV[2])
  redis.call('PEXPIRE', KEYS[6], STREAM_EXPIRY_MS)
elseif redis.call('HGET', KEYS[1], 'founder') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'founder', redis.call('ZRANGE', KEYS[2], 0, 0)[1])
end
return left
""".replace("STREAM_EXPIRY_MS", str(ROOM_STREAM_EXPIRY_MS))

# Close a room: KEYS as LEAVE's; ARGV: the room's key, the stream's length,
# the Parted its members are sent. -1 if there is no such room, else how
# many were in it.
CLOSE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local count = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[3], 'from', '', 'to', '*')
redis.call('PEXPIRE', KEYS[6], STREAM_EXPIRY_MS)
return count
""".replace("STREAM_EXPIRY_MS", str(ROOM_STREAM_EXPIRY_MS))

# Set a field of a room (its topic or mode) and say so: KEYS: the room, its
# members, its stream; ARGV: member ID, the field, its value, '1' if only
# the founder may, the stream's length, the notice.
SET = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 'not in' end
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], 'founder') ~= ARGV[1] then return 'not founder' end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[6], 'from', '', 'to', '')
return 'done'
"""

# Invite: KEYS: the room, its invitations; ARGV: the inviter's member ID,
# the invitation, the most a room keeps.
INVITE = """
if redis.call('HGET', KEYS[1], 'founder') ~= ARGV[1] then return 'not founder' end
if redis.call('HGET', KEYS[1], 'mode') ~= '+i' then return 'not +i' end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 'too many' end
redis.call('SADD', KEYS[2], ARGV[2])
return 'done'
"""

# Take the members of dead servers out of every room: the servers of the
# set ``room-servers`` whose ``room-server:`` key lapsed (none: nothing is
# read but the set). ARGV: the keys' prefix. Returns room key, room name,
# member ID, name for each taken out.
SWEEP = """
local dead = {}
for _, server in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'room-servers')) do
  if redis.call('EXISTS', ARGV[1] .. 'room-server:' .. server) == 0 then dead[server] = true end
end
if next(dead) == nil then return {} end
local taken = {}
for _, key in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'rooms')) do
  local room = ARGV[1] .. 'room:' .. key
  local members, names = ARGV[1] .. 'room-members:' .. key, ARGV[1] .. 'room-names:' .. key
  local gone = false
  for _, id in ipairs(redis.call('ZRANGE', members, 0, -1)) do
    local server = string.match(id, '^([0-9a-f]+)/')
    if server == nil or dead[server] then
      table.insert(taken, key)
      table.insert(taken, redis.call('HGET', room, 'name') or '')
      table.insert(taken, id)
      table.insert(taken, redis.call('HGET', names, id) or '')
      redis.call('ZREM', members, id)
      redis.call('HDEL', names, id)
      gone = true
    end
  end
  if gone then
    if redis.call('ZCARD', members) == 0 then
      redis.call('DEL', room, ARGV[1] .. 'room-invited:' .. key)
      redis.call('SREM', ARGV[1] .. 'rooms', key)
      redis.call('PEXPIRE', ARGV[1] .. 'room-stream:' .. key, STREAM_EXPIRY_MS)
    elseif not redis.call('ZSCORE', members, redis.call('HGET', room, 'founder') or '') then
      redis.call('HSET', room, 'founder', redis.call('ZRANGE', members, 0, 0)[1])
    end
  end
end
for server in pairs(dead) do redis.call('SREM', ARGV[1] .. 'room-servers', server) end
return taken
""".replace("STREAM_EXPIRY_MS", str(ROOM_STREAM_EXPIRY_MS))

# Seat this server's members again after its key lapsed (Redis was lost
# for longer than it lives, and another server swept them out). A room made
# again is +i (its mode was lost: closed rather than open to all), and its
# notice says so; a member added again has their join's notice (the others
# were told they left). KEYS: the room, its members, their names, the rooms'
# set, the join counter, its stream; ARGV: the room's key, its name, the
# notice, the stream's length, then member ID, name and join notice for each.
RESEAT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'name', ARGV[2], 'topic', '', 'mode', '+i', 'founder', ARGV[5])
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('PERSIST', KEYS[6])
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*', 'm', ARGV[3], 'from', '', 'to', '')
end
for i = 5, #ARGV, 3 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[i])
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*', 'm', ARGV[i + 2], 'from', ARGV[i], 'to', '')
  end
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
return 0
"""

# A member's new name, if they are in the room: KEYS: its members, their
# names; ARGV: member ID, the name.
RENAME = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 0
"""

# A member's line, if they are in the room: KEYS: its members, its stream;
# ARGV: member ID, the stream's length, the entry's m and from. 1 if added.
POST = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[3], 'from', ARGV[4], 'to', '')
return 1
"""

#: What a room's entry may hold.
ROOM_ENTRY_TYPES = (RoomMessage, RoomNotice, Parted)

_FAILED = object()  # what a Redis call gives back when Redis failed


def room_keys(key: str) -> list[str]:
    """The keys LEAVE and CLOSE take: the room, its members, their names,
    its invitations, the rooms' set, its stream."""
    return [ROOM + key, MEMBERS + key, NAMES + key, INVITED + key, ROOMS, STREAM + key]


def encode_room_entry(message: Message, sender_id: str | None, to: str = "") -> dict[bytes, bytes]:
    """A room stream's entry: the message in the chat protocol's encoding,
    who said it (empty: no member) and whom it is for (empty: everyone)."""
    return {b"m": encode_message(message), b"from": (sender_id or "").encode(), b"to": to.encode()}


def decode_room_entry(fields: dict[bytes, bytes], key: str) -> tuple[Message, str | None, str]:
    """The message, sender and ``to`` of an entry of the room ``key``'s
    stream, every field checked.

    Raises:
        ValueError: not an entry a server of this chat writes.
    """
    if set(fields) != {b"m", b"from", b"to"}:
        raise ValueError(f"not a room entry: its fields are {sorted(fields)!r}")
    sender, to = fields[b"from"], fields[b"to"]
    if sender and not MEMBER_ID.fullmatch(sender):
        raise ValueError(f"'from' is not a member ID: {sender[:40]!r}")
    if to and not TO.fullmatch(to):
        raise ValueError(f"'to' is not a member ID or *: {to[:40]!r}")
    message = decode_message(fields[b"m"])
    if isinstance(message, MalformedMessage):
        raise ValueError(message.reason)
    if not isinstance(message, ROOM_ENTRY_TYPES):
        raise ValueError(f"a {type(message).__name__} is not a room's entry")
    if room_key(message.room) != key:
        raise ValueError("an entry of another room")
    if isinstance(message, RoomMessage) and (not is_username(message.sender) or message.kind not in ("chat", "action")):
        raise ValueError("a room line whose sender is not a username")
    return message, sender.decode("ascii") or None, to.decode("ascii")


class ClusterRooms(Rooms):
    """``Rooms`` whose state is in the cluster's Redis (see the module's
    docstring): this server's tables hold only its own members' seats.

    Args:
        cluster: the connected cluster.
        lobby, history_size, max_rooms, per_person, room_size, clock: as ``Rooms``'s.
    """

    def __init__(
        self,
        cluster: RedisCluster,
        lobby: Room,
        history_size: int,
        max_rooms: int,
        per_person: int,
        room_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(lobby, history_size, max_rooms, per_person, room_size, store=None, clock=clock)
        self._cluster = cluster
        self._server_key = SERVER + cluster.server_id
        self._wake = WAKE + cluster.server_id
        redis = cluster.redis
        self._join = redis.register_script(JOIN)
        self._leave = redis.register_script(LEAVE)
        self._close = redis.register_script(CLOSE)
        self._set = redis.register_script(SET)
        self._invite = redis.register_script(INVITE)
        self._sweep = redis.register_script(SWEEP)
        self._reseat = redis.register_script(RESEAT)
        self._rename = redis.register_script(RENAME)
        self._post = redis.register_script(POST)
        self._cursors: dict[ChatRoom, bytes] = {}  # the last entry applied, by room followed
        #: (room, member ID) -> the order of the entry of their join here.
        self._seated_at: dict[tuple[ChatRoom, str], tuple[int, int]] = {}
        #: Leavings of the chat that Redis did not take: (room key, LEAVE's args).
        self._unwritten: collections.deque[tuple[str, list]] = collections.deque(maxlen=10_000)
        #: (room key, member ID) whose rename Redis did not take.
        self._unrenamed: set[tuple[str, str]] = set()
        self._wake_cursor = b"0-0"
        self._listed: tuple[float, list[tuple[str, int, str]]] | None = None  # /rooms's last read, and when
        self._changes = 0  # of the rooms followed here, as this server saw them
        self._reseat_pending = False  # this server's key lapsed: its seats to write again
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # The server's side.

    def start(self) -> None:
        """Say this server is alive, then follow the rooms' streams."""
        self._call(self._cluster.redis.set, self._server_key, b"1", px=self._ttl_ms())
        self._call(self._cluster.redis.sadd, SERVERS, self._cluster.server_id)
        self._thread = threading.Thread(target=self._run, name="cluster rooms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following, write the leavings Redis has not taken and take
        out those still seated; then say this server is gone. If Redis did
        not take them all, its key is left to lapse: another server's sweep
        takes its members out then."""
        self._closing.set()
        self._call_quietly(self._add_wake)  # out of its XREAD at once
        if self._thread is not None:
            self._thread.join(READ_BLOCK_MS / 1000 + 5)
        try:
            self._write_unwritten()
            self._leave_seated()
        except RoomRefused:
            log.warning("cluster rooms: Redis failed at the stop; this server's seats lapse with its key")
            return
        self._call_quietly(self._cluster.redis.delete, self._server_key, self._wake)
        self._call_quietly(self._cluster.redis.srem, SERVERS, self._cluster.server_id)

    def _leave_seated(self) -> None:
        """Take every member still seated here out of their rooms, in Redis."""
        with self._lock:
            seated = [(room, i, m.name) for room in self._rooms.values() for i, m in room.seats.items()]
        for room, member_id, name in seated:
            notice = RoomNotice(room.name, f"{name} left {room.name}.")
            args = [member_id, room.key, ROOM_STREAM_LENGTH, *_fields(notice, member_id)]
            self._call(self._leave, keys=room_keys(room.key), args=args)
            self._unseat(room, member_id, None)

    def _write_unwritten(self) -> None:
        """Write the leavings Redis did not take (each removed once written)."""
        while self._unwritten:
            key, args = self._unwritten[0]
            self._call(self._leave, keys=room_keys(key), args=args)
            self._unwritten.popleft()

    def _leave_or_queue(self, key: str, args: list) -> None:
        """LEAVE, or, if Redis failed, kept to be written once it is back."""
        try:
            self._call(self._leave, keys=room_keys(key), args=args)
        except RoomRefused:
            with self._lock:
                if len(self._unwritten) == self._unwritten.maxlen:
                    log.warning("cluster rooms: too many leavings unwritten; the oldest is dropped (swept later)")
                self._unwritten.append((key, args))

    # Called for the members.

    def join(self, membership: Membership, raw: str) -> None:
        raw = room_shape(raw)
        key = room_key(raw)
        try:
            made_as, refusal = room_name(raw), None
        except RoomRefused as refused:
            made_as, refusal = "", refused
        with self._lock:
            self._check_person_cap(membership, key)
        guess = self._call(self._cluster.redis.hget, ROOM + key, "name")
        named = guess.decode() if guess is not None else made_as
        for _ in range(3):  # a room closed and made again under another look-alike name meanwhile: again
            notice = RoomNotice(named, f"{membership.name} joined {named}.")
            answer = self._call(
                self._join,
                keys=[ROOM + key, MEMBERS + key, NAMES + key, INVITED + key, ROOMS, SEQUENCE, STREAM + key],
                args=[
                    membership.member_id,
                    membership.name,
                    made_as,
                    key,
                    membership.fingerprint or "",
                    self.max_rooms,
                    self.room_size,
                    named,
                    encode_message(notice) if named else b"",
                    ROOM_STREAM_LENGTH,
                ],
            )
            if answer[0] != b"renamed":
                break
            named = answer[1].decode()
        status = answer[0].decode()
        if status == "renamed":
            raise RoomRefused(f"{printable(raw)} was closed and made again as you joined: try again.")
        if status == "bad name":
            assert refusal is not None
            raise refusal
        if status == "max rooms":
            raise RoomRefused(
                f"The cluster has {self.max_rooms} rooms already, the most it holds: {made_as} was not made. "
                "Join one of them (/rooms lists them)."
            )
        shown = answer[1].decode() if status in ("joined", "already") else printable(raw)
        if status == "full":
            raise RoomRefused(f"{shown} is full: it holds {self.room_size} people at most.")
        if status == "invite only":
            raise RoomRefused(f"{shown} is invite-only (+i): ask its founder for an /invite.")
        with self._lock:
            self._changed()  # their own /rooms next has it, read before the stream's entry
        topic = answer[2].decode()
        listed = sorted((n.decode() for n in answer[4:]), key=str.casefold)
        joined = Joined(shown, topic, len(listed), "\n".join(listed[:GREETING_NAMES]))
        try:
            self._seat(membership, key, shown, joined, answer[3])
        except RoomRefused:
            if status == "joined":  # not seated here: not in Redis either
                left = RoomNotice(shown, f"{membership.name} left {shown}.")
                args = [membership.member_id, key, ROOM_STREAM_LENGTH, *_fields(left, membership.member_id)]
                self._leave_or_queue(key, args)
            raise

    def _seat(self, membership: Membership, key: str, name: str, joined: Joined, added: bytes) -> None:
        """Seat the member here, the room followed from its stream's tail if
        no one here was in it; they are sent ``joined`` and its history.
        ``added``: the ID of their join's entry (empty: they were in it), before
        which a kick or a close in the stream is not theirs."""
        cut: list[Member] = []
        while True:
            tail = None if key in self._rooms else self._tail(key)
            with self._lock:
                room = self._rooms.get(key)
                if room is None and tail is None:
                    continue  # gone between the look and the lock: read its tail
                followed = room is None
                if room is None:
                    assert tail is not None
                    history, last = tail
                    room = ChatRoom(name, key, history)
                    self._rooms[key] = room
                    self._cursors[room] = last
                with room.lock:
                    room.seats[membership.member_id] = membership
                    if added:
                        self._seated_at[room, membership.member_id] = entry_order(added)
                    self._joined[membership.member_id].add(key)
                    history = room.history
                    if not membership.multiline:  # blocks a message a line, as rooms._welcome
                        history = collections.deque(piece for item in history for piece in encoded_pieces(item))
                    self._deliver(room, [encode(joined), *history], cut, only=membership)
                break
        if followed:
            self._call_quietly(self._add_wake)
        for member in cut:
            member.send_queue_overflowed()

    def _tail(self, key: str) -> tuple[collections.deque[Encoded], bytes]:
        """A room's history from its stream (the lines of its last entries)
        and the ID of its last entry."""
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            self._call(self._cluster.redis.xrevrange, STREAM + key, count=max(self._history_size, 1) * 2 + 10),
        )
        history: collections.deque[Encoded] = collections.deque(maxlen=self._history_size)
        for entry_id, fields in reversed(entries):
            try:
                message, _, _ = decode_room_entry(fields, key)
            except ValueError:
                continue
            if isinstance(message, RoomMessage) and history.maxlen:
                history.append(_kept(message.room, self._line(entry_id, message)))
        return history, entries[0][0] if entries else b"0-0"

    def part(self, membership: Membership, raw: str, reason: str = "") -> None:
        room = self._room_of(membership, raw)
        because = f" ({reason})" if reason else ""
        notice = RoomNotice(room.name, f"{membership.name} left {room.name}{because}.")
        self._call(
            self._leave,
            keys=room_keys(room.key),
            args=[membership.member_id, room.key, ROOM_STREAM_LENGTH, *_fields(notice, membership.member_id)],
        )
        with self._lock:
            self._changed()
        self._unseat(room, membership.member_id, encode(Parted(room.name, "")))

    def leave_all(self, membership: Membership) -> None:
        with self._lock:
            keys = list(self._joined.get(membership.member_id, ()))
            rooms = [self._rooms[key] for key in keys if key in self._rooms]
        for room in rooms:
            notice = RoomNotice(room.name, f"{membership.name} left {room.name}.")
            args = [membership.member_id, room.key, ROOM_STREAM_LENGTH, *_fields(notice, membership.member_id)]
            self._leave_or_queue(room.key, args)  # written once Redis is back (_keep_alive), if not now
            self._unseat(room, membership.member_id, None)

    def renamed(self, membership: Membership) -> None:
        """The new name goes in each of the member's rooms' names (for
        ``/who`` and ``/kick`` on every server); the lobby's NickChanged
        tells the people."""
        with self._lock:
            keys = list(self._joined.get(membership.member_id, ()))
        for key in keys:
            args = [membership.member_id, membership.name]
            try:
                self._call(self._rename, keys=[MEMBERS + key, NAMES + key], args=args)
            except RoomRefused:
                with self._lock:  # written once Redis is back (_keep_alive)
                    self._unrenamed.add((key, membership.member_id))

    def _write_renames(self) -> None:
        """Write the renames Redis did not take: each seat's name now."""
        with self._lock:
            due = list(self._unrenamed)
        for key, member_id in due:
            with self._lock:
                self._unrenamed.discard((key, member_id))
                room = self._rooms.get(key)
                seated = room.seats.get(member_id) if room is not None else None
            if seated is None:
                continue  # out of the room since: nothing to rename
            try:
                self._call(self._rename, keys=[MEMBERS + key, NAMES + key], args=[member_id, seated.name])
            except RoomRefused:
                with self._lock:
                    self._unrenamed.add((key, member_id))
                raise

    def say(self, membership: Membership, raw: str, kind: str, text: str, echo: bool = False) -> None:
        """A room's line, into its stream if Redis still has the member in
        the room (a kick or close their server has not applied yet stops
        it); refused if Redis does not take it."""
        room = self._room_of(membership, raw)
        message = RoomMessage(room.name, "", int(self._clock()), kind, membership.name, text)
        fields = encode_room_entry(message, membership.member_id if not echo else None)
        posted = self._call(
            self._post,
            keys=[MEMBERS + room.key, STREAM + room.key],
            args=[membership.member_id, ROOM_STREAM_LENGTH, fields[b"m"], fields[b"from"]],
        )
        if not posted:
            raise RoomRefused(f"You are not in {room.name} (/join {room.name} first).")

    def set_topic(self, membership: Membership, raw: str, topic: str) -> None:
        room = self._room_of(membership, raw)
        topic, said = topic_change(membership.name, room.name, topic)
        self._set_field(room, membership, "topic", topic, False, said)

    def set_mode(self, membership: Membership, raw: str, mode: str) -> None:
        room = self._room_of(membership, raw)
        if mode not in ("+i", "-i"):
            raise RoomRefused("The mode is +i (only those invited may join) or -i (anyone may).")
        said = "only those invited may join" if mode == "+i" else "anyone may join"
        value = "+i" if mode == "+i" else ""
        self._set_field(room, membership, "mode", value, True, f"{membership.name} set {room.name} {mode}: {said}.")

    def _set_field(self, room: ChatRoom, membership: Membership, field: str, value: str, founder: bool, said: str):
        done = self._call(
            self._set,
            keys=[ROOM + room.key, MEMBERS + room.key, STREAM + room.key],
            args=[
                membership.member_id,
                field,
                value,
                "1" if founder else "0",
                ROOM_STREAM_LENGTH,
                encode_message(RoomNotice(room.name, said)),
            ],
        )
        if done == b"not founder":
            raise RoomRefused(f"Only the founder of {room.name} may use /mode there.")
        if done == b"not in":
            raise RoomRefused(f"You are not in {room.name} (/join {room.name} first).")
        with self._lock:
            self._changed()

    def invite(self, membership: Membership, raw: str, name: str) -> str:
        room = self._room_of(membership, raw)
        name = name.strip()
        shown = printable(name) or "(no name)"
        here = self._lobby.find(name) if 0 < len(name) <= 4 * MAX_USERNAME_LENGTH else None
        if here is not None:
            invitee, fingerprint = here.name, here.fingerprint
            invitation = f"key:{fingerprint}" if fingerprint is not None else f"id:{here.member_id}"
        else:
            found = self._call(self._cluster.locate, name) if len(name) <= MAX_USERNAME_LENGTH else None
            held = self._call(self._cluster.fingerprint_of, name) if found is not None else None
            if found is None or held is None:
                raise RoomRefused(f"No one called {shown} is online: no one was invited.")
            if not held:
                raise RoomRefused(
                    f"{found} is a guest (no key) on another server of the cluster: only a person with a key "
                    "can be invited across servers. They may connect to this server to be invited."
                )
            invitee, fingerprint, invitation = found, held, f"key:{held}"
        wanted = names.key(invitee)
        if any(names.key(n.decode()) == wanted for n in self._call(self._cluster.redis.hvals, NAMES + room.key)):
            raise RoomRefused(f"{invitee} is in {room.name} already.")
        done = self._call(
            self._invite,
            keys=[ROOM + room.key, INVITED + room.key],
            args=[membership.member_id, invitation, MAX_INVITATIONS],
        )
        if done == b"not founder":
            raise RoomRefused(f"Only the founder of {room.name} may use /invite there.")
        if done == b"not +i":
            raise RoomRefused(f"Anyone may join {room.name} (it is not +i): no invitation is needed.")
        if done == b"too many":
            raise RoomRefused(f"{room.name} has {MAX_INVITATIONS} invitations waiting, the most it keeps.")
        told = f"invites you to {room.name}: /join {room.name}"
        if here is not None:
            if not here.member.deliver(encode(Notice(f"{membership.name} {told}"))):
                here.member.send_queue_overflowed()
        else:  # on another server: told as a private line from the inviter
            self._lobby.send_private(membership, invitee, told)
        bound = "their key" if fingerprint is not None else "this connection of theirs (a guest: no key)"
        return f"{invitee} is invited to {room.name} (bound to {bound})."

    def who(self, membership: Membership, raw: str) -> list[Message]:
        key = room_key(room_shape(raw))
        pipe = self._cluster.redis.pipeline(transaction=False)
        pipe.hmget(ROOM + key, "name", "mode")
        pipe.zscore(MEMBERS + key, membership.member_id)
        pipe.hvals(NAMES + key)
        (name, mode), score, found = self._call(pipe.execute)
        if name is None:
            raise RoomRefused(f"There is no room {printable(raw)}.")
        if mode == b"+i" and score is None:
            raise RoomRefused(f"{name.decode()} is invite-only: only its members see who is in it.")
        return members_answer(name.decode(), (n.decode() for n in found))

    def _entries(self) -> list[tuple[str, int, str]]:
        """``/rooms``'s rooms: read at most every ``LISTING_CACHE_SECONDS``
        (each read costs a call a room), and again after a change in a room
        this server follows."""
        if not self._cluster.connected:
            raise RoomRefused(UNREACHABLE)  # not an old answer while Redis is lost
        with self._lock:
            changes, listed = self._changes, self._listed
        if listed is not None and time.monotonic() - listed[0] < LISTING_CACHE_SECONDS:
            return listed[1]
        entries = self._read_entries()
        with self._lock:
            if changes == self._changes:  # else something changed during the read: used once
                self._listed = (time.monotonic(), entries)
        return entries

    def _changed(self) -> None:
        """A room changed: ``/rooms`` reads Redis again (under ``_lock``)."""
        self._changes += 1
        self._listed = None

    def _read_entries(self) -> list[tuple[str, int, str]]:
        keys = sorted(self._call(self._cluster.redis.smembers, ROOMS))
        pipe = self._cluster.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(ROOM + key.decode(), "name", "topic")
            pipe.zcard(MEMBERS + key.decode())
        read = self._call(pipe.execute) if keys else []
        entries = []
        for (name, topic), count in zip(read[::2], read[1::2], strict=True):
            if name is not None:
                entries.append((name.decode(), int(count), (topic or b"").decode()))
        return entries

    # Called for the operators.

    def close(self, raw: str, reason: str = "") -> str:
        key = room_key(room_shape(raw))
        name = self._room_name(key, raw)
        because = f": {reason}" if reason else "."
        told = encode_message(Parted(name, f"The operator closed {name}{because}"))
        count = self._call(self._close, keys=room_keys(key), args=[key, ROOM_STREAM_LENGTH, told])
        if count < 0:
            raise RoomRefused(f"There is no room {printable(raw)}.")
        with self._lock:
            self._changed()
        return f"{name} is closed ({count} {'person was' if count == 1 else 'people were'} in it)."

    def kick(self, raw: str, name: str, reason: str = "") -> str:
        key = room_key(room_shape(raw))
        room = self._room_name(key, raw)
        wanted = names.key(name)
        seated = self._call(self._cluster.redis.hgetall, NAMES + key)
        target = next(((i.decode(), n.decode()) for i, n in seated.items() if names.key(n.decode()) == wanted), None)
        if target is None:
            raise RoomRefused(f"No one called {name} is in {room}.")
        member_id, held = target
        because = f": {reason}" if reason else "."
        told = Parted(room, f"You were kicked from {room} by the operator{because}")
        notice = RoomNotice(room, f"{held} was kicked from {room} by the operator{because}")
        left = self._call(
            self._leave,
            keys=room_keys(key),
            args=[member_id, key, ROOM_STREAM_LENGTH, *_fields(told, None, member_id), *_fields(notice, member_id)],
        )
        if left < 0:
            raise RoomRefused(f"No one called {name} is in {room}.")
        with self._lock:
            self._changed()
        return f"{held} was kicked from {room}."

    # The rooms' thread.

    def _run(self) -> None:
        ttl = self._cluster.name_ttl
        due = 0.0
        while not self._closing.is_set():
            if not self._cluster.connected:
                self._closing.wait(0.1)
                continue
            try:
                if time.monotonic() >= due:
                    self._keep_alive()
                    due = time.monotonic() + ttl / 3
                self._follow(min(READ_BLOCK_MS, int(ttl / 3 * 1000)))
            except RoomRefused:
                pass  # Redis failed: the cluster is degraded, and says so
            except Exception:  # a bug must not stop the chat: it stays in the log
                log.exception("cluster rooms thread")
                self._closing.wait(1.0)

    def _keep_alive(self) -> None:
        """Say this server is alive (and seat its members again if its key
        had lapsed), then take dead servers' members out of their rooms."""
        redis = self._cluster.redis
        if self._call(redis.set, self._server_key, b"1", px=self._ttl_ms(), get=True) is None:
            self._reseat_pending = True
        if self._reseat_pending:  # until every step succeeded: the key alone says nothing of them
            self._drain()  # kicks and closes first: no one they took out is seated again
            self._call(redis.sadd, SERVERS, self._cluster.server_id)
            self._seat_again()
            self._reseat_pending = False
        self._write_unwritten()
        self._write_renames()
        taken = self._call(self._sweep, keys=[], args=[PREFIX])
        for at in range(0, len(taken), 4):
            key, name, _, held = (value.decode(errors="replace") for value in taken[at : at + 4])
            if name and is_username(held):
                notice = RoomNotice(name, SERVER_GONE.format(name=held, room=name))
                self._call(self._add_entry, key, encode_room_entry(notice, None))

    def _seat_again(self) -> None:
        with self._lock:
            rooms = [(room, [(i, m.name) for i, m in room.seats.items()]) for room in self._rooms.values()]
        for room, seated in rooms:
            if seated:
                remade = encode_message(RoomNotice(room.name, REMADE.format(room=room.name)))
                each = [(i, n, encode_message(RoomNotice(room.name, f"{n} joined {room.name}."))) for i, n in seated]
                args = [room.key, room.name, remade, ROOM_STREAM_LENGTH, *(v for seat in each for v in seat)]
                keys = [ROOM + room.key, MEMBERS + room.key, NAMES + room.key, ROOMS, SEQUENCE, STREAM + room.key]
                self._call(self._reseat, keys=keys, args=args)

    def _drain(self) -> None:
        """Apply every entry of the followed streams written so far."""
        while self._follow(None):
            pass

    def _follow(self, block_ms: int | None) -> int:
        """Apply the followed streams' next entries (waiting up to
        ``block_ms``; None: not at all); how many were read."""
        with self._lock:
            followed = {STREAM + room.key: room for room in self._rooms.values()}
            streams = {STREAM + room.key: self._cursors[room] for room in self._rooms.values()}
        streams[self._wake] = self._wake_cursor
        replies = self._call(self._cluster.redis.xread, streams, count=READ_COUNT, block=block_ms)
        read = 0
        for stream, entries in replies or []:
            stream = stream.decode()
            if stream == self._wake:
                self._wake_cursor = entries[-1][0]
                continue
            room = followed[stream]
            read += len(entries)
            for entry_id, fields in entries:
                self._apply(room, entry_id, fields)
        return read

    def _apply(self, room: ChatRoom, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of a followed room's stream, delivered to its members here."""
        try:
            message, sender_id, to = decode_room_entry(fields, room.key)
        except ValueError as exc:
            log.warning("skipped an entry of %s's stream: %s", room.name, exc)
            message = None
        cut: list[Member] = []
        with self._lock, room.lock:
            if room.closed:
                return
            self._cursors[room] = entry_id
            if not isinstance(message, RoomMessage):
                self._changed()  # a join, leave, topic, mode, kick or close
            if isinstance(message, RoomMessage):
                line = self._line(entry_id, message)
                item = encode(RoomMessage(room.name, str(line.id), line.sent_at, line.kind, line.sender, line.text))
                if room.history.maxlen:
                    room.history.append(_kept(room.name, line, item))
                # A block goes whole to those who take blocks, a message a line to the others.
                split = encoded_pieces(item) if is_block(message) else None
                for member_id, m in room.seats.items():
                    if member_id != sender_id and not deliver_line(m, item, split):
                        cut.append(m.member)
            elif isinstance(message, RoomNotice):
                told = encode(message)
                for member_id, m in room.seats.items():
                    if member_id != sender_id and not m.member.deliver(told):
                        cut.append(m.member)
            elif isinstance(message, Parted):
                # A close (to everyone) or a kick, of those seated before it:
                # one who joined again since is not taken out by it.
                order = entry_order(entry_id)
                for member_id in [to] if to != "*" else list(room.seats):
                    seated = room.seats.get(member_id)
                    if seated is not None and self._seated_at.get((room, member_id), (0, 0)) < order:
                        self._deliver(room, encode(message), cut, only=seated)
                        self._forget_seat(room, member_id)
        for member in cut:
            member.send_queue_overflowed()

    # Internals.

    def _unseat(self, room: ChatRoom, member_id: str, told: Encoded | None) -> None:
        cut: list[Member] = []
        with self._lock, room.lock:
            if member_id in room.seats:
                if told is not None:
                    self._deliver(room, told, cut, only=room.seats[member_id])
                self._forget_seat(room, member_id)
        for member in cut:
            member.send_queue_overflowed()

    def _forget_seat(self, room: ChatRoom, member_id: str) -> None:
        """Out of the room here (under both locks); a room no one here is
        in is followed no more."""
        room.seats.pop(member_id, None)
        self._seated_at.pop((room, member_id), None)
        joined = self._joined.get(member_id)
        if joined is not None:
            joined.discard(room.key)
            if not joined:
                del self._joined[member_id]
        if not room.seats:
            room.closed = True
            self._rooms.pop(room.key, None)
            self._cursors.pop(room, None)

    def _room_name(self, key: str, raw: str) -> str:
        found = self._call(self._cluster.redis.hget, ROOM + key, "name")
        if found is None:
            raise RoomRefused(f"There is no room {printable(raw)}.")
        return found.decode()

    def _line(self, entry_id: bytes, message: RoomMessage) -> Line:
        when = entry_time(entry_id)
        sent_at = int(when) if when is not None else message.sent_at
        return Line(line_id_of(entry_id) or 0, sent_at, message.kind, message.sender, message.text)

    def _add_entry(self, key: str, fields: dict[bytes, bytes]) -> None:
        self._cluster.redis.xadd(STREAM + key, fields, maxlen=ROOM_STREAM_LENGTH, approximate=True)

    def _add_wake(self) -> None:
        pipe = self._cluster.redis.pipeline(transaction=False)
        pipe.xadd(self._wake, {b"w": b"1"}, maxlen=1)
        pipe.pexpire(self._wake, self._ttl_ms())
        pipe.execute()

    def _call(self, command, *args, **kwargs):
        """``command``'s reply; Redis failing makes the chat degraded.

        Raises:
            RoomRefused: Redis failed, or is known to be lost.
        """
        found = self._cluster.call(command, *args, otherwise=_FAILED, **kwargs)
        if found is _FAILED:
            raise RoomRefused(UNREACHABLE)
        return found

    def _call_quietly(self, command, *args, **kwargs) -> None:
        """``command``, whose failure (the chat degraded) is not the person's."""
        with contextlib.suppress(RoomRefused):
            self._call(command, *args, **kwargs)

    def _ttl_ms(self) -> int:
        return max(1, int(self._cluster.name_ttl * 1000))


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """A stream entry ID (``MS-SEQ``) as what sorts in the stream's order."""
    milliseconds, _, sequence = entry_id.partition(b"-")
    return (int(milliseconds), int(sequence or b"0")) if milliseconds.isdigit() and sequence.isdigit() else (0, 0)


def _fields(message: Message, sender_id: str | None, to: str = "") -> list[bytes]:
    """A stream entry's m, from and to, as LEAVE's arguments take them."""
    return [encode_message(message), (sender_id or "").encode(), to.encode()]


def printable(raw: str) -> str:
    """Text a person typed, fit to show back to them."""
    return printable_text(excerpt(raw, 40))
