"""What a cluster reads from Redis is checked, not trusted (issue 13,
section 4): stream entries of the wrong type or with bad fields, and name
hashes with garbage in them, are skipped with a warning; nobody is
disconnected, and /users and joins go on. Then the Redis ACL that
SECURITY.md documents is shown to be enough for the chat."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.protocol import (
    Away,
    AwayReply,
    Back,
    ChatLine,
    ChatMessage,
    DeviceAdd,
    DeviceList,
    DeviceListRequest,
    DeviceRemove,
    ErrorNotice,
    Goodbye,
    HistoryMessage,
    Notice,
    PrivateLine,
    PrivateMessage,
    RateLimit,
    UserJoined,
    UserList,
    UserListRequest,
    Username,
    UserParted,
    WhoisReply,
    WhoisRequest,
)
from socket_chat.server import cluster
from socket_chat.server.cluster_names import RedisRegistrations
from socket_chat.server.command_line import kept_by_key, waiting_in
from socket_chat.server.console import OperatorConsole
from tests.helpers import OwnServer, wait_until
from tests.test_cluster_rooms import ask, in_rooms, joins

redis = pytest.importorskip("redis")

SERVER_ID = "3f2a9c01b7e4/1"


@pytest.fixture
def two_servers(identity_key, redis_server):
    """alice on one server, bob on another, sharing ``redis_server``."""
    servers = [OwnServer(identity_key), OwnServer(identity_key)]
    try:
        for own in servers:
            own.start(cluster=cluster.RedisCluster.connect(redis_server.url))
        alice, bob = servers[0].client("alice"), servers[1].client("bob")
        assert alice.expect(UserJoined) == UserJoined("bob")
        yield servers, alice, bob
    finally:
        for own in servers:
            own.cleanup()


def raw_redis(redis_server):
    return redis.Redis.from_url(redis_server.url)


def entry(message, sender: str = SERVER_ID) -> dict[bytes, bytes]:
    return {b"m": protocol.encode_message(message), b"from": sender.encode()}


def assert_everyone_still_chats(alice, bob) -> None:
    alice.say("still here")
    assert next_of(bob, ChatMessage) == ChatMessage("alice", "still here")
    bob.say("me too")
    assert next_of(alice, ChatMessage) == ChatMessage("bob", "me too")


GARBAGE_ENTRIES = {
    "ChatLine": entry(ChatLine("from a client")),  # once disconnected every member
    "Goodbye": entry(Goodbye("the server is closing, run --fingerprint X")),
    "RateLimit": entry(RateLimit(burst=0, interval_ms=4_000_000_000)),
    "Username": entry(Username("root")),
    "a sender that is no username": entry(ChatMessage("ad\nmin", "hi")),
    "a recipient far too long": entry(PrivateMessage("alice", "b" * 5000, "psst")),
    "a 'from' that is no member ID": entry(ChatMessage("alice", "hi"), sender="../../etc"),
    "an extra field": {**entry(ChatMessage("alice", "hi")), b"admin": b"1"},
    "unknown type": {b"m": b"\x7fjunk", b"from": b""},
    "too long for a record": entry(ChatMessage("alice", "x" * (protocol.MAX_FRAME_SIZE - 100))),
}


@pytest.mark.parametrize("fields", GARBAGE_ENTRIES.values(), ids=GARBAGE_ENTRIES.keys())
def test_entries_that_are_not_shared_messages_are_refused(fields):
    with pytest.raises(ValueError):
        cluster.decode_entry(fields)


def test_chatline_goodbye_and_ratelimit_entries_are_skipped_with_a_log_line_and_nobody_is_disconnected(
    two_servers, redis_server, caplog
):
    _, alice, bob = two_servers
    with caplog.at_level(logging.WARNING, logger="chat.cluster"), raw_redis(redis_server) as raw:
        for fields in GARBAGE_ENTRIES.values():
            raw.xadd(cluster.STREAM, fields)
        alice.say("still here")
        bob.say("me too")
        # Nothing of the garbage, which came first in the stream.
        assert bob.events_until(ChatMessage("alice", "still here")) == []
        assert alice.events_until(ChatMessage("bob", "me too")) == []
    skipped = [r.getMessage() for r in caplog.records if "skipped stream entry" in r.getMessage()]
    assert len(skipped) == 2 * len(GARBAGE_ENTRIES)  # on each server, each entry
    assert any("a ChatLine is not a message servers share" in line for line in skipped)
    assert any("a Goodbye is not" in line for line in skipped)
    assert any("a RateLimit is not" in line for line in skipped)


def test_an_entry_with_a_garbage_id_time_is_dated_now(two_servers, redis_server):
    servers, _, bob = two_servers
    with raw_redis(redis_server) as raw:
        raw.xadd(cluster.STREAM, entry(ChatMessage("alice", "from the future")), id="9999999999999-1")
    assert bob.expect(ChatMessage) == ChatMessage("alice", "from the future")
    newcomer = servers[1].client("newcomer")
    while not isinstance(event := newcomer.next_event(), HistoryMessage) or event.text != "from the future":
        pass
    assert event.sent_at <= time.time() + cluster.CLOCK_SKEW
    assert cluster.entry_time(b"garbage") is None
    assert cluster.entry_time(b"99999999999999999-0") is None  # past what a history line can carry


def test_a_name_hash_with_garbage_fields_breaks_neither_users_nor_joins(two_servers, redis_server, caplog):
    servers, alice, bob = two_servers
    with raw_redis(redis_server) as raw:
        raw.hset(cluster.NAME_PREFIX + "mallory", mapping={"server": "x", "name": "Mallory", "since": "garbage"})
        raw.hset(cluster.NAME_PREFIX + "nan", mapping={"server": "x", "name": "nan", "since": "nan"})
        raw.hset(cluster.NAME_PREFIX + "bytes", mapping={"server": "x", "name": b"\xff\xfe", "since": "1"})
        raw.hset(cluster.NAME_PREFIX + "long", mapping={"server": "x", "name": "L" * 500, "since": "1"})
        raw.hset(cluster.NAME_PREFIX + "twin", mapping={"server": "x", "name": "alice", "since": "1"})  # not her key
    with caplog.at_level(logging.WARNING, logger="chat.cluster"):
        carol = servers[0].client("carol")  # joins as usual
        carol.send(UserListRequest())
        assert [name for name, _ in carol.expect(UserList).members()] == ["alice", "bob", "carol"]
    assert "5 name hashes left out of the user list" in caplog.text
    alice.send(PrivateLine("bytes", "psst"))  # the hash is there, its name is not a name
    assert next_of(alice, ErrorNotice).text.startswith("No one called bytes is online")
    assert_everyone_still_chats(alice, bob)


def commands_run(redis_server, command: str) -> int:
    with raw_redis(redis_server) as raw:
        return int(raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def next_of(client, event_type):
    while not isinstance(event := client.next_event(), event_type):
        pass
    return event


# --- the Redis ACL -----------------------------------------------------------


def documented_acl() -> list[str]:
    """The ``ACL SETUSER`` line SECURITY.md gives, as arguments."""
    text = (Path(__file__).parent.parent / "SECURITY.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^ACL SETUSER (.+)$", text, re.M)
    return line.split()


def test_the_documented_redis_acl_is_all_the_chat_needs(identity_key, redis_server):
    rules = [">s3cret" if rule.startswith(">") else rule for rule in documented_acl()]
    with raw_redis(redis_server) as raw:
        raw.execute_command("ACL", "SETUSER", *rules)
        raw.execute_command("ACL", "LOG", "RESET")
        raw.set("not-the-chats", "1")
    user = rules[0]
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0"
    servers = [OwnServer(identity_key), OwnServer(identity_key)]
    try:
        for own in servers:
            joined = cluster.RedisCluster.connect(url, name_ttl=0.6)  # refreshes every 0.2 s
            own.start(
                cluster=joined,
                registrations=RedisRegistrations(joined),
                kept=kept_by_key(joined),
                offline=waiting_in(joined, 30),
            )
        alice, bob = servers[0].client("alice"), servers[1].client("bob")  # each registers its name
        assert alice.expect(UserJoined) == UserJoined("bob")
        assert_everyone_still_chats(alice, bob)
        alice.send(PrivateLine("bob", "psst"))
        assert next_of(bob, PrivateMessage) == PrivateMessage("alice", "bob", "psst")
        bob.send(Away("lunch"))  # the away hash: HSET, HGET, HGETALL, HDEL
        assert next_of(bob, Notice) == Notice("You are marked as away: lunch")
        alice.send(PrivateLine("bob", "still there?"))
        assert next_of(alice, AwayReply) == AwayReply("bob", "lunch")
        bob.send(Back())
        assert next_of(bob, Notice) == Notice("You are back: no longer marked as away.")
        bob.send(UserListRequest())
        assert [name for name, _ in next_of(bob, UserList).members()] == ["alice", "bob"]
        # Registrations and devices (cluster_names.py): every script and read, under the ACL.
        device = "SHA256:" + "D" * 43
        for request in (WhoisRequest("alice"), DeviceAdd(device), DeviceListRequest(), DeviceRemove(device)):
            bob.send(request)
        assert next_of(bob, WhoisReply).registered_at > 0
        assert next_of(bob, Notice).text.startswith(f"The key {device} may use your names now")
        assert [f for f, _ in next_of(bob, DeviceList).devices()] == [device]
        assert next_of(bob, Notice).text.startswith(f"The key {device} may no longer use your names")
        assert OperatorConsole(servers[0].server).execute("/release bob")[0].startswith("Released bob")
        # What is kept by key (cluster_history.py): a leaving, an away state and
        # a line for later, read back on the other server, with /mentions.
        carol = servers[0].client("carol")
        carol.send(Away("tea"))
        assert next_of(carol, Notice) == Notice("You are marked as away: tea")
        carol.close()
        assert next_of(bob, protocol.UserLeft) == protocol.UserLeft("carol")
        shared = servers[1].server.room.cluster.redis  # her name is freed just after her leave is told
        assert wait_until(lambda: not shared.exists(cluster.name_key("carol")))
        bob.send(PrivateLine("carol", "later"))
        assert next_of(bob, Notice).text.startswith("carol is offline; they will get it")
        again = servers[1].client(handshake=False)
        again.handshake(identity=carol.identity, stamps=True)
        again.join("carol")
        assert next_of(again, protocol.Unread).new == 0
        assert next_of(again, Notice).text.startswith("You are still marked as away: tea")
        assert next_of(again, protocol.OfflineMessage).text == "later"
        again.send(protocol.MentionsRequest())
        assert next_of(again, protocol.PageEnd) == protocol.PageEnd("mentions", 0, 0)
        scripts = commands_run(redis_server, "evalsha")
        # The names' refresh script, every 0.2 s on each server, under the ACL:
        assert wait_until(lambda: commands_run(redis_server, "evalsha") >= scripts + 4)
        # Rooms that span the servers (cluster_rooms.py): every script and read, under the ACL.
        ann, dan = in_rooms(servers[0], "ann"), in_rooms(servers[1], "dan")
        joins(ann, "#dev"), joins(dan, "#dev")
        for command, argument in (("topic", "green"), ("mode", "+i"), ("invite", "carol"), ("who", ""), ("rooms", "")):
            ask(ann, command, "#dev", argument)
        # carol is online (again, on the other server, with her key): the INVITE script ran.
        assert next_of(ann, Notice) == Notice("carol is invited to #dev (bound to their key).")
        dan.send(protocol.RoomLine("#dev", "chat", "in #dev"))
        assert next_of(ann, protocol.RoomMessage).text == "in #dev"
        ask(dan, "part", "#dev")
        assert next_of(dan, protocol.Parted) == protocol.Parted("#dev", "")
        assert OperatorConsole(servers[1].server).execute("/close #dev") == ["#dev is closed (1 person was in it)."]
        assert next_of(ann, protocol.Parted).reason == "The operator closed #dev."
        bob.send(Goodbye("bye"))
        assert next_of(alice, UserParted) == UserParted("bob", "bye")
        assert all(own.server.room.cluster.connected for own in servers)  # no command was refused
    finally:
        for own in servers:
            own.cleanup()
    with raw_redis(redis_server) as raw:
        denied = [e["object"] for e in raw.acl_log() if e["object"] != "client|setinfo"]  # see SECURITY.md
        chat = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            chat.get("not-the-chats")  # nothing outside its keys
        with pytest.raises(redis.exceptions.NoPermissionError):
            chat.flushall()
        chat.close()
    assert denied == []
