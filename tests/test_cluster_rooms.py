"""Rooms that span a cluster's servers (server/cluster_rooms.py): two
in-process servers sharing a real redis-server on loopback."""

from __future__ import annotations

import collections
import contextlib
import re
import signal
import threading
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.protocol import ChatMessage, ErrorNotice, Notice, PrivateMessage, RoomLine, RoomRequest
from socket_chat.server import cluster, cluster_rooms
from socket_chat.server.console import OperatorConsole
from tests import procs
from tests.helpers import ChatTestClient, OwnServer, wait_until


@contextlib.contextmanager
def sharing(identity_key, redis_server, name_ttl: float):
    """Two servers on loopback sharing ``redis_server``, whose names (and
    rooms' seats) lapse ``name_ttl`` s after their server's last refresh."""
    servers: list[OwnServer] = []
    try:
        for _ in range(2):
            own = OwnServer(identity_key)
            own.start(cluster=cluster.RedisCluster.connect(redis_server.url, name_ttl=name_ttl))
            servers.append(own)
        yield servers
    finally:
        for own in servers:
            own.cleanup()


@pytest.fixture
def two_servers(identity_key, redis_server):
    """``sharing`` with names that lapse 0.6 s after their last refresh."""
    with sharing(identity_key, redis_server, 0.6) as servers:
        yield servers


def in_rooms(own: OwnServer, name: str, multiline: bool = False) -> ChatTestClient:
    """A client of ``own`` that took the offer of rooms (and of blocks, with
    ``multiline``), joined as ``name``."""
    client = ChatTestClient(own.server.server_address)
    own.clients.append(client)
    client.handshake(rooms=True, multiline=multiline)
    client.join(name)
    return client


def next_of(client, event_type):
    """The next event of ``event_type``, skipping others (the lobby's joins)."""
    while not isinstance(event := client.next_event(), event_type):
        pass
    return event


def joins(client, room: str) -> protocol.Joined:
    client.send(RoomRequest("join", room, ""))
    return next_of(client, protocol.Joined)


def ask(client, command: str, room: str = "", argument: str = ""):
    client.send(RoomRequest(command, room, argument))


def room_lines(client, count: int) -> list[tuple[str, str, int]]:
    """(sender, text, id) of the next ``count`` room lines, skipping the rest."""
    lines = []
    while len(lines) < count:
        event = next_of(client, protocol.RoomMessage)
        lines.append((event.sender, event.text, int(event.id)))
    return lines


