"""Operators and bans (issue 19, part 4): the ban table without sockets
(by key, by address for guests, with a duration lapsing on the injected
clock), the store keeping bans across a restart, and a live server with
``--operators``: commands from an operator's client and from the console,
refused to others and to guests, a ban disconnecting at once and refusing
the person before any name, and one notice to everyone else."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.chat.bans import MAX_BAN_SECONDS, Bans, banned_text, parse_duration, parse_target
from socket_chat.chat.member import NOT_AN_OPERATOR, WHOIS_NO_ONE
from socket_chat.chat.registrations import DeviceAdded, Registrations
from socket_chat.client import ui
from socket_chat.crypto import PersonKey
from socket_chat.server.allow_file import OPERATORS_FILE, AllowFile, AllowFileError
from socket_chat.server.console import OperatorConsole
from socket_chat.server.store import SqliteStore
from tests import procs
from tests.conftest import start_server, stop_server
from tests.helpers import DEADLINE, ChatTestClient, key_proof, wait_until
from tests.test_room import FakeClock

OPERATOR = PersonKey.from_seed(bytes(range(32)))
MALLORY = PersonKey.from_seed(bytes(range(2, 34)))
BOB = PersonKey.from_seed(bytes(range(4, 36)))
NOW = 1_800_000_000.0


# --- the table, without sockets ----------------------------------------------


def test_durations_and_targets_are_read_as_typed():
    assert [parse_duration(w) for w in ("10m", "2h", "7d", "30s", "1w")] == [600, 7200, 604800, 30, 604800]
    assert [parse_duration(w) for w in ("10", "0m", "2 h", "h", "-1d", "1y", "spam")] == [None] * 7
    assert parse_target(OPERATOR.fingerprint) == OPERATOR.fingerprint
    assert parse_target("203.0.113.7") == "203.0.113.7"
    assert parse_target("203.0.113.7/24") == "203.0.113.0/24"  # as ipaddress writes the network
    assert parse_target("2001:db8::1/128") == "2001:db8::1"
    assert parse_target("alice") is None and parse_target("SHA256:short") is None


def test_a_longer_duration_than_the_tables_cap_is_read_as_the_cap():
    # 99999d is beyond a u32 of seconds: UserBanned could not carry it.
    assert parse_duration("99999d") == MAX_BAN_SECONDS == parse_duration("999999w")
    assert parse_duration("3650d") == MAX_BAN_SECONDS and parse_duration("3649d") == 3649 * 86_400


def test_an_ipv4_mapped_target_is_stored_and_matched_as_ipv4():
    assert parse_target("::ffff:203.0.113.7") == "203.0.113.7"  # a guest's host under --host ::
    assert parse_target("::ffff:203.0.113.0/120") == "203.0.113.0/24"
    bans = Bans(clock=FakeClock(NOW))
    bans.add(parse_target("::ffff:203.0.113.7"), "", "the console")
    bans.add("::ffff:198.51.100.0/120", "", "the console")  # as a store may hold it from before
    for peer in ("203.0.113.7", "::ffff:203.0.113.7", "198.51.100.9", "::ffff:198.51.100.9"):
        assert bans.find(None, peer) is not None, peer
    assert bans.find(None, "203.0.113.8") is None


def test_a_key_ban_holds_wherever_the_key_comes_from_and_an_address_ban_only_for_its_guests():
    bans = Bans(clock=FakeClock(NOW))
    bans.add(MALLORY.fingerprint, "spam", "the console")
    bans.add("203.0.113.0/24", "flood", "the console", name="troll")
    assert bans.find(MALLORY.fingerprint, "198.51.100.1").reason == "spam"
    assert bans.find(None, "203.0.113.9").reason == "flood"  # a guest in the network
    assert bans.find(None, "::ffff:203.0.113.9").reason == "flood"  # the same, from a dual-stack socket
    assert bans.find(BOB.fingerprint, "203.0.113.9") is None  # a key is judged by its key
    assert bans.find(None, "198.51.100.1") is None and bans.find(None, "not an address") is None
    assert bans.remove("203.0.113.0/24").name == "troll"
    assert bans.find(None, "203.0.113.9") is None and bans.remove("203.0.113.0/24") is None


def test_a_ban_of_an_owners_key_holds_against_its_devices_and_not_the_other_way():
    bans = Bans(clock=FakeClock(NOW))
    bans.add(MALLORY.fingerprint, "spam", "the console")
    assert bans.find(BOB.fingerprint, "127.0.0.1", owner=MALLORY.fingerprint).reason == "spam"  # Mallory's device
    assert bans.find(BOB.fingerprint, "127.0.0.1", owner=BOB.fingerprint) is None
    bans.remove(MALLORY.fingerprint)
    bans.add(BOB.fingerprint, "", "the console")  # the device alone
    assert bans.find(MALLORY.fingerprint, "127.0.0.1", owner=MALLORY.fingerprint) is None


class LockCheckingStore:
    """A store that notes, at each call, whether the table's lock is held."""

    def __init__(self) -> None:
        self.bans_table: Bans | None = None
        self.calls: list[tuple[str, bool]] = []

    def bans(self) -> list:
        return []

    def save_ban(self, ban) -> None:
        self.calls.append(("save", self.bans_table._lock.locked()))

    def drop_ban(self, target: str) -> None:
        self.calls.append(("drop", self.bans_table._lock.locked()))


