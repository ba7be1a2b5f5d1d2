"""Several servers, one chat: in-process servers sharing a real redis-server
on loopback (server/cluster.py). The real processes are in test_cluster_procs.py."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from socket_chat.chat import names
from socket_chat.chat.member import USERNAME_INVALID, USERNAME_LOOKS_TAKEN, USERNAME_TAKEN
from socket_chat.protocol import (
    ChatMessage,
    ErrorNotice,
    Goodbye,
    HistoryMessage,
    NickChanged,
    NickRequest,
    Notice,
    PrivateLine,
    PrivateMessage,
    UserJoined,
    UserLeft,
    UserList,
    UserListRequest,
    Username,
    UsernameRequest,
)
from socket_chat.server import app as server
from socket_chat.server import cluster, command_line
from socket_chat.server.command_line import parse_args
from socket_chat.server.console import OperatorConsole
from tests import procs
from tests.helpers import OwnServer


@pytest.fixture
def cluster_of(identity_key, redis_server):
    """``cluster_of(n)``: n servers on loopback sharing ``redis_server``."""
    servers: list[OwnServer] = []

    def start(count: int, name_ttl: float = cluster.DEFAULT_NAME_TTL) -> list[OwnServer]:
        for _ in range(count):
            own = OwnServer(identity_key)
            own.start(cluster=cluster.RedisCluster.connect(redis_server.url, name_ttl=name_ttl))
            servers.append(own)
        return servers[-count:]

    try:
        yield start
    finally:
        for own in servers:
            own.cleanup()


def next_of(client, event_type):
    """The next event of ``event_type``, skipping others (joins, for one)."""
    while not isinstance(event := client.next_event(), event_type):
        pass
    return event


def assert_taken(own: OwnServer, name: str) -> None:
    """A newcomer on ``own`` asking for ``name`` is told it is taken."""
    newcomer = own.client()
    newcomer.send(Username(name))
    assert newcomer.expect(UsernameRequest).prompt == USERNAME_TAKEN


def chat_from(client, count: int) -> list[str]:
    """The texts of the next ``count`` chat messages, skipping notices."""
    texts = []
    while len(texts) < count:
        event = client.next_event()
        if isinstance(event, ChatMessage):
            texts.append(f"{event.sender}: {event.text}")
    return texts


def test_a_line_said_on_one_server_reaches_the_others_and_not_its_sender(cluster_of):
    a, b, c = cluster_of(3)
    alice = a.client("alice")
    bob = b.client("bob")
    assert alice.expect(UserJoined) == UserJoined("bob")
    carol = c.client("carol")
    assert alice.expect(UserJoined) == UserJoined("carol")
    # Bob may hear Alice's join too, late: server B can read it from the
    # stream after Bob joined (a known glitch: a join read late is not told
    # from a new one). Nothing else comes before Carol's.
    assert bob.events_until(UserJoined("carol")) in ([], [UserJoined("alice")])

    alice.say("hi from A")
    assert bob.expect(ChatMessage) == ChatMessage("alice", "hi from A")
    assert carol.expect(ChatMessage) == ChatMessage("alice", "hi from A")
    carol.say("hi from C")
    # The first thing Alice hears is Carol's line: her own, earlier in the
    # cluster's one order, did not come back to her.
    assert alice.expect(ChatMessage) == ChatMessage("carol", "hi from C")
    assert bob.expect(ChatMessage) == ChatMessage("carol", "hi from C")


def test_every_client_on_every_server_sees_the_same_order(cluster_of):
    a, b = cluster_of(2)
    watchers = [a.client("watcher-a"), b.client("watcher-b")]
    senders = [a.client("sender-a1"), a.client("sender-a2"), b.client("sender-b1")]
    lines_each = 15  # within the burst: none is refused by flood control
    start = threading.Barrier(len(senders))

    def talk(client, label):
        start.wait(5)
        for number in range(lines_each):
            client.say(f"{label} {number}")

    threads = [threading.Thread(target=talk, args=(client, f"s{i}")) for i, client in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    seen = [chat_from(watcher, lines_each * len(senders)) for watcher in watchers]
    assert seen[0] == seen[1]
    assert sorted(seen[0]) == sorted(
        f"sender-{name}: s{i} {n}" for i, name in enumerate(["a1", "a2", "b1"]) for n in range(lines_each)
    )


def test_a_name_is_one_persons_across_the_cluster_even_when_claimed_at_once(cluster_of):
    a, b = cluster_of(2)
    rounds = 10
    clients = [(a.client(), b.client()) for _ in range(rounds)]
    for round_number, pair in enumerate(clients):
        start = threading.Barrier(2)

        def claim(client):
            start.wait(5)
            client.send(Username(f"Nova{round_number}"))

        threads = [threading.Thread(target=claim, args=(client,)) for client in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        answers = sorted(type(client.next_event()).__name__ for client in pair)
        assert answers == ["UsernameRequest", "Welcome"], f"round {round_number}: {answers}"


def test_names_differ_only_in_case_are_the_same_name_across_servers(cluster_of):
    a, b = cluster_of(2)
    a.client("Zoë")
    assert_taken(b, "ZOË")


@pytest.mark.parametrize(
    ("impostor", "prompt"),
    [
        ("ａｄｍｉｎ", USERNAME_LOOKS_TAKEN.format(holder="admin")),
        ("ADMIN\ufe0f", USERNAME_INVALID.format(reason="contains an invisible character (U+FE0F)")),
        ("\u0430dmin", USERNAME_INVALID.format(reason="mixes Cyrillic and Latin letters")),
        ("admin: hi", USERNAME_INVALID.format(reason="may not contain ':'")),
    ],
    ids=["fullwidth", "fe0f", "cyrillic", "colon"],
)
def test_a_look_alike_of_a_name_held_on_another_server_is_refused(cluster_of, impostor, prompt):
    a, b = cluster_of(2)
    a.client("admin")
    newcomer = b.client()
    newcomer.send(Username(impostor))
    assert newcomer.expect(UsernameRequest).prompt == prompt


def test_names_are_claimed_in_redis_by_their_key_and_kept_as_typed(cluster_of, redis_server):
    (a,) = cluster_of(1)
    a.client("Ａdmin")  # fullwidth A: shown as typed
    import redis

    with redis.Redis.from_url(redis_server.url) as raw:
        assert raw.hget(cluster.NAME_PREFIX + names.key("admin"), "name") == "Ａdmin".encode()


def test_nick_and_private_lines_use_the_key_across_servers(cluster_of):
    a, b = cluster_of(2)
    admin = a.client("admin")
    eve = b.client("eve")
    next_of(admin, UserJoined)

    eve.send(NickRequest("ＡＤＭＩＮ"))
    assert next_of(eve, ErrorNotice).text == "The username ＡＤＭＩＮ looks the same as admin, who is online."
    eve.send(PrivateLine("ADMIN", "psst"))  # found by the same key
    assert next_of(admin, PrivateMessage) == PrivateMessage("eve", "admin", "psst")


def test_a_name_comes_free_across_the_cluster_when_its_holder_leaves(cluster_of):
    a, b = cluster_of(2)
    first = a.client("Moss")
    watcher = b.client("watcher")
    first.close()
    assert next_of(watcher, UserLeft) == UserLeft("Moss")  # Moss's join may come through the stream first
    b.client("Moss")  # join() asserts the Welcome


def test_a_new_name_follows_the_cluster_rules_and_frees_the_old_one(cluster_of):
    a, b = cluster_of(2)
    alice = a.client("alice")
    bob = b.client("bob")
    next_of(alice, UserJoined)
    alice.send(NickRequest("BOB"))  # held on the other server
    assert "taken" in next_of(alice, ErrorNotice).text
    alice.send(NickRequest("Ally"))
    assert next_of(bob, NickChanged) == NickChanged("alice", "Ally")
    assert next_of(alice, NickChanged) == NickChanged("alice", "Ally")
    b.client("alice")  # the old name is free again, across the cluster
    assert_taken(b, "ally")


def test_users_lists_everyone_on_every_server(cluster_of):
    a, b = cluster_of(2)
    alice = a.client("alice")
    b.client("bob")
    alice.expect(UserJoined)
    alice.send(UserListRequest())
    names = [line.split("\t")[0] for line in alice.expect(UserList).entries.split("\n")]
    assert names == ["alice", "bob"]


def test_a_private_line_reaches_its_recipient_on_another_server_only(cluster_of):
    a, b = cluster_of(2)
    alice = a.client("alice")
    bob = b.client("Bob")
    carol = b.client("carol")
    alice.send(PrivateLine("bob", "psst"))  # any case, as on one server
    assert next_of(alice, PrivateMessage) == PrivateMessage("alice", "Bob", "psst")  # the receipt
    assert next_of(bob, PrivateMessage) == PrivateMessage("alice", "Bob", "psst")
    alice.say("public")  # along the same stream, after the private line
    assert carol.events_until(ChatMessage("alice", "public")) == []


def test_a_newcomer_on_any_server_gets_the_history_even_of_a_server_started_later(cluster_of):
    (a,) = cluster_of(1)
    alice = a.client("alice")
    alice.say("first")
    alice.say("second")
    watcher = a.client("watcher")
    assert [m.text for m in (watcher.expect(HistoryMessage), watcher.expect(HistoryMessage))] == ["first", "second"]

    (late,) = cluster_of(1)  # reads the stream's tail when it starts
    newcomer = late.client("newcomer")
    history = [newcomer.expect(HistoryMessage) for _ in range(2)]
    assert [(m.sender, m.text, m.kind) for m in history] == [("alice", "first", "chat"), ("alice", "second", "chat")]


def test_when_redis_is_lost_local_chat_goes_on_and_the_cluster_comes_back(cluster_of, redis_server, thread_errors):
    a, b = cluster_of(2)
    alice, amy = a.client("alice"), a.client("amy")
    bob = b.client("bob")
    for client in (alice, amy):
        client.expect(UserJoined)  # bob (and amy, for alice)
    alice.expect(UserJoined)

    redis_server.stop()
    for client in (alice, amy, bob):
        assert client.expect(Notice) == Notice(cluster.DEGRADED)
    alice.say("still here?")
    assert amy.expect(ChatMessage) == ChatMessage("alice", "still here?")  # this server goes on

    redis_server.start()
    for client in (alice, amy, bob):
        assert client.expect(Notice, timeout=10) == Notice(cluster.RESTORED)
    bob.say("back")
    assert alice.expect(ChatMessage) == ChatMessage("bob", "back")
    assert amy.expect(ChatMessage) == ChatMessage("bob", "back")
    alice.say("and now?")
    assert bob.events_until(ChatMessage("alice", "and now?")) == []  # "still here?" stayed on A
    # The names were claimed again in the new Redis: still one person's each.
    assert_taken(b, "alice")
    assert thread_errors == []


def test_a_member_whose_name_another_server_took_during_an_outage_is_told_and_disconnected(cluster_of, redis_server):
    # After an outage two servers may each have given a name away; the first
    # to claim it again keeps it. Here "another server" wins the claim.
    (a,) = cluster_of(1, name_ttl=0.6)
    stranded = a.client("Echo")
    import redis

    with redis.Redis.from_url(redis_server.url) as raw:
        raw.hset(cluster.name_key("Echo"), "server", "another-server")
    goodbye = next_of(stranded, Goodbye)  # at the next refresh, within 0.2 s
    assert goodbye.reason == cluster.NAME_LOST.format(name="Echo")
    stranded.wait_closed()


def test_an_entry_that_is_not_the_chats_is_skipped_with_a_warning(cluster_of, redis_server, caplog):
    a, b = cluster_of(2)
    alice, bob = a.client("alice"), b.client("bob")
    alice.expect(UserJoined)
    import redis

    with redis.Redis.from_url(redis_server.url) as raw:
        raw.xadd(cluster.STREAM, {"something": "else"})
    with caplog.at_level(logging.WARNING, logger="chat.cluster"):
        alice.say("after the junk")
        assert bob.expect(ChatMessage) == ChatMessage("alice", "after the junk")
    assert "skipped stream entry" in caplog.text


def test_what_one_read_of_the_stream_brings_is_delivered_together(redis_server):
    """The cluster thread hands the room every entry of one XREAD at once,
    in the stream's order (each member's writer then seals them together)."""
    delivered = threading.Event()

    class Room:
        def __init__(self) -> None:
            self.batches: list = []

        def names(self):
            return []

        def record_history(self, message, sent_at, line_id=None):
            pass

        def distribute_all(self, entries, ids=None):
            self.batches.append([(message, sender) for message, sender, _ in entries])
            if sum(map(len, self.batches)) >= 3:
                delivered.set()

    room = Room()
    joined = cluster.RedisCluster.connect(redis_server.url)
    joined.attach(room)  # type: ignore[arg-type]
    lines = [ChatMessage("alice", f"line {n}") for n in range(3)]
    import redis

    try:
        joined.start()
        with redis.Redis.from_url(redis_server.url) as raw, raw.pipeline(transaction=True) as pipe:
            for line in lines:  # all three land at once
                pipe.xadd(cluster.STREAM, cluster.encode_entry(line, "3f2a9c01b7e4/1"))
            pipe.execute()
        assert delivered.wait(10)
    finally:
        joined.close()
    assert room.batches == [[(line, "3f2a9c01b7e4/1") for line in lines]]


def test_published_lines_reach_the_stream_in_order_even_when_closed_at_once(redis_server):
    """publish does not wait for Redis (the publisher thread adds what is
    waiting in one round trip), yet nothing is lost or reordered, and what
    waits when the server closes still goes out."""

    class Room:
        def names(self):
            return []

        def record_history(self, message, sent_at, line_id=None):
            pass

        def distribute_all(self, entries, ids=None):
            pass

        def distribute(self, message, sender_id, sent_at=None):
            raise AssertionError("delivered here: Redis was never lost")

    joined = cluster.RedisCluster.connect(redis_server.url)
    joined.attach(Room())  # type: ignore[arg-type]
    joined.start()
    lines = [ChatMessage("alice", f"line {n}") for n in range(200)]
    senders = [threading.Thread(target=joined.publish, args=(line, "3f2a9c01b7e4/1")) for line in lines[:100]]
    for line in lines:  # one reader's lines, in its order, with others' around them
        joined.publish(line, "3f2a9c01b7e4/2")
    joined.close()
    for thread in senders:
        thread.start()  # after close: each goes out at once, not into a queue nobody reads
        thread.join(10)
    import redis

    with redis.Redis.from_url(redis_server.url) as raw:
        entries = [cluster.decode_entry(fields) for _, fields in raw.xrange(cluster.STREAM)]
    ours = [message for message, sender in entries if sender == "3f2a9c01b7e4/2"]
    assert ours == lines
    assert sorted(m.text for m, sender in entries if sender == "3f2a9c01b7e4/1") == sorted(m.text for m in lines[:100])


def test_redis_that_does_not_answer_at_start_is_a_clear_error(redis_server):
    url = redis_server.url
    redis_server.stop()
    with pytest.raises(cluster.ClusterUnavailable, match=r"Cannot reach the cluster at redis://127\.0\.0\.1:\d+/0"):
        cluster.RedisCluster.connect(url)


def test_a_server_that_compares_names_by_other_rules_may_not_join(redis_server):
    """Two Pythons of other Unicode versions could each admit a look-alike of
    the other's member: the cluster keeps one names.RULES."""
    import redis

    first = cluster.RedisCluster.connect(redis_server.url, name_ttl=30.0)
    with redis.Redis.from_url(redis_server.url) as raw:
        assert raw.get(cluster.NAMES_RULES) == names.RULES.encode()
        assert 0 < raw.pttl(cluster.NAMES_RULES) <= 30_000  # it lapses once no server keeps it
        first.close()
        other = names.RULES.replace("unicode/", "unicode/0.")
        raw.set(cluster.NAMES_RULES, other)
        with pytest.raises(cluster.ClusterIncompatible) as refused:
            cluster.RedisCluster.connect(redis_server.url)
        assert other in str(refused.value) and names.RULES in str(refused.value)
        assert raw.get(cluster.NAMES_RULES) == other.encode()  # the cluster's rules stand


