"""Registered names across a cluster (server/cluster_names.py): in-process
servers sharing a real redis-server on loopback agree on whose a name is,
online or offline, after their restart, for a device too; /whois tells of a
person on another server; /release works from any console; a lost Redis
refuses what cannot be checked and keeps what can."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from socket_chat.chat import names
from socket_chat.chat.member import NAMES_UNCHECKED
from socket_chat.chat.registrations import DAY
from socket_chat.crypto import PersonKey
from socket_chat.server import cluster
from socket_chat.server.app import RELEASE_UNREACHABLE
from socket_chat.server.cluster_names import REGISTERED_PREFIX, RedisRegistrations
from socket_chat.server.console import OperatorConsole
from tests.helpers import ChatTestClient, OwnServer
from tests.test_registrations import ANN, BOB, REFUSED

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def servers(identity_key, redis_server):
    """``servers(n)``: n servers on loopback sharing ``redis_server``, whose
    names are registered there."""
    started: list[OwnServer] = []

    def start(count: int, expiry_days: float = 180) -> list[OwnServer]:
        for _ in range(count):
            own = OwnServer(identity_key)
            joined = cluster.RedisCluster.connect(redis_server.url)
            own.start(cluster=joined, registrations=RedisRegistrations(joined, expiry_days=expiry_days))
            started.append(own)
        return started[-count:]

    try:
        yield start
    finally:
        for own in started:
            own.cleanup()


def person(own: OwnServer, key: PersonKey | None) -> ChatTestClient:
    """A client of ``own`` with ``key`` (None: a guest), asked for a name."""
    client = own.client(handshake=False)
    client.handshake(identity=key, guest=key is None)
    return client


def joined(client: ChatTestClient, name: str) -> ChatTestClient:
    """``client`` in as ``name``, its registration made: the session
    registers after the Welcome, and answers a later request after that."""
    client.join(name)
    client.send(protocol.WhoisRequest(name))
    client.expect(protocol.WhoisReply)
    return client


def test_a_name_registered_on_one_server_is_refused_on_the_others_online_offline_and_after_restarts(servers):
    a, b = servers(2)
    ann = joined(person(a, ANN), "Ann")
    bob = person(b, BOB)
    bob.send(protocol.Username("ａｎｎ"))  # a look-alike, on another server, while she is online
    assert bob.expect(protocol.UsernameRequest) == REFUSED
    ann.close()
    bob.send(protocol.Username("Ann"))  # offline
    assert bob.expect(protocol.UsernameRequest) == REFUSED
    guest = person(b, None)
    guest.send(protocol.Username("ANN"))
    assert guest.expect(protocol.UsernameRequest) == REFUSED
    a.cleanup()
    b.cleanup()
    (c,) = servers(1)  # both gone: Redis keeps the name
    late = person(c, BOB)
    late.send(protocol.Username("ann"))
    assert late.expect(protocol.UsernameRequest) == REFUSED
    assert person(c, ANN).join("ANN").name == "ANN"  # the owner, back, on a server she never used


def test_whois_tells_of_a_person_on_another_server(servers):
    a, b = servers(2)
    ann = joined(person(a, ANN), "Ann")
    ann.send(protocol.Away("lunch"))
    ann.expect(protocol.Notice)
    person(a, None).join("Zed")
    bob = person(b, BOB)
    bob.join("Bob")
    registered_at = b.server.registrations.lookup("Ann").registered_at
    bob.send(protocol.WhoisRequest("ann"))
    reply = bob.expect(protocol.WhoisReply)
    assert (reply.name, reply.state, reply.fingerprint, reply.registered_at, reply.away) == (
        "Ann",
        "away",
        ANN.fingerprint,
        registered_at,
        "lunch",
    )
    assert 0 <= reply.online < 60
    bob.send(protocol.WhoisRequest("zed"))
    zed = bob.expect(protocol.WhoisReply)
    assert (zed.name, zed.state, zed.fingerprint, zed.registered_at) == ("Zed", "online", "", 0)  # a guest


def test_a_device_added_on_one_server_uses_the_name_on_another_and_any_console_releases(servers):
    a, b = servers(2)
    ann = joined(person(a, ANN), "Ann")
    ann.send(protocol.DeviceAdd(BOB.fingerprint))
    assert isinstance(ann.expect(protocol.Notice), protocol.Notice)
    ann.close()
    phone = person(b, BOB)
    assert phone.join("ann").name == "ann"  # the device, on the other server
    phone.send(protocol.DeviceListRequest())
    assert phone.expect(protocol.DeviceList).owner == ANN.fingerprint
    phone.close()
    assert OperatorConsole(b.server).execute("/release Ann") == [
        f"Released Ann: it was registered to {ANN.fingerprint}."
    ]
    stranger = person(a, PersonKey.from_seed(bytes(range(5, 37))))
    assert stranger.join("Ann").name == "Ann"  # free on every server


def test_a_registration_is_set_to_expire_after_the_name_expiry_and_with_0_never(servers, redis_server):
    import redis

    (a,) = servers(1, expiry_days=2)
    joined(person(a, ANN), "Ann")
    (never,) = servers(1, expiry_days=0)
    joined(person(never, BOB), "Bob")
    with redis.Redis.from_url(redis_server.url) as raw:
        assert 1 * DAY * 1000 < raw.pttl(REGISTERED_PREFIX + names.key("Ann")) <= 2 * DAY * 1000  # Redis lapses it
        assert raw.pttl(REGISTERED_PREFIX + names.key("Bob")) == -1  # no expiry


def test_a_lost_redis_refuses_names_it_cannot_check_and_gives_the_owner_hers(servers, redis_server):
    a, b = servers(2)
    joined(person(a, ANN), "Ann")
    bob = person(b, BOB)
    bob.join("Bob")
    bob.send(protocol.WhoisRequest("Ann"))  # b has read Ann's registration
    bob.expect(protocol.WhoisReply)
    redis_server.stop()
    newcomer = person(b, PersonKey.from_seed(bytes(range(6, 38))))
    newcomer.send(protocol.Username("Cat"))  # never read: who knows whose it is now
    assert newcomer.expect(protocol.UsernameRequest) == protocol.UsernameRequest(NAMES_UNCHECKED)
    assert bob.expect(protocol.Notice) == protocol.Notice(cluster.DEGRADED)  # the chat says what happened
    owner = person(b, ANN)
    assert owner.join("Ann").name == "Ann"  # as last read: hers
    assert OperatorConsole(b.server).execute("/release Ann") == [RELEASE_UNREACHABLE]
    bob.say("still here")
    assert owner.events_until(protocol.ChatMessage("Bob", "still here")) == []  # this server goes on