def test_the_store_is_called_under_the_tables_lock_so_its_writes_keep_the_tables_order():
    store, clock = LockCheckingStore(), FakeClock(NOW)
    bans = store.bans_table = Bans(store, clock=clock)
    bans.add(MALLORY.fingerprint, "", "the console", seconds=60)
    bans.remove(MALLORY.fingerprint)
    bans.add(BOB.fingerprint, "", "the console", seconds=60)
    clock.now += 60
    bans.current()  # the lapsed one dropped
    assert store.calls == [("save", True), ("drop", True), ("save", True), ("drop", True)]


def test_a_timed_ban_lapses_by_itself_on_the_clock():
    clock = FakeClock(NOW)
    bans = Bans(clock=clock)
    ban = bans.add(MALLORY.fingerprint, "cool off", "the console", seconds=600)
    assert ban.until == int(NOW) + 600 and bans.remaining(ban) == 600
    clock.now += 599
    assert bans.find(MALLORY.fingerprint, "127.0.0.1") == ban
    clock.now += 1
    assert bans.find(MALLORY.fingerprint, "127.0.0.1") is None and bans.current() == []
    assert bans.remove(MALLORY.fingerprint) is None  # lapsed: nothing to lift


def test_bans_survive_a_restart_of_the_store_and_a_lapsed_one_is_dropped(tmp_path):
    clock = FakeClock(NOW)
    store = SqliteStore.open(tmp_path / "history.sqlite3")
    bans = Bans(store, clock=clock)
    bans.add(MALLORY.fingerprint, "spam", "Ann (SHA256:x)", name="mal")
    bans.add("203.0.113.7", "", "the console", seconds=3600)
    bans.add(BOB.fingerprint, "", "the console")
    assert bans.remove(BOB.fingerprint) is not None
    assert store.flush(DEADLINE)
    store.close()
    reopened = SqliteStore.open(tmp_path / "history.sqlite3")
    try:
        again = Bans(reopened, clock=clock)
        assert {(b.target, b.reason, b.by, b.name) for b in again.current()} == {
            (MALLORY.fingerprint, "spam", "Ann (SHA256:x)", "mal"),
            ("203.0.113.7", "", "the console", ""),
        }
        clock.now += 3600
        assert [b.target for b in again.current()] == [MALLORY.fingerprint]
    finally:
        reopened.close()


def test_the_operators_file_takes_keys_and_refuses_a_name(tmp_path):
    path = tmp_path / "operators"
    path.write_text(f"{OPERATOR.fingerprint}  # Ann\n", encoding="utf-8")
    path.chmod(0o600)
    assert AllowFile(path, OPERATORS_FILE).current.admits(OPERATOR.fingerprint)
    path.write_text(f"{OPERATOR.fingerprint} Ann\n", encoding="utf-8")
    with pytest.raises(AllowFileError, match="line 1: a name means nothing here"):
        AllowFile(path, OPERATORS_FILE)


def test_help_lists_the_operator_commands_to_an_operator_alone():
    session = ui.Session()
    shown: list[str] = []
    ctx = ui.Context(session, send=lambda m: None, show=shown.append, error=shown.append)
    ui.run_line("/help", ctx)
    assert not any("/ban" in line for line in shown)
    session.observe(protocol.OperatorStatus(1))
    shown.clear()
    ui.run_line("/help", ctx)
    assert any(line.strip().startswith("/ban NAME|FINGERPRINT|ADDRESS [DURATION] [REASON]") for line in shown)
    session.observe(protocol.OperatorStatus(0))
    shown.clear()
    ui.run_line("/help", ctx)
    assert not any("/ban" in line for line in shown)


