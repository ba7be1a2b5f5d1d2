"""What the cluster keeps by a person's key (server/cluster_history.py): a
person with a key who leaves one server and comes back on another is told
the right unread count, gets the right /mentions, and is still away; on the
real redis-server, two in-process servers on loopback."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.chat.history import HistoryUnavailable, Seen
from socket_chat.chat.member import HISTORY_UNAVAILABLE, KEPT_FOR_LATER, STILL_AWAY
from socket_chat.chat.offline import OfflineUnavailable, Waiting
from socket_chat.crypto import PersonKey
from socket_chat.protocol import ChatMessage
from socket_chat.server import cluster, cluster_history
from socket_chat.server.cluster_history import (
    AWAY_BY_KEY,
    MAX_EXPIRY,
    SEEN,
    WAITING_PREFIX,
    ClusterHistory,
    ClusterOffline,
)
from socket_chat.server.cluster_names import RedisRegistrations
from socket_chat.server.command_line import kept_by_key, waiting_in
from tests.helpers import DEADLINE, ChatTestClient, OwnServer, wait_until

ANN, BOB = "SHA256:" + "A" * 43, "SHA256:" + "B" * 43
NOW = 1_764_100_000


@pytest.fixture
def two_servers(identity_key, redis_server):
    """Two servers of one cluster, each keeping what it knows by key, the
    names registered and the private lines for later in Redis."""
    servers = []
    for _ in range(2):
        own = OwnServer(identity_key)
        joined = cluster.RedisCluster.connect(redis_server.url)
        registrations = RedisRegistrations(joined)
        own.start(cluster=joined, kept=kept_by_key(joined), registrations=registrations, offline=waiting_in(joined, 30))
        servers.append(own)
    try:
        yield servers
    finally:
        for own in servers:
            own.cleanup()


def next_of(client: ChatTestClient, event_type):
    while not isinstance(event := client.next_event(), event_type):
        pass
    return event


def stamped(own: OwnServer, name: str, identity: PersonKey | None = None) -> tuple[ChatTestClient, list]:
    """A person with a key who joined ``own``, and what came before their
    own UserList (the history, the unread line, notices)."""
    client = own.client(handshake=False)
    client.handshake(identity=identity, stamps=True)
    client.join(name)
    client.send(protocol.UserListRequest())
    before = []
    while not isinstance(event := client.next_event(), protocol.UserList):
        before.append(event)
    return client, before


def test_unread_mentions_and_away_follow_a_person_from_one_server_to_another(two_servers):
    a, b = two_servers
    bob, _ = stamped(b, "bob")
    ann, _ = stamped(a, "ann")
    ann.send(protocol.Away("lunch"))
    ann.send(protocol.UserListRequest())  # the away state is set once this is answered
    next_of(ann, protocol.UserList)
    key = ann.identity
    ann.close()
    assert next_of(bob, protocol.UserLeft) == protocol.UserLeft("ann")  # A wrote her leaving first
    for text in ("while she was out", "ann: are you there?", "annex is a word, not a name"):
        bob.say(text)

    back, before = stamped(b, "ann", identity=key)  # on the other server
    unread = [event for event in before if isinstance(event, protocol.Unread)]
    assert [(u.new, u.shown) for u in unread] == [(3, 3)]
    assert protocol.Notice(STILL_AWAY.format(message="lunch")) in before
    back.send(protocol.MentionsRequest())
    mention = next_of(back, protocol.HistoryLine)
    assert (mention.sender, mention.text) == ("bob", "ann: are you there?")
    assert back.expect(protocol.PageEnd) == protocol.PageEnd("mentions", 1, 0)
    back.send(protocol.Back())
    back.send(protocol.UserListRequest())
    next_of(back, protocol.UserList)
    back.close()
    assert next_of(bob, protocol.UserLeft) == protocol.UserLeft("ann")

    _, before = stamped(a, "ann", identity=key)  # on the first server: nothing new, not away
    assert [(u.new, u.shown) for u in before if isinstance(u, protocol.Unread)] == [(0, 0)]
    assert not [n for n in before if isinstance(n, protocol.Notice) and "still marked as away" in n.text]


def test_what_redis_keeps_by_key_and_a_field_no_server_wrote(identity_key, redis_server, caplog):
    joined = cluster.RedisCluster.connect(redis_server.url)
    try:
        kept = ClusterHistory(joined)
        kept.save_seen(ANN, Seen(1_733_570_000_123_000_004, 1_733_570_042))
        kept.save_away(ANN, "")
        raw = joined.redis
        assert raw.hget(SEEN, ANN) == b"1733570000123000004 1733570042"  # as PROTOCOL.md section 8 says
        assert raw.hget(AWAY_BY_KEY, ANN) == b"" and kept.away(ANN) == ""
        assert kept.seen(ANN) == Seen(1_733_570_000_123_000_004, 1_733_570_042)
        kept.save_away(ANN, None)
        assert kept.away(ANN) is None and raw.hexists(AWAY_BY_KEY, ANN) == 0
        raw.hset(SEEN, ANN, b"-1 yesterday")
        with caplog.at_level(logging.WARNING, "chat.cluster"):
            assert kept.seen(ANN) is None
        assert "not a server's" in caplog.text
        assert kept.count_after(0) == 0 and kept.mentioning("ann", 0, 0, 10) == []
    finally:
        joined.close()


def test_the_unread_count_reads_the_stream_a_slice_a_script(identity_key, redis_server, monkeypatch):
    monkeypatch.setattr(cluster_history, "READ_COUNT", 3)
    joined = cluster.RedisCluster.connect(redis_server.url)
    try:
        kept = ClusterHistory(joined)
        slices: list[int] = []
        script = kept._count
        kept._count = lambda keys, args: slices.append(int(args[2])) or script(keys=keys, args=args)
        line = cluster.encode_entry(ChatMessage("ann", "hi"), None)
        ids = [joined.redis.xadd(cluster.STREAM, line if n % 4 else {b"x": b"not a line"}) for n in range(10)]
        assert kept.count_after(0) == 7 and slices == [3] * 4  # 3 + 3 + 3 + 1 entries
        assert kept.count_after(cluster.line_id_of(ids[4])) == 4  # entries 5..9, of which 8 is no line
        monkeypatch.setattr(cluster_history, "COUNT_SLICES", 2)
        assert kept.count_after(0) == 4  # the first 6 entries at most: a bounded count
    finally:
        joined.close()


class FlappingRedis:
    """A cluster's Redis, in memory, whose first pipeline is held in its
    ``execute`` until ``released``, then fails (Redis lost and back)."""

    connected = True

    def __init__(self) -> None:
        self.redis, self.hashes = self, {}
        self.held, self.released = threading.Event(), threading.Event()

    def register_script(self, script: str) -> None:
        return None

    def pipeline(self, transaction: bool) -> FlappingRedis.Pipe:
        return FlappingRedis.Pipe(self)

    def call(self, command, *args, otherwise=None):
        try:
            return command(*args)
        except ConnectionError:
            return otherwise

    def hget(self, name: str, field: str) -> bytes | None:
        return self.hashes.get((name, field))

    class Pipe:
        def __init__(self, redis: FlappingRedis) -> None:
            self.redis, self.sets = redis, {}

        def hset(self, name: str, field: str, value: bytes) -> None:
            self.sets[name, field] = value

        def execute(self) -> None:
            if not self.redis.held.is_set():
                self.redis.held.set()
                assert self.redis.released.wait(DEADLINE)
                raise ConnectionError("lost")
            self.redis.hashes.update(self.sets)


def test_a_change_by_key_sent_while_an_older_one_is_failing_is_not_overwritten_by_it(thread_errors):
    redis = FlappingRedis()
    kept = ClusterHistory(redis)  # type: ignore[arg-type]
    first = threading.Thread(target=kept.save_seen, args=(ANN, Seen(1, 1)))
    first.start()
    assert redis.held.wait(DEADLINE)  # the older batch is being sent
    kept.save_seen(ANN, Seen(2, 2))  # left to the sender in flight, not sent beside it
    redis.released.set()
    first.join(DEADLINE)
    assert kept.seen(ANN) == Seen(2, 2)  # sent now, the older one failed: the newer is kept
    assert redis.hashes == {(SEEN, ANN): b"2 2"}
    assert not thread_errors


def test_a_lost_redis_is_a_clear_line_and_what_is_said_meanwhile_is_written_once_it_is_back(
    two_servers, redis_server, thread_errors, caplog
):
    a, b = two_servers
    bob, _ = stamped(b, "bob")
    first, _ = stamped(a, "ann")
    key = first.identity
    first.close()
    assert next_of(bob, protocol.UserLeft) == protocol.UserLeft("ann")
    cat, _ = stamped(a, "cat")
    bob.say("ann?")
    assert next_of(cat, protocol.StampedLine).text == "ann?"  # A has it
    ann, before = stamped(a, "ann", identity=key)  # her leaving is in Redis: she has a record
    assert [(u.new, u.shown) for u in before if isinstance(u, protocol.Unread)] == [(1, 1)]
    redis_server.stop()
    assert next_of(ann, protocol.Notice) == protocol.Notice(cluster.DEGRADED)
    ann.send(protocol.MentionsRequest())
    assert next_of(ann, protocol.ErrorNotice) == protocol.ErrorNotice(HISTORY_UNAVAILABLE)
    kept = a.server.room._store
    with pytest.raises(HistoryUnavailable):
        kept.count_after(0)
    with pytest.raises(OfflineUnavailable):  # the sender is told (WAITING_UNAVAILABLE), nothing kept unsaid
        a.server.offline.keep(ANN, "ann", "bob", "later?")
    assert a.server.offline.take(ANN) == []  # they wait on in Redis
    assert kept.seen(ANN) is None and kept.away(ANN) is None  # nothing known of this key here
    ann.send(protocol.Away("tea"))
    assert next_of(ann, protocol.Notice) == protocol.Notice("You are marked as away: tea")
    fingerprint = a.server.room.find("ann").fingerprint
    ann.close()
    assert next_of(cat, protocol.UserLeft) == protocol.UserLeft("ann")  # told here alone
    again, before = stamped(a, "ann", identity=key)  # a join while degraded: served from this server's own
    assert not [event for event in before if isinstance(event, protocol.Unread)]  # the stream cannot be counted
    assert protocol.Notice(STILL_AWAY.format(message="tea")) in before
    assert kept.seen(fingerprint) is not None

    redis_server.start()  # an empty Redis: what waited here is written to it
    while again.next_event(timeout=10) != protocol.Notice(cluster.RESTORED):
        pass
    kept.seen(ANN)  # the first read once Redis is back sends what waited
    raw = a.server.room.cluster.redis
    assert raw.hget(AWAY_BY_KEY, fingerprint) == b"tea" and raw.hexists(SEEN, fingerprint)
    assert thread_errors == [] and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_private_line_for_someone_offline_waits_in_redis_and_reaches_them_on_another_server(
    two_servers, redis_server
):
    a, b = two_servers
    bob, _ = stamped(b, "bob")
    alice, _ = stamped(a, "alice")  # her key registers the name, for every server
    key = alice.identity
    alice.close()
    assert next_of(bob, protocol.UserLeft) == protocol.UserLeft("alice")
    raw = b.server.room.cluster.redis  # her name is freed just after her leave is told
    assert wait_until(lambda: not raw.exists(cluster.name_key("alice")))
    bob.send(protocol.PrivateLine("alice", "the keys are under the mat"))
    assert next_of(bob, protocol.Notice) == protocol.Notice(KEPT_FOR_LATER.format(name="alice"))
    fingerprint = a.server.registrations.lookup("alice").fingerprint
    assert raw.llen(WAITING_PREFIX + fingerprint) == 1

    back = a.client(handshake=False)  # on the server she left, not the sender's
    back.handshake(identity=key, stamps=True)
    back.join("alice")
    kept = next_of(back, protocol.OfflineMessage)
    assert (kept.sender, kept.recipient, kept.text) == ("bob", "alice", "the keys are under the mat")
    assert raw.exists(WAITING_PREFIX + fingerprint) == 0  # deleted once given


def waiting_json(**fields: object) -> bytes:
    """A waiting list's element as a server writes it, with ``fields`` changed."""
    return json.dumps({"sender": "bob", "recipient": "alice", "text": "hi", "sent_at": NOW, **fields}).encode()