def test_a_server_of_other_name_rules_says_why_and_does_not_start(redis_server, tmp_path, capsys):
    import redis

    with redis.Redis.from_url(redis_server.url) as raw:
        raw.set(cluster.NAMES_RULES, "names/1 unicode/0.0.0 ucd/15.0.0 confusables/13.0.0")
    key = procs.private_key_copy(tmp_path / "key")
    argv = ["--key", str(key), "--host", "127.0.0.1", "--port", "0", "--cluster", redis_server.url]
    assert command_line.main(argv) == command_line.EXIT_USAGE  # not "try again later": the set-up is wrong
    assert "its servers compare usernames by other rules (names/1 unicode/0.0.0" in capsys.readouterr().err


def test_the_servers_default_name_expiry_is_the_clusters():
    assert parse_args([]).cluster_name_ttl == cluster.DEFAULT_NAME_TTL


def test_a_password_in_the_address_is_never_shown():
    assert cluster.redacted("redis://chat:s3cret@db.example:6379/2") == "redis://chat:***@db.example:6379/2"
    assert cluster.redacted("redis://db.example:6379/0") == "redis://db.example:6379/0"
    with pytest.raises(ValueError, match=r"\*\*\*") as raised:
        cluster.check_url("http://chat:s3cret@db.example/")
    assert "s3cret" not in str(raised.value)