def test_the_client_sends_an_operator_command_as_typed():
    sent: list[protocol.Message] = []
    errors: list[str] = []
    ctx = ui.Context(ui.Session(), send=sent.append, show=errors.append, error=errors.append)
    ui.run_line("/ban bo jo 2h flooding", ctx)
    ui.run_line("/bans", ctx)
    ui.run_line("/kick", ctx)
    assert sent == [protocol.OperatorCommand("ban", "bo jo 2h flooding"), protocol.OperatorCommand("bans", "")]
    assert errors == ["Usage: /kick NAME [REASON]"]
    assert ui.render(protocol.UserBanned("mal", 7200, "spam")) == ["* mal was banned by the operator for 2 hours: spam"]
    assert ui.render(protocol.UserBanned("mal", 0, "")) == ["* mal was banned by the operator."]


# --- a live server -----------------------------------------------------------


@pytest.fixture
def operators_path(tmp_path):
    path = tmp_path / "operators"
    path.write_text(f"# the team\n{OPERATOR.fingerprint}  # Ann\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def ops_server(identity_key, operators_path, clock):
    server, thread = start_server(
        identity_key, operators=AllowFile(operators_path, OPERATORS_FILE), bans=Bans(clock=clock)
    )
    clients: list[ChatTestClient] = []
    try:
        yield server, clients
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)


def connect(server, clients, identity: PersonKey | None, name: str, source: str | None = None) -> ChatTestClient:
    client = ChatTestClient(server.server_address, source=source)
    clients.append(client)
    client.handshake(identity, guest=identity is None)
    client.join(name)
    return client


def refused(server, clients, identity: PersonKey | None, source: str | None = None) -> list:
    """Every message after the handshake to a client that proves
    ``identity`` (None: a guest) and asks for a name, until the end."""
    client = ChatTestClient(server.server_address, source=source)
    clients.append(client)
    events = []
    while not isinstance(event := client.next_event(), protocol.ConnectionClosed):
        events.append(event)
        if isinstance(event, protocol.ServerHello):
            client.conn.accept_server_key()
        if isinstance(event, protocol.ProofRequest) and identity is not None:
            client.send(key_proof(identity, client.conn.session_id))
        if isinstance(event, protocol.UsernameRequest):
            client.send(protocol.Username("mal"))
    return events[2:]  # after ServerHello and HandshakeComplete


def operator_says(client: ChatTestClient, command: str, argument: str) -> list:
    """Send an operator's command; everything the client gets before a
    marker sent after it (the answer to a /whois of no one), Notice and
    ErrorNotice as their text."""
    client.send(protocol.OperatorCommand(command, argument))
    client.send(protocol.WhoisRequest("nobody-at-all"))
    marker = protocol.ErrorNotice(WHOIS_NO_ONE.format(name="nobody-at-all"))
    return [e.text if type(e) in (protocol.Notice, protocol.ErrorNotice) else e for e in client.events_until(marker)]