#: Elements of a waiting list no server wrote: each is skipped, not given.
BAD_WAITING = [
    b"not json",
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError
    b'"a string"',
    waiting_json(sender="x" * 40),  # only its name is wrong: too long to be one
    waiting_json(recipient="ann\x00"),
    waiting_json(sender=123),
    waiting_json(recipient=["alice"]),
    waiting_json(text=None),
    waiting_json(text="x" * (cluster.MAX_ENTRY_BYTES + 1)),
    waiting_json(sent_at="1764100000"),
    waiting_json(sent_at=True),
    waiting_json(sent_at=1.5),
    waiting_json(sent_at=-1),
    waiting_json(sent_at=2**32),
    waiting_json(text="far", sent_at=NOW).replace(str(NOW).encode(), b"1e999"),  # OverflowError
]


def test_waiting_lines_are_capped_given_once_checked_when_read_and_kept_within_redis_s_expiry(
    identity_key, redis_server, caplog
):
    joined = cluster.RedisCluster.connect(redis_server.url)
    try:
        offline = ClusterOffline(joined, keep_days=1, cap=2, clock=lambda: NOW)
        assert [offline.keep(ANN, "bob", "alice", f"line {n}") for n in range(3)] == [True, True, False]
        assert offline.count(ANN) == 2 and 0 < joined.redis.ttl(WAITING_PREFIX + ANN) <= 86_400
        offline.keep(BOB, "bob", "alice", "the keys are under the mat")
        spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text()
        vector = spec.split("to alice at 1764100000 is the list element", 1)[1].split("```text\n", 1)[1]
        assert joined.redis.lrange(WAITING_PREFIX + BOB, 0, -1) == [vector.split("\n", 1)[0].encode()]
        joined.redis.rpush(WAITING_PREFIX + ANN, *BAD_WAITING, waiting_json(text="after the bad ones"))
        with caplog.at_level(logging.WARNING, "chat.cluster"):
            taken = offline.take(ANN)
        given = [Waiting(ANN, "bob", "alice", text, NOW) for text in ("line 0", "line 1", "after the bad ones")]
        assert taken == given
        assert f"{len(BAD_WAITING)} waiting lines" in caplog.text
        assert offline.take(ANN) == [] and offline.count(ANN) == 0
        far = ClusterOffline(joined, keep_days=10**12, clock=lambda: NOW)  # past Redis's range: the longest
        assert far.keep(ANN, "bob", "alice", "see you in a while")  # not "invalid expire time"
        assert joined.connected and joined.redis.ttl(WAITING_PREFIX + ANN) == MAX_EXPIRY
    finally:
        joined.close()
