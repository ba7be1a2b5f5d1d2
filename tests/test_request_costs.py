"""Work that flood control must count (issue 13, section 3): every request
a client sends after the handshake is charged to its token bucket, username
attempts are capped, and a cluster's user list is not a SCAN per /users."""

from __future__ import annotations

import pytest

from socket_chat.chat.member import MAX_USERNAME_ATTEMPTS, TOO_MANY_USERNAMES, USERNAME_TAKEN
from socket_chat.chat.room import LocalCluster
from socket_chat.protocol import (
    ErrorNotice,
    Goodbye,
    PrivateLine,
    PrivateMessage,
    UserJoined,
    UserList,
    UserListRequest,
    Username,
    UsernameRequest,
    Welcome,
)
from socket_chat.server import cluster
from tests.helpers import ChatTestClient, OwnServer


class CountingCluster(LocalCluster):
    """The cluster of one, counting the calls that would go to Redis."""

    def __init__(self) -> None:
        self.claims: list[str] = []
        self.locates: list[str] = []

    def claim(self, name: str, fingerprint: str | None = None) -> bool:
        self.claims.append(name)
        return super().claim(name, fingerprint)

    def locate(self, name: str) -> str | None:
        self.locates.append(name)
        return super().locate(name)


def send_unreadable(client: ChatTestClient) -> None:
    """An authentic record holding a message of no known type."""
    client.conn.send_raw_record(bytes([0x7F]) + b"junk")
    client.flush()


@pytest.fixture
def strict_server(own_server):
    """A server that lets a client send 3 messages, then next to none."""
    own_server.start(rate=0.001, burst=3)
    return own_server


def test_user_list_requests_are_charged_to_flood_control(strict_server):
    ann = strict_server.client("Ann")
    for _ in range(4):
        ann.send(UserListRequest())
    for _ in range(3):
        assert [name for name, _ in ann.expect(UserList).members()] == ["Ann"]
    assert "Slow down: the user list was not sent" in ann.expect(ErrorNotice).text
    ann.say("and a line")  # the same bucket
    assert 'Slow down: "and a line" was not sent' in ann.expect(ErrorNotice).text


def test_unreadable_messages_are_charged_to_flood_control_and_the_connection_stays(strict_server):
    ann, bob = strict_server.client("Ann"), strict_server.client("Bob")
    ann.expect(UserJoined)
    for _ in range(4):
        send_unreadable(bob)
    for _ in range(3):
        assert "Message not understood" in bob.expect(ErrorNotice).text
    assert "Slow down: it was not answered" in bob.expect(ErrorNotice).text
    bob.say("still here")
    assert "Slow down" in bob.expect(ErrorNotice).text  # the bucket is empty, the connection open


def test_messages_out_of_place_are_charged_before_and_after_joining(strict_server):
    newcomer = strict_server.client()
    for _ in range(4):
        newcomer.say("before a name")
    for _ in range(3):
        assert newcomer.expect(ErrorNotice) == ErrorNotice("Choose a username first.")
    assert "Slow down" in newcomer.expect(ErrorNotice).text
    assert isinstance(newcomer.join("Late"), Welcome)  # a username is still taken
    newcomer.send(Username("again"))
    assert "Slow down" in newcomer.expect(ErrorNotice).text


def test_username_attempts_are_capped_then_the_connection_closes_with_the_reason(identity_key):
    counted = CountingCluster()
    own = OwnServer(identity_key)
    own.start(cluster=counted)
    try:
        own.client("Taken")
        guesser = own.client()
        for attempt in range(1, MAX_USERNAME_ATTEMPTS + 1):
            guesser.send(Username("taken"))
            if attempt < MAX_USERNAME_ATTEMPTS:
                assert guesser.expect(UsernameRequest).prompt == USERNAME_TAKEN
        assert guesser.expect(Goodbye) == Goodbye(TOO_MANY_USERNAMES)
        assert guesser.wait_closed().clean
        # Each attempt is at most one claim: in a cluster, one Redis call.
        assert counted.claims.count("taken") == MAX_USERNAME_ATTEMPTS
        own.client("Fresh")  # the server is unharmed
    finally:
        own.cleanup()


@pytest.mark.parametrize("recipient", ["x" * 5000, "bad\nname", " "], ids=["long", "control", "blank"])
def test_a_private_line_to_what_cannot_be_a_name_is_refused_before_any_lookup(identity_key, recipient):
    counted = CountingCluster()
    own = OwnServer(identity_key)
    own.start(cluster=counted)
    try:
        ann = own.client("Ann")
        ann.send(PrivateLine(recipient, "psst"))
        refusal = ann.expect(ErrorNotice).text
        assert refusal.endswith("is online; the private message was not sent.") and len(refusal) < 120
        assert counted.locates == []
        ann.send(PrivateLine(" Ann ", "to myself"))  # normalized, then looked up as usual
        assert ann.expect(PrivateMessage) == PrivateMessage("Ann", "Ann", "to myself")
    finally:
        own.cleanup()


def commands_run(redis_url: str, command: str) -> int:
    import redis

    with redis.Redis.from_url(redis_url) as raw:
        return int(raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_the_clusters_user_list_is_read_once_for_many_requests_and_again_after_a_join(identity_key, redis_server):
    own = OwnServer(identity_key)
    own.start(cluster=cluster.RedisCluster.connect(redis_server.url), rate=0)
    try:
        ann = own.client("Ann")
        watcher = own.client("Watcher")
        assert ann.expect(UserJoined) == UserJoined("Watcher")  # the last join, read back from the stream
        before = commands_run(redis_server.url, "scan")
        for _ in range(10):
            ann.send(UserListRequest())
        for _ in range(10):
            assert [name for name, _ in ann.expect(UserList).members()] == ["Ann", "Watcher"]
        assert commands_run(redis_server.url, "scan") - before == 1
        own.client("Bob")
        assert ann.expect(UserJoined) == UserJoined("Bob")  # read back from the stream: the list is stale
        ann.send(UserListRequest())
        assert [name for name, _ in ann.expect(UserList).members()] == ["Ann", "Bob", "Watcher"]
        watcher.close()
    finally:
        own.cleanup()