def test_an_operator_is_told_so_and_bans_from_the_client(ops_server, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    server, clients = ops_server
    ann = ChatTestClient(server.server_address)
    clients.append(ann)
    ann.handshake(OPERATOR)
    ann.join("Ann")
    assert ann.expect(protocol.OperatorStatus) == protocol.OperatorStatus(1)  # right after the Greeting
    bob = connect(server, clients, BOB, "Bob")
    mal = connect(server, clients, MALLORY, "mal")
    mal_again = connect(server, clients, MALLORY, "mal2")  # the same key, a second connection
    mal_again.say("marker")  # after its own join, on the same reader thread
    ann.events_until(protocol.ChatMessage("mal2", "marker"))  # the joins
    assert protocol.OperatorStatus(1) not in bob.events_until(protocol.UserJoined("mal2"))  # for operators alone

    assert operator_says(ann, "ban", "mal 2h spamming links") == [
        protocol.UserBanned("mal", 7200, "spamming links"),
        protocol.UserBanned("mal2", 7200, "spamming links"),
        f"Banned {MALLORY.fingerprint} (mal) for 2 hours: spamming links (2 connections closed).",
    ]
    for gone in (mal, mal_again):
        events = []
        while not isinstance(event := gone.next_event(), protocol.ConnectionClosed):
            events.append(event)
        assert events[-1] == protocol.Goodbye("You are banned from this server: spamming links")
    bob.say("after")
    assert ann.events_until(protocol.ChatMessage("Bob", "after")) == []  # one notice a name, no "left" after it
    assert bob.events_until(protocol.UserBanned("mal2", 7200, "spamming links")) == [
        protocol.ChatMessage("mal2", "marker"),
        protocol.UserBanned("mal", 7200, "spamming links"),
    ]
    assert wait_until(lambda: server.names() == ["Ann", "Bob"])
    assert f"{MALLORY.fingerprint} (mal) banned by the operator Ann ({OPERATOR.fingerprint}) for 2 hours" in caplog.text
    assert base64.b64encode(MALLORY.public_bytes).decode() not in caplog.text

    # Refused again right after the key proof: before any name, nothing of the chat.
    events = refused(server, clients, MALLORY)
    assert [type(e) for e in events] == [
        protocol.RateLimit,
        protocol.UsernameDeadline,
        protocol.ProofRequest,
        protocol.Stamps,
        protocol.MultilineOffer,
        protocol.Rooms,
        protocol.UsernameRequest,
        protocol.Goodbye,
    ]
    assert events[-1] == protocol.Goodbye(banned_text("spamming links"))
    assert operator_says(ann, "bans", "")[0] == "1 ban:"


def test_a_timed_ban_lapses_on_the_servers_clock(ops_server, clock):
    server, clients = ops_server
    console = OperatorConsole(server)
    assert console.execute(f"/ban {MALLORY.fingerprint} 10m cool off") == [
        f"Banned {MALLORY.fingerprint} for 10 minutes: cool off (0 connections closed)."
    ]
    assert refused(server, clients, MALLORY)[-1] == protocol.Goodbye("You are banned from this server: cool off")
    clock.now += 600
    connect(server, clients, MALLORY, "mal")  # admitted: the ban lapsed
    assert console.execute("/bans") == ["No one is banned."]
    assert console.execute(f"/ban {MALLORY.fingerprint} " + "x" * 201) == [
        "A ban's reason may be 200 characters long at most; no one was banned."
    ]


def test_a_guest_banned_by_name_is_banned_by_address_and_a_new_address_gets_in(ops_server):
    server, clients = ops_server
    console = OperatorConsole(server)
    guest = connect(server, clients, None, "troll", source="127.0.0.3")
    watcher = connect(server, clients, BOB, "Bob")
    guest.expect(protocol.UserJoined)
    assert console.execute("/ban troll") == ["Banned 127.0.0.3 (troll) for ever (1 connection closed)."]
    assert guest.wait_closed() is not None
    assert watcher.expect(protocol.UserBanned) == protocol.UserBanned("troll", 0, "")
    # Refused before its username is accepted; no reason given: the bare line.
    assert refused(server, clients, None, source="127.0.0.3")[-1] == protocol.Goodbye(
        "You are banned from this server."
    )
    connect(server, clients, MALLORY, "mal", source="127.0.0.3")  # a key from there is judged by its key
    connect(server, clients, None, "troll", source="127.0.0.4")  # a ban by address is weak: a new one gets in
    assert console.execute("/unban troll") == ["Lifted the ban of 127.0.0.3 (troll)."]
    connect(server, clients, None, "troll2", source="127.0.0.3")


def test_operator_commands_are_refused_to_others_and_to_guests(ops_server):
    server, clients = ops_server
    bob = connect(server, clients, BOB, "Bob")
    guest = connect(server, clients, None, "carol")
    bob.expect(protocol.UserJoined)
    for person in (bob, guest):
        for command in ("ban", "kick", "say", "bans", "unban", "release"):
            person.send(protocol.OperatorCommand(command, "Bob"))
            assert person.expect(protocol.ErrorNotice) == protocol.ErrorNotice(NOT_AN_OPERATOR.format(command=command))
    assert server.bans.current() == [] and sorted(server.names()) == ["Bob", "carol"]


def test_kick_and_say_from_an_operators_client_and_a_reload_that_takes_the_power_away(ops_server, operators_path):
    server, clients = ops_server
    ann = connect(server, clients, OPERATOR, "Ann")
    ann.expect(protocol.OperatorStatus)
    bob = connect(server, clients, BOB, "Bob")
    ann.expect(protocol.UserJoined)
    assert operator_says(ann, "kick", "bob be nice") == [protocol.UserKicked("Bob", "be nice"), "Kicked bob."]
    assert bob.events_until(protocol.Goodbye("You were kicked by the operator: be nice")) == []
    assert operator_says(ann, "say", "back at noon") == ["Notice from the operator Ann: back at noon", "Notice sent."]
    assert operator_says(ann, "ban", OPERATOR.fingerprint) == [
        "That is your own key: you would be banned from the server."
    ]
    operators_path.write_text("# no one\n", encoding="utf-8")
    assert OperatorConsole(server).execute("/reload")[0] == (
        f"Reloaded the operators file {operators_path}: 0 keys of operators."
    )
    assert ann.expect(protocol.OperatorStatus) == protocol.OperatorStatus(0)
    assert operator_says(ann, "bans", "") == [NOT_AN_OPERATOR.format(command="bans")]


def test_banning_a_devices_name_bans_its_owner_and_closes_every_device(identity_key):
    registrations = Registrations(clock=FakeClock(NOW))
    server, thread = start_server(identity_key, registrations=registrations, bans=Bans(clock=FakeClock(NOW)))
    clients: list[ChatTestClient] = []
    try:
        owner = connect(server, clients, MALLORY, "mal")  # registers mal to Mallory's key
        assert wait_until(lambda: registrations.lookup("mal") is not None)  # after the Welcome
        assert registrations.add_device(MALLORY.fingerprint, BOB.fingerprint) is DeviceAdded.ADDED
        device = connect(server, clients, BOB, "mal2")
        owner.expect(protocol.UserJoined)
        assert OperatorConsole(server).execute("/ban mal2 spam") == [
            f"Banned {MALLORY.fingerprint} (mal2) for ever: spam (2 connections closed)."
        ]
        assert owner.wait_closed() is not None and device.wait_closed() is not None
        assert refused(server, clients, BOB)[-1] == protocol.Goodbye(banned_text("spam"))  # the device: refused
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)