def test_the_entry_in_protocol_md_is_what_a_server_writes():
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vector = dict(re.findall(r"^(m|from) += (\S+)$", spec.split("## 8.")[1], re.M))
    entry = cluster.encode_entry(ChatMessage("alice", "hi"), "3f2a9c01b7e4/1")
    assert vector == {"m": entry[b"m"].hex(), "from": entry[b"from"].decode()}


def test_an_entry_round_trips_and_one_from_elsewhere_is_refused():
    message = ChatMessage("alice", "hi")
    assert cluster.decode_entry(cluster.encode_entry(message, "3f2a9c01b7e4/1")) == (message, "3f2a9c01b7e4/1")
    assert cluster.decode_entry(cluster.encode_entry(message, None)) == (message, None)
    with pytest.raises(ValueError):
        cluster.decode_entry({b"something": b"else"})
    with pytest.raises(ValueError):
        cluster.decode_entry({b"m": b"\xff\x00", b"from": b""})
    assert cluster.entry_time(b"1700000000123-4") == 1700000000.123


def test_the_operator_console_sees_the_cluster_and_kicks_on_its_own_server(cluster_of):
    a, b = cluster_of(2)
    a.client("alice")
    bob = b.client("bob")
    operator = OperatorConsole(a.server)
    assert [line.split(" (")[0] for line in operator.execute("/users")] == ["2 online:", "  alice", "  bob"]
    assert operator.execute("/kick bob") == ["bob is on another server of the cluster: kick them there."]
    operator.execute("/say hello all")
    assert next_of(bob, Notice) == Notice("Notice from the operator: hello all")


def test_a_server_stops_promptly_while_redis_is_down_and_leaves_no_thread(cluster_of, redis_server, thread_errors):
    (a,) = cluster_of(1)
    alice = a.client("alice")
    redis_server.stop()
    assert next_of(alice, Notice) == Notice(cluster.DEGRADED)
    alice.say("alone")  # goes on, here, while the cluster thread retries
    before = {thread.name for thread in threading.enumerate()}
    assert "cluster" in before
    a.stop()  # joins every thread it started, within its grace periods
    assert next_of(alice, Goodbye) == Goodbye(server.SHUTTING_DOWN)
    assert "cluster" not in {thread.name for thread in threading.enumerate()}
    assert a.server.connection_count() == 0
    assert thread_errors == []