def test_a_line_in_a_room_reaches_its_members_on_the_other_server_in_one_order(two_servers):
    a, b = two_servers
    ann, dan = in_rooms(a, "Ann"), in_rooms(a, "Dan")
    bob, eve, cat = in_rooms(b, "Bob"), in_rooms(b, "Eve"), in_rooms(b, "Cat")
    assert joins(ann, "#dev") == protocol.Joined("#dev", "", 1, "Ann")
    assert joins(bob, "#DEV") == protocol.Joined("#dev", "", 2, "Ann\nBob")  # one room, made on A
    assert next_of(ann, protocol.RoomNotice) == protocol.RoomNotice("#dev", "Bob joined #dev.")
    joins(dan, "#dev"), joins(eve, "#dev")

    start = threading.Barrier(2)

    def talk(client, label):
        start.wait(5)
        for number in range(6):
            client.send(RoomLine("#dev", "chat", f"{label} {number}"))

    threads = [threading.Thread(target=talk, args=(ann, "a")), threading.Thread(target=talk, args=(bob, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    on_a, on_b = room_lines(dan, 12), room_lines(eve, 12)
    assert on_a == on_b  # one order, on both servers, with the stream's IDs
    assert [line_id for _, _, line_id in on_a] == sorted(line_id for _, _, line_id in on_a)
    assert [text for _, text, _ in on_a if text.startswith("a")] == [f"a {n}" for n in range(6)]
    assert [text for sender, text, _ in room_lines(bob, 6)] == [f"a {n}" for n in range(6)]  # not his own

    ann.say("marker")  # the lobby: to everyone, rooms or not
    assert [e for e in cat.events_until(ChatMessage("Ann", "marker")) if isinstance(e, protocol.RoomMessage)] == []


def test_a_block_in_a_room_reaches_the_other_server_whole_or_a_message_a_line(two_servers):
    a, b = two_servers
    ann, bob, cat = in_rooms(a, "Ann", multiline=True), in_rooms(b, "Bob", multiline=True), in_rooms(b, "Cat")
    joins(ann, "#dev"), joins(bob, "#dev"), joins(cat, "#dev")
    ann.send(RoomLine("#dev", "chat", "first\nsecond"))
    [(sender, text, line_id)] = room_lines(bob, 1)
    assert (sender, text) == ("Ann", "first\nsecond")  # whole, to a client that takes blocks
    assert room_lines(cat, 2) == [("Ann", "first", line_id), ("Ann", "second", line_id)]  # one ID, a line each
    dan = in_rooms(b, "Dan")  # a newcomer on B, whose history comes from the stream
    dan.send(RoomRequest("join", "#dev", ""))
    next_of(dan, protocol.Joined)
    history = [next_of(dan, protocol.RoomHistoryLine) for _ in range(2)]
    assert [(line.sender, line.text, int(line.id)) for line in history] == [
        ("Ann", "first", line_id),
        ("Ann", "second", line_id),
    ]


def test_rooms_and_who_agree_on_both_servers_and_a_topic_set_on_one_is_seen_on_the_other(two_servers):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(bob, "#dev"), joins(bob, "#ops")
    ask(bob, "topic", "#dev", "the  build is green")
    said = protocol.RoomNotice("#dev", "Bob set the topic of #dev: the build is green")
    assert next_of(ann, protocol.RoomNotice) == protocol.RoomNotice("#dev", "Bob joined #dev.")
    assert next_of(ann, protocol.RoomNotice) == said
    assert next_of(bob, protocol.RoomNotice) == said
    for client in (ann, bob):
        ask(client, "rooms")
        assert next_of(client, protocol.RoomList).rooms() == [("#dev", 2, "the build is green"), ("#ops", 1, "")]
        ask(client, "who", "#dev")
        assert next_of(client, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann\nBob")
    bob.send(protocol.NickRequest("Rob"))  # a rename in the lobby renames him in his rooms, on every server
    assert next_of(ann, protocol.NickChanged) == protocol.NickChanged("Bob", "Rob")
    ask(bob, "who", "#dev")  # after his rename, on his connection: Redis has it by now
    assert next_of(bob, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann\nRob")
    bob.send(protocol.NickRequest("Bob"))
    assert next_of(ann, protocol.NickChanged) == protocol.NickChanged("Rob", "Bob")
    ask(bob, "part", "#dev", "lunch")
    assert next_of(bob, protocol.Parted) == protocol.Parted("#dev", "")
    assert next_of(ann, protocol.RoomNotice) == protocol.RoomNotice("#dev", "Bob left #dev (lunch).")
    ask(ann, "who", "#dev")
    assert next_of(ann, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann")
    joined = joins(bob, "#dev")  # the topic was kept in Redis, the history in the stream
    assert joined == protocol.Joined("#dev", "the build is green", 2, "Ann\nBob")


def test_an_invite_only_room_admits_across_servers_only_the_key_invited(two_servers):
    a, b = two_servers
    ann, bob, cat = in_rooms(a, "Ann"), in_rooms(b, "Bob"), in_rooms(b, "Cat")
    joins(ann, "#ops")
    ann.send(RoomLine("#ops", "chat", "before"))
    ask(ann, "mode", "#ops", "+i")
    assert next_of(ann, protocol.RoomNotice).text == "Ann set #ops +i: only those invited may join."
    ask(bob, "join", "#ops")
    assert next_of(bob, ErrorNotice).text == "#ops is invite-only (+i): ask its founder for an /invite."
    joins(cat, "#lounge")
    ask(cat, "mode", "#lounge", "+i")
    next_of(cat, protocol.RoomNotice)
    ask(cat, "invite", "#lounge", "Ann")  # Cat founded #lounge, not #ops: her own room's invitation
    assert "Ann is invited to #lounge" in next_of(cat, Notice).text
    ask(ann, "invite", "#ops", "Bob")
    assert next_of(ann, Notice) == Notice("Bob is invited to #ops (bound to their key).")
    told = next_of(bob, PrivateMessage)
    assert (told.sender, told.text) == ("Ann", "invites you to #ops: /join #ops")
    ask(cat, "join", "#ops")  # not the key invited
    assert next_of(cat, ErrorNotice).text == "#ops is invite-only (+i): ask its founder for an /invite."
    assert joins(bob, "#ops") == protocol.Joined("#ops", "", 2, "Ann\nBob")
    history = next_of(bob, protocol.RoomHistoryLine)
    assert (history.sender, history.text) == ("Ann", "before")  # from the room's stream
    ask(bob, "mode", "#ops", "-i")
    assert next_of(bob, ErrorNotice).text == "Only the founder of #ops may use /mode there."


def test_operators_kick_and_close_across_servers(two_servers):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(bob, "#dev")
    next_of(ann, protocol.RoomNotice)
    assert OperatorConsole(a.server).execute("/kick #dev bob spam") == ["Bob was kicked from #dev."]
    assert next_of(bob, protocol.Parted) == protocol.Parted("#dev", "You were kicked from #dev by the operator: spam")
    assert next_of(ann, protocol.RoomNotice).text == "Bob was kicked from #dev by the operator: spam"
    bob.send(RoomLine("#dev", "chat", "still here?"))
    assert next_of(bob, ErrorNotice).text == "There is no room #dev. The line was not sent."
    joins(bob, "#dev")
    assert OperatorConsole(b.server).execute("/close #dev done") == ["#dev is closed (2 people were in it)."]
    for client in (ann, bob):
        assert next_of(client, protocol.Parted) == protocol.Parted("#dev", "The operator closed #dev: done")
    ask(ann, "rooms")
    assert next_of(ann, protocol.RoomList).rooms() == []


def test_a_servers_members_are_gone_from_its_rooms_once_it_dies(two_servers, redis_server):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(bob, "#dev"), joins(ann, "#dev")  # Bob founded it
    spanning = b.server.rooms
    assert isinstance(spanning, cluster_rooms.ClusterRooms)
    spanning._closing.set()  # B stops keeping its rooms' seats alive, as a server that died
    spanning._thread.join(5)
    gone = protocol.RoomNotice("#dev", "Bob left #dev (their server is gone).")
    before = ann.events_until(gone)  # within the seats' 0.6 s, and a sweep's 0.2 s
    assert [e for e in before if isinstance(e, protocol.RoomNotice)] == []  # Bob's join came before Ann's
    ask(ann, "who", "#dev")
    assert next_of(ann, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann")
    ask(ann, "mode", "#dev", "+i")  # the founder's role passed to Ann
    assert next_of(ann, protocol.RoomNotice).text == "Ann set #dev +i: only those invited may join."


def test_with_redis_lost_room_commands_and_lines_are_refused_with_the_reason(two_servers, redis_server):
    a, _ = two_servers
    ann = in_rooms(a, "Ann")
    joins(ann, "#dev")
    redis_server.stop()
    ann.send(RoomLine("#dev", "chat", "lost?"))
    assert next_of(ann, ErrorNotice).text == f"{cluster_rooms.UNREACHABLE} The line was not sent."
    ask(ann, "join", "#ops")
    assert next_of(ann, ErrorNotice).text == cluster_rooms.UNREACHABLE
    ask(ann, "rooms")
    assert next_of(ann, ErrorNotice).text == cluster_rooms.UNREACHABLE
    ask(ann, "who", "#dev")  # the server stays up, and says the same
    assert next_of(ann, ErrorNotice).text == cluster_rooms.UNREACHABLE


def test_a_room_entry_has_the_documented_bytes_and_one_no_server_wrote_is_refused():
    line = protocol.RoomMessage("#dev", "", 1764100000, "chat", "alice", "hi")
    entry = cluster_rooms.encode_room_entry(line, "3f2a9c01b7e4/1")
    assert entry == {  # PROTOCOL.md section 8, "Rooms in a cluster"
        b"m": bytes.fromhex("670004236465760000692607a00004636861740005616c69636500026869"),
        b"from": b"3f2a9c01b7e4/1",
        b"to": b"",
    }
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vector = dict(re.findall(r"^(m|from) +([0-9a-f/]+)$", spec.split("### Rooms in a cluster")[1], re.M))
    assert vector == {"m": entry[b"m"].hex(), "from": "3f2a9c01b7e4/1"}
    assert cluster_rooms.decode_room_entry(entry, "dev") == (line, "3f2a9c01b7e4/1", "")
    kick = cluster_rooms.encode_room_entry(protocol.Parted("#dev", "kicked"), None, "3f2a9c01b7e4/2")
    assert cluster_rooms.decode_room_entry(kick, "dev") == (protocol.Parted("#dev", "kicked"), None, "3f2a9c01b7e4/2")
    garbled = [
        {**entry, b"extra": b""},
        {**entry, b"from": b"alice"},
        {**entry, b"to": b"everyone"},
        {**entry, b"m": protocol.encode_message(ChatMessage("alice", "hi"))},  # not a room's message
        {**entry, b"m": protocol.encode_message(protocol.Goodbye("bye"))},
        {**entry, b"m": protocol.encode_message(protocol.RoomMessage("#dev", "", 0, "chat", "two\nlines", "x"))},
        {**entry, b"m": b"\x67\x00"},
    ]
    for fields in garbled:
        with pytest.raises(ValueError):
            cluster_rooms.decode_room_entry(fields, "dev")
    with pytest.raises(ValueError, match="another room"):
        cluster_rooms.decode_room_entry(entry, "ops")


def test_an_entry_no_server_wrote_is_skipped_and_the_room_goes_on(two_servers, redis_server, caplog):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(bob, "#dev")
    shared = a.server.room.cluster.redis
    shared.xadd(cluster_rooms.STREAM + "dev", {b"m": b"garbage", b"from": b"", b"to": b""})
    bob.send(RoomLine("#dev", "chat", "after it"))
    assert next_of(ann, protocol.RoomMessage).text == "after it"
    assert any("skipped an entry of #dev" in record.getMessage() for record in caplog.records)


def test_the_caps_count_the_whole_cluster_and_are_each_a_clear_refusal(two_servers):
    a, b = two_servers
    for own in two_servers:
        own.server.rooms.room_size, own.server.rooms.max_rooms = 2, 1
    ann, dan, cat = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Cat")
    joins(ann, "#dev")
    ask(cat, "join", "#ops")  # from B, which holds no room: the cluster's count
    assert next_of(cat, ErrorNotice).text == (
        "The cluster has 1 rooms already, the most it holds: #ops was not made. Join one of them (/rooms lists them)."
    )
    joins(dan, "#dev")
    ask(cat, "join", "#dev")  # B holds no one of it: the cluster's count
    assert next_of(cat, ErrorNotice).text == "#dev is full: it holds 2 people at most."


def test_when_redis_is_back_empty_the_servers_seat_their_members_again(two_servers, redis_server):
    a, b = two_servers
    ann, dan, bob = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(dan, "#dev"), joins(bob, "#dev")
    redis_server.stop()
    dan.close()  # leaves while Redis is lost: not seated again
    assert wait_until(lambda: a.server.room.find("Dan") is None)
    redis_server.start()  # with nothing in it
    ann.events_until(Notice(cluster.RESTORED))
    shared = a.server.room.cluster.redis
    assert wait_until(lambda: shared.hlen(cluster_rooms.NAMES + "dev") == 2)
    for client in (ann, bob):
        ask(client, "who", "#dev")
        assert next_of(client, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann\nBob")
    bob.send(RoomLine("#dev", "chat", "back"))
    assert next_of(ann, protocol.RoomMessage).text == "back"


def test_a_leaving_while_redis_is_away_briefly_is_written_once_it_is_back(identity_key, redis_server):
    with sharing(identity_key, redis_server, 1.5) as (a, b):  # Redis is away for well under 1.5 s
        ann, dan, bob = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Bob")
        joins(ann, "#dev"), joins(dan, "#dev"), joins(bob, "#dev")
        shared = a.server.room.cluster.redis
        shared.save()  # what the restarted Redis loads: not wiped
        redis_server.stop()
        dan.close()  # his leaving is kept until Redis is back
        assert wait_until(lambda: a.server.rooms._unwritten)
        redis_server.start()
        assert next_of(bob, protocol.RoomNotice) == protocol.RoomNotice("#dev", "Dan left #dev.")
        ask(bob, "who", "#dev")
        assert next_of(bob, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann\nBob")


@pytest.mark.slow
def test_a_server_process_killed_with_sigkill_leaves_its_members_out_of_its_rooms(tmp_path, redis_server):
    """About 3 s: two server.py processes; one is killed, its seats lapse."""
    servers = []
    try:
        for label in ("a", "b"):
            server = procs.start_server(tmp_path / label, "--cluster", redis_server.url, "--cluster-name-ttl", "1")
            servers.append(server)
            server.stdout.expect(re.compile(r"^Cluster: "))
        a, b = servers
        ghost = ChatTestClient(("127.0.0.1", a.port))
        ghost.handshake(rooms=True)
        ghost.join("Ghost")
        ann = ChatTestClient(("127.0.0.1", b.port))
        ann.handshake(rooms=True)
        ann.join("Ann")
        joins(ghost, "#dev"), joins(ann, "#dev")
        a.signal(signal.SIGKILL)
        assert a.wait() == -signal.SIGKILL
        gone = protocol.RoomNotice("#dev", "Ghost left #dev (their server is gone).")
        ann.events_until(gone)  # no one took it out: its server's key lapsed, a second after its last refresh
        ask(ann, "who", "#dev")
        assert next_of(ann, protocol.RoomMembers) == protocol.RoomMembers("#dev", "Ann")
        ghost.close(), ann.close()
    finally:
        for server in servers:
            server.kill()


def stalled(own: OwnServer) -> cluster_rooms.ClusterRooms:
    """``own``'s rooms with their thread stopped: the test runs its steps."""
    spanning = own.server.rooms
    assert isinstance(spanning, cluster_rooms.ClusterRooms)
    spanning._closing.set()
    spanning._add_wake()  # out of its XREAD at once
    spanning._thread.join(5)
    return spanning


def test_after_its_key_lapsed_a_server_applies_kicks_and_closes_before_seating_again(two_servers):
    a, b = two_servers
    ann, dan, bob = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(dan, "#dev"), joins(bob, "#dev"), joins(dan, "#ops")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    OperatorConsole(b.server).execute("/kick #dev ann")  # while A was away, its key lapsed
    OperatorConsole(b.server).execute("/close #ops")
    shared.delete(spanning._server_key)
    spanning._keep_alive()
    assert sorted(shared.hvals(cluster_rooms.NAMES + "dev")) == [b"Bob", b"Dan"]  # no ghost of Ann
    assert not shared.exists(cluster_rooms.ROOM + "ops")  # not made again
    assert next_of(ann, protocol.Parted).room == "#dev"


def test_a_reseat_that_failed_is_tried_again(two_servers, monkeypatch):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(bob, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    [ann_id] = spanning._rooms["dev"].seats
    shared.zrem(cluster_rooms.MEMBERS + "dev", ann_id)
    shared.srem(cluster_rooms.SERVERS, spanning._cluster.server_id)
    shared.delete(spanning._server_key)  # swept out as a dead server
    reseat = spanning._reseat
    monkeypatch.setattr(spanning, "_reseat", lambda **kwargs: (_ for _ in ()).throw(cluster_rooms.RoomRefused("x")))
    with pytest.raises(cluster_rooms.RoomRefused):
        spanning._keep_alive()
    monkeypatch.setattr(spanning, "_reseat", reseat)
    spanning._keep_alive()  # its key is set now: the reseat still is due
    assert shared.zscore(cluster_rooms.MEMBERS + "dev", ann_id) is not None
    assert shared.sismember(cluster_rooms.SERVERS, spanning._cluster.server_id)


def refused(**_kwargs):
    """A Redis call that failed (as ``ClusterRooms._call`` says so)."""
    raise cluster_rooms.RoomRefused(cluster_rooms.UNREACHABLE)


def test_a_clean_stop_writes_its_unwritten_leavings_and_takes_out_those_still_seated(two_servers, monkeypatch):
    a, b = two_servers
    ann, dan, bob = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(dan, "#dev"), joins(bob, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    leave = spanning._leave
    monkeypatch.setattr(spanning, "_leave", refused)
    spanning.leave_all(a.server.room.find("Dan"))  # Redis failed: kept for later
    spanning.stop()  # fails again: its key stays, to lapse
    assert shared.exists(spanning._server_key) and len(spanning._unwritten) == 1
    monkeypatch.setattr(spanning, "_leave", leave)
    spanning.stop()
    assert shared.hvals(cluster_rooms.NAMES + "dev") == [b"Bob"]
    assert not shared.exists(spanning._server_key)
    assert not shared.sismember(cluster_rooms.SERVERS, spanning._cluster.server_id)
    assert {next_of(bob, protocol.RoomNotice).text for _ in range(2)} == {"Dan left #dev.", "Ann left #dev."}


def test_leavings_unwritten_past_the_most_kept_are_dropped_with_a_warning(two_servers, monkeypatch, caplog):
    spanning = stalled(two_servers[0])
    monkeypatch.setattr(spanning, "_unwritten", collections.deque(maxlen=1))
    monkeypatch.setattr(spanning, "_leave", refused)
    for member in ("3f2a9c01b7e4/1", "3f2a9c01b7e4/2"):
        spanning._leave_or_queue("dev", [member, "dev", 100])
    assert [args[0] for _, args in spanning._unwritten] == ["3f2a9c01b7e4/2"]
    assert any("the oldest is dropped" in record.getMessage() for record in caplog.records)


def test_a_join_not_seated_here_is_undone_in_redis_even_once_redis_is_back(two_servers, monkeypatch):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(bob, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    leave = spanning._leave
    monkeypatch.setattr(spanning, "_tail", lambda key: refused())  # Redis lost after the JOIN
    monkeypatch.setattr(spanning, "_leave", refused)
    ask(ann, "join", "#dev")
    assert next_of(ann, ErrorNotice).text == cluster_rooms.UNREACHABLE
    monkeypatch.setattr(spanning, "_leave", leave)
    spanning._keep_alive()  # Redis is back
    assert shared.hvals(cluster_rooms.NAMES + "dev") == [b"Bob"]


def test_a_gone_rooms_stream_expires_and_a_room_made_again_keeps_its_own(two_servers):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    shared = a.server.room.cluster.redis
    stream, day = cluster_rooms.STREAM + "dev", cluster_rooms.ROOM_STREAM_EXPIRY_MS
    joins(ann, "#dev")
    ask(ann, "part", "#dev")
    next_of(ann, protocol.Parted)
    assert 0 < shared.pttl(stream) <= day  # emptied: gone a day later
    joins(ann, "#dev"), joins(bob, "#dev")
    assert shared.pttl(stream) == -1  # made again: kept
    OperatorConsole(b.server).execute("/close #dev")
    assert 0 < shared.pttl(stream) <= day


def test_a_room_the_cluster_lost_is_made_again_invite_only_and_its_members_are_told(two_servers):
    a, _ = two_servers
    ann = in_rooms(a, "Ann")
    joins(ann, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    for key in (cluster_rooms.ROOM, cluster_rooms.MEMBERS, cluster_rooms.NAMES):
        shared.delete(key + "dev")
    shared.srem(cluster_rooms.ROOMS, "dev")
    shared.delete(spanning._server_key)
    spanning._keep_alive()
    assert shared.hget(cluster_rooms.ROOM + "dev", "mode") == b"+i"  # fails closed
    spanning._drain()
    assert next_of(ann, protocol.RoomNotice).text == cluster_rooms.REMADE.format(room="#dev")


def test_a_rename_redis_did_not_take_is_written_once_it_is_back(two_servers, monkeypatch):
    a, _ = two_servers
    ann = in_rooms(a, "Ann")
    joins(ann, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    rename = spanning._rename
    monkeypatch.setattr(spanning, "_rename", refused)
    ann.send(protocol.NickRequest("Ada"))
    assert next_of(ann, protocol.NickChanged) == protocol.NickChanged("Ann", "Ada")
    assert wait_until(lambda: spanning._unrenamed)  # kept for later
    assert shared.hvals(cluster_rooms.NAMES + "dev") == [b"Ann"]
    monkeypatch.setattr(spanning, "_rename", rename)
    spanning._keep_alive()  # Redis is back
    assert shared.hvals(cluster_rooms.NAMES + "dev") == [b"Ada"]


def test_a_member_seated_again_after_a_sweep_is_announced_as_joining_again(two_servers):
    a, b = two_servers
    ann, dan, bob = in_rooms(a, "Ann"), in_rooms(a, "Dan"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(dan, "#dev"), joins(bob, "#dev")
    spanning = stalled(a)
    shared = spanning._cluster.redis
    ann_id = next(i for i, m in spanning._rooms["dev"].seats.items() if m.name == "Ann")
    shared.zrem(cluster_rooms.MEMBERS + "dev", ann_id)  # swept out (Bob was told she left)
    shared.delete(spanning._server_key)
    spanning._keep_alive()
    [(_, fields)] = shared.xrevrange(cluster_rooms.STREAM + "dev", count=1)
    notice, sender, _ = cluster_rooms.decode_room_entry(fields, "dev")
    assert (notice, sender) == (protocol.RoomNotice("#dev", "Ann joined #dev."), ann_id)  # Dan was not out
    assert shared.xlen(cluster_rooms.STREAM + "dev") == 4  # three joins, and Ann's again


def test_a_member_kicked_in_redis_cannot_post_before_their_server_applies_it(two_servers):
    a, b = two_servers
    ann, bob = in_rooms(a, "Ann"), in_rooms(b, "Bob")
    joins(ann, "#dev"), joins(bob, "#dev")
    stalled(b)  # B has not read the kick yet
    OperatorConsole(a.server).execute("/kick #dev bob")
    bob.send(RoomLine("#dev", "chat", "one more"))
    assert next_of(bob, ErrorNotice).text == "You are not in #dev (/join #dev first). The line was not sent."
    shared = a.server.room.cluster.redis
    assert shared.xlen(cluster_rooms.STREAM + "dev") == 4  # two joins, the kick's Parted and its notice


def test_rooms_is_read_again_only_after_a_change_or_two_seconds(two_servers):
    a, _ = two_servers
    ann = in_rooms(a, "Ann")
    joins(ann, "#dev")
    shared = a.server.room.cluster.redis
    ask(ann, "rooms")
    assert next_of(ann, protocol.RoomList).rooms() == [("#dev", 1, "")]
    shared.hset(cluster_rooms.ROOM + "dev", "topic", "unsaid")  # no notice: no change seen here
    ask(ann, "rooms")
    assert next_of(ann, protocol.RoomList).rooms() == [("#dev", 1, "")]  # from the last read
    joins(ann, "#ops")
    ask(ann, "rooms")
    assert next_of(ann, protocol.RoomList).rooms() == [("#dev", 1, "unsaid"), ("#ops", 1, "")]