def test_a_kick_or_ban_reason_reaches_the_log_without_its_control_characters(ops_server, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    server, clients = ops_server
    ann = connect(server, clients, OPERATOR, "Ann")
    ann.expect(protocol.OperatorStatus)
    connect(server, clients, BOB, "Bob")
    ann.expect(protocol.UserJoined)
    assert operator_says(ann, "kick", "Bob be \x1b[2Jnice")[-1] == "Kicked Bob."
    assert operator_says(ann, "ban", f"{MALLORY.fingerprint} spam\x1b]0;owned\x07")[-1].startswith("Banned")
    assert "be \ufffd[2Jnice" in caplog.text and "spam\ufffd]0;owned\ufffd" in caplog.text
    assert "\x1b" not in caplog.text and "\x07" not in caplog.text


def test_a_ban_survives_the_servers_restart(identity_key, tmp_path):
    path = tmp_path / "history.sqlite3"
    clients: list[ChatTestClient] = []
    store = SqliteStore.open(path, history=10)
    server, thread = start_server(identity_key, store=store)
    try:
        connect(server, clients, MALLORY, "mal")
        assert OperatorConsole(server).execute("/ban mal spam")[0].startswith(f"Banned {MALLORY.fingerprint} (mal)")
    finally:
        stop_server(server, thread)  # closes the store, writing what is queued
    server, thread = start_server(identity_key, store=SqliteStore.open(path, history=10))
    try:
        assert refused(server, clients, MALLORY)[-1] == protocol.Goodbye("You are banned from this server: spam")
        assert OperatorConsole(server).execute("/unban mal") == [f"Lifted the ban of {MALLORY.fingerprint} (mal)."]
        connect(server, clients, MALLORY, "mal")
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)


def test_a_bad_operators_file_stops_server_py_with_its_line(tmp_path, operators_path):
    operators_path.write_text(f"{OPERATOR.fingerprint} Ann\n", encoding="utf-8")
    err = procs.server_py_stops(tmp_path / "data", "--operators", str(operators_path))
    assert f"The operators file {operators_path}, line 1: a name means nothing here ('Ann')" in err


def test_the_test_vectors_in_protocol_md():
    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    block = text.split("### Operators and bans", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    vector = dict(line.split(" = ") for line in block.splitlines())
    messages = {
        "operator_command": protocol.OperatorCommand("ban", "mal 2h spam"),
        "operator_status": protocol.OperatorStatus(1),
        "user_banned": protocol.UserBanned("mal", 7200, "spam"),
    }
    assert set(vector) == set(messages)
    for name, message in messages.items():
        assert protocol.encode_message(message).hex() == vector[name]
        assert protocol.decode_message(bytes.fromhex(vector[name])) == message


# --- a cluster ----------------------------------------------------------------


def test_a_ban_set_on_one_server_of_a_cluster_holds_on_the_others(identity_key, redis_server, clock, caplog):
    redis = pytest.importorskip("redis")
    from socket_chat.server import cluster

    servers, clients = [], []
    try:
        for _ in range(2):
            joined = cluster.RedisCluster.connect(redis_server.url)
            servers.append(start_server(identity_key, cluster=joined, bans=cluster.ClusterBans(joined, clock=clock)))
        (one, _), (other, _) = servers
        assert OperatorConsole(one).execute(f"/ban {MALLORY.fingerprint} 1h spam")[0].startswith("Banned")
        assert OperatorConsole(one).execute("/ban 127.0.0.5")[0].startswith("Banned 127.0.0.5 for ever")
        assert refused(other, clients, MALLORY)[-1] == protocol.Goodbye("You are banned from this server: spam")
        assert refused(other, clients, None, source="127.0.0.5")[-1] == protocol.Goodbye(
            "You are banned from this server."
        )
        assert OperatorConsole(other).execute("/bans")[0] == "2 bans:"
        assert OperatorConsole(other).execute("/unban 127.0.0.5") == ["Lifted the ban of 127.0.0.5."]
        assert OperatorConsole(one).execute(f"/ban {BOB.fingerprint}")[0].startswith("Banned")
        # Lifted on the other server with no admission (no read of Redis) in between.
        assert OperatorConsole(other).execute(f"/unban {BOB.fingerprint}") == [f"Lifted the ban of {BOB.fingerprint}."]
        assert OperatorConsole(one).execute("/bans")[0] == "1 ban:"
        connect(one, clients, None, "guest", source="127.0.0.5")
        clock.now += 3600  # the timed ban lapses on every server
        connect(other, clients, MALLORY, "mal")
        with redis.Redis.from_url(redis_server.url) as raw:
            raw.hset(cluster.BANS, "not a target", "{}")  # not a server's: skipped, logged
        with caplog.at_level(logging.WARNING, logger="chat.cluster"):
            assert OperatorConsole(one).execute("/bans") == ["No one is banned."]
        assert "skipped a ban that is not the chat's" in caplog.text
    finally:
        for client in clients:
            client.close()
        for server, thread in servers:
            stop_server(server, thread)


def test_a_ban_set_on_one_server_of_a_cluster_closes_the_connections_on_the_others(identity_key, redis_server):
    """The other server reads the shared bans again (every ``ban_sweep``
    seconds) and closes the banned key's connection there too."""
    pytest.importorskip("redis")
    from socket_chat.server import cluster

    servers, clients = [], []
    try:
        for _ in range(2):
            joined = cluster.RedisCluster.connect(redis_server.url)
            servers.append(start_server(identity_key, cluster=joined, bans=cluster.ClusterBans(joined), ban_sweep=0.05))
        (one, _), (other, _) = servers
        bob = connect(other, clients, BOB, "Bob")
        mal = connect(other, clients, MALLORY, "mal")
        assert OperatorConsole(one).execute(f"/ban {MALLORY.fingerprint} spam")[0].endswith("(0 connections closed).")
        assert mal.events_until(protocol.Goodbye(banned_text("spam"))) == []  # nothing but the goodbye
        assert isinstance(mal.next_event(), protocol.ConnectionClosed)
        # Bob is told of the ban, never of a mere leave: even when the sweep
        # came between mal's Welcome and the session taking its place (the
        # session then leaves with the ban's notice: MemberSession.ban).
        while not isinstance(gone := bob.next_event(), (protocol.UserBanned, protocol.UserLeft)):
            pass
        assert gone == protocol.UserBanned("mal", 0, "spam")
    finally:
        for client in clients:
            client.close()
        for server, thread in servers:
            stop_server(server, thread)
