"""chat/room.py: the Room with fake members, without a socket in sight."""

from __future__ import annotations

import threading

import pytest

from socket_chat import protocol
from socket_chat.chat.presence import Presence
from socket_chat.chat.room import USER_LIST_BYTES, LocalCluster, Membership, Room, user_list_messages
from socket_chat.protocol import (
    ActionMessage,
    ChatMessage,
    Greeting,
    HistoryMessage,
    Motd,
    NickChanged,
    Notice,
    PrivateMessage,
    UserJoined,
    UserLeft,
    UserList,
    UserParted,
    Welcome,
)
from tests.helpers import DEADLINE, run_threads


class FakeMember:
    """A room member without a socket: it keeps what it is given."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.membership: Membership | None = None
        self.inbox: list = []  # the messages delivered
        self.items: list[protocol.Encoded] = []  # the same, as delivered
        self.closed_with: str | None = None

    @property
    def name(self) -> str | None:
        return self.membership.name if self.membership is not None else None

    def join(self, room: Room, name: str) -> bool:
        """Join ``room`` as ``name`` and keep the membership; False if taken."""
        self.membership = room.join(self, name)
        return self.membership is not None

    def deliver(self, item: protocol.Encoded) -> bool:
        assert protocol.encode_message(item.message) == item.payload
        self.items.append(item)
        self.inbox.append(item.message)
        return True

    def send_queue_overflowed(self) -> None:
        raise AssertionError("a fake member's queue has no limit")

    def close(self, reason: str) -> None:
        self.closed_with = reason


class FakeClock:
    def __init__(self, now: float = 1_764_100_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def room_with(*names: str, **options) -> tuple[Room, list[FakeMember]]:
    room = Room(**options)
    members = []
    for name in names:
        member = FakeMember()
        assert member.join(room, name)
        members.append(member)
    for member in members:
        member.inbox.clear()
    return room, members


# --- the room, with fake members ---------------------------------------------


def test_join_welcomes_the_joiner_first_and_tells_only_the_others():
    room = Room()
    alice, bob, carol = FakeMember(), FakeMember(), FakeMember()
    assert alice.join(room, "Alice")
    assert bob.join(room, "Bob")
    assert carol.join(room, "Carol")

    assert alice.inbox == [Welcome("Alice"), Greeting("Alice", 0, ""), UserJoined("Bob"), UserJoined("Carol")]
    assert bob.inbox == [Welcome("Bob"), Greeting("Bob", 1, "Alice"), UserJoined("Carol")]
    assert carol.inbox == [Welcome("Carol"), Greeting("Carol", 2, "Alice\nBob")]
    assert room.names() == ["Alice", "Bob", "Carol"]
    assert carol.name == "Carol"


@pytest.mark.parametrize(
    "first, second",
    [("Alice", "Alice"), ("Alice", "ALICE"), ("alice", "aLiCe"), ("STRASSE", "straße"), ("straße", "STRASSE")],
)
def test_join_with_a_taken_name_is_refused_and_changes_nothing(first, second):
    room = Room()
    holder, watcher, latecomer = FakeMember(), FakeMember(), FakeMember()
    assert holder.join(room, first)
    assert watcher.join(room, "Watcher")
    holder_inbox, watcher_inbox = list(holder.inbox), list(watcher.inbox)

    assert latecomer.join(room, second) is False

    assert latecomer.inbox == []
    assert latecomer.name is None
    assert holder.inbox == holder_inbox
    assert watcher.inbox == watcher_inbox
    assert sorted(room.names()) == sorted([first, "Watcher"])


def test_leave_tells_the_others_and_frees_the_name():
    room = Room()
    alice, bob = FakeMember(), FakeMember()
    alice.join(room, "Alice")
    bob.join(room, "Bob")

    room.leave(bob.membership)

    assert alice.inbox[-1] == UserLeft("Bob")
    assert UserLeft("Bob") not in bob.inbox
    assert room.names() == ["Alice"]
    newcomer = FakeMember()
    assert newcomer.join(room, "BOB")
    assert alice.inbox[-1] == UserJoined("BOB")


def test_leave_of_a_membership_the_room_no_longer_holds_is_a_no_op():
    room = Room()
    alice, bob = FakeMember(), FakeMember()
    alice.join(room, "Alice")
    bob.join(room, "Bob")
    stale = bob.membership
    room.leave(stale)
    bob.join(room, "Bob")  # the same name, a new membership
    impostor = FakeMember()
    forged = Membership(impostor, "Alice", "local/99", 0.0)  # Alice's name, not her place
    before = list(alice.inbox)

    room.leave(stale)
    room.leave(forged)

    assert room.names() == ["Alice", "Bob"]
    assert alice.inbox == before
    assert impostor.inbox == []


def test_a_broadcast_is_encoded_once_for_all_its_readers():
    room = Room()
    sender, *readers = [FakeMember() for _ in range(5)]
    for i, member in enumerate([sender, *readers]):
        member.join(room, f"m{i}")

    room.publish(ChatMessage("m0", "to everyone"), sender=sender.membership)

    delivered = [reader.items[-1] for reader in readers]
    assert [item.message for item in delivered] == [ChatMessage("m0", "to everyone")] * 4
    assert all(item is delivered[0] for item in delivered)  # one object: one encoding


def test_leave_twice_tells_the_others_once():
    room = Room()
    alice, bob = FakeMember(), FakeMember()
    alice.join(room, "Alice")
    bob.join(room, "Bob")

    room.leave(bob.membership)
    room.leave(bob.membership)

    assert alice.inbox.count(UserLeft("Bob")) == 1


def test_broadcast_skips_the_sender_and_keeps_one_order_for_everyone():
    room = Room()
    senders = [FakeMember(f"s{i}") for i in range(3)]
    listener = FakeMember()
    for i, member in enumerate(senders):
        member.join(room, f"S{i}")
    listener.join(room, "Listener")
    for member in [*senders, listener]:
        member.inbox.clear()
    barrier = threading.Barrier(len(senders))

    def send_all(member):
        def run():
            barrier.wait(DEADLINE)
            for n in range(200):
                room.publish(ChatMessage(member.name, str(n)), sender=member.membership)

        return run

    run_threads([send_all(m) for m in senders])

    everything = listener.inbox
    assert len(everything) == 600
    for member in senders:
        assert all(m.sender != member.name for m in member.inbox)
        assert member.inbox == [m for m in everything if m.sender != member.name]
        own = [m.text for m in everything if m.sender == member.name]
        assert own == [str(n) for n in range(200)]


def test_concurrent_joins_of_one_name_let_exactly_one_in():
    room = Room()
    members = [FakeMember(str(i)) for i in range(20)]
    spellings = ["Alice", "ALICE", "alice", "aLiCe"]
    barrier = threading.Barrier(len(members))
    results: dict[str, bool] = {}

    def claim(i, member):
        def run():
            barrier.wait(DEADLINE)
            results[member.label] = member.join(room, spellings[i % len(spellings)])

        return run

    run_threads([claim(i, m) for i, m in enumerate(members)])

    winners = [m for m in members if results[m.label]]
    assert len(results) == 20
    assert len(winners) == 1
    assert len(room.names()) == 1
    assert [m for m in members if m.inbox] == winners
    assert winners[0].inbox == [Welcome(winners[0].name), Greeting(winners[0].name, 0, "")]


# --- private lines, renames, history ------------------------------------------------------------------


def test_private_line_reaches_only_the_recipient_and_a_receipt_the_sender():
    room, (ann, bob, cat) = room_with("Ann", "Bob", "Cat")

    assert room.send_private(ann.membership, "bob", "psst")  # any case

    assert bob.inbox == [PrivateMessage("Ann", "Bob", "psst")]
    assert ann.inbox == [PrivateMessage("Ann", "Bob", "psst")]
    assert cat.inbox == []


def test_private_line_to_an_unknown_name_goes_nowhere():
    room, (ann, bob) = room_with("Ann", "Bob")

    assert not room.send_private(ann.membership, "Nobody", "psst")
    assert ann.inbox == bob.inbox == []


def test_private_line_to_oneself_arrives_once():
    room, (ann,) = room_with("Ann")
    assert room.send_private(ann.membership, "Ann", "note to self")
    assert ann.inbox == [PrivateMessage("Ann", "Ann", "note to self")]


def test_rename_tells_everyone_and_frees_the_old_name():
    room, (ann, bob) = room_with("Ann", "Bob")

    assert room.rename(ann.membership, "Annie")

    assert ann.name == "Annie"
    assert ann.inbox == bob.inbox == [NickChanged("Ann", "Annie")]
    assert room.names() == ["Annie", "Bob"]
    assert FakeMember().join(room, "ann")  # the old name is free


def test_rename_to_a_taken_name_is_refused_in_any_case():
    room, (ann, bob) = room_with("Ann", "Bob")

    assert not room.rename(ann.membership, "BOB")

    assert ann.name == "Ann" and room.names() == ["Ann", "Bob"]
    assert ann.inbox == bob.inbox == []


def test_rename_to_another_case_of_ones_own_name_is_allowed():
    room, (ann,) = room_with("ann")
    assert room.rename(ann.membership, "Ann")
    assert room.names() == ["Ann"]


@pytest.mark.parametrize("look_alike", ["ａｄｍｉｎ", "ADMIN", "𝐚dmin", "admin\ufe0f", "\u0430dmin"])
def test_a_name_that_looks_like_one_online_is_taken_and_its_holder_named(look_alike):
    # The room compares by names.key; refusing invisibles and mixed scripts
    # is names.accept's business, before the room (test_names.py).
    room, (admin,) = room_with("admin")
    impostor = FakeMember()

    assert impostor.join(room, look_alike) is False
    assert room.holder(look_alike) == "admin"
    assert room.names() == ["admin"] and admin.inbox == []


def test_rename_to_a_look_alike_of_someone_online_is_refused():
    room, (_admin, eve) = room_with("admin", "eve")
    assert not room.rename(eve.membership, "ＡＤＭＩＮ")
    assert eve.name == "eve" and room.names() == ["admin", "eve"]


def test_a_private_line_finds_its_recipient_by_the_same_key():
    room, (admin, bob) = room_with("admin", "Bob")

    assert room.send_private(bob.membership, "ＡＤＭＩＮ", "psst")

    assert admin.inbox == [PrivateMessage("Bob", "admin", "psst")]
    assert room.holder("nobody") is None


def test_who_lists_names_with_seconds_online():
    clock = FakeClock(100.0)
    room = Room(monotonic=clock)
    FakeMember().join(room, "bob")
    clock.now = 130.0
    FakeMember().join(room, "Ann")
    clock.now = 190.5

    assert room.who() == [("Ann", 60), ("bob", 90)]


def test_newcomer_gets_welcome_motd_then_history_and_older_lines_are_dropped():
    room, (ann,) = room_with("Ann", history_size=2, motd="Be nice.", clock=FakeClock())
    for text in ("one", "two"):
        room.publish(ChatMessage("Ann", text), sender=ann.membership)
    room.publish(ActionMessage("Ann", "waves"), sender=ann.membership)

    bob = FakeMember()
    bob.join(room, "Bob")

    assert bob.inbox == [
        Welcome("Bob"),
        Greeting("Bob", 1, "Ann"),
        Motd("Be nice."),
        HistoryMessage("Ann", "two", 1764100000, "chat"),
        HistoryMessage("Ann", "waves", 1764100000, "action"),
    ]


def test_history_of_zero_keeps_nothing():
    room, (ann,) = room_with("Ann", history_size=0)
    room.publish(ChatMessage("Ann", "one"), sender=ann.membership)
    bob = FakeMember()
    bob.join(room, "Bob")
    assert bob.inbox == [Welcome("Bob"), Greeting("Bob", 1, "Ann")]


def test_leaving_with_a_parting_line_tells_the_others_that_line():
    room, (ann, bob) = room_with("Ann", "Bob")
    room.leave(ann.membership, "see you")
    assert bob.inbox == [UserParted("Ann", "see you")]


# --- the user list ---------------------------------------------------------


def test_a_user_list_too_long_for_one_message_lists_what_fits_and_counts_the_rest():
    # A thousand names of 32 four-byte characters: 128 KB, twice what a field holds.
    members = [(f"{n:03d}" + "\U0001f600" * 29, n) for n in range(1000)]

    messages = user_list_messages(members)

    user_list, notice = messages
    listed = user_list.members()
    assert listed == members[: len(listed)] and 0 < len(listed) < 1000
    assert len(protocol.encode_message(user_list)) <= USER_LIST_BYTES + 16
    assert notice == Notice(f"...and {1000 - len(listed)} more: too many to list.")


def test_a_user_list_that_fits_is_one_message():
    members = [("Ann", 5), ("Bob", 7)]
    assert user_list_messages(members) == [UserList.of(members)]


# --- joins and leaves in a busy room (chat/presence.py), on a pinned clock ----


class FakeTimer:
    """The room's timer, called back by the test instead of a thread."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waiting: list[tuple[float, object]] = []  # (when, callback)

    def __call__(self, seconds: float, callback) -> None:
        self.waiting.append((self.clock.now + seconds, callback))

    def fire(self) -> None:
        (_, callback), *self.waiting = self.waiting
        callback()

    def fire_due(self, now: float) -> None:
        while self.waiting and self.waiting[0][0] <= now:
            self.fire()


class RecordingCluster(LocalCluster):
    """The cluster of one, keeping what the room published through it."""

    def __init__(self) -> None:
        self.published: list = []

    def publish(self, message, sender_id) -> None:
        self.published.append(message)
        super().publish(message, sender_id)


class LateCluster(LocalCluster):
    """The cluster of one, holding what is published until ``deliver_late``:
    as when a join is told only after the next newcomer came in."""

    def __init__(self) -> None:
        self.held: list = []

    def publish(self, message, sender_id) -> None:
        self.held.append((message, sender_id))

    def deliver_late(self) -> None:
        held, self.held = self.held, []
        for message, sender_id in held:
            self._room.distribute(message, sender_id)


def test_a_join_told_late_is_not_told_to_whoever_came_in_after_it():
    cluster = LateCluster()
    room = Room(cluster=cluster)
    first, ann = FakeMember(), FakeMember()
    first.join(room, "First")
    cluster.deliver_late()
    ann.join(room, "Ann")  # Ann's join waits...
    bob = FakeMember()
    bob.join(room, "Bob")  # ...until Bob is in: his Greeting named her
    cluster.deliver_late()
    assert bob.inbox == [Welcome("Bob"), Greeting("Bob", 2, "Ann\nFirst")]
    assert first.inbox[2:] == [UserJoined("Ann"), UserJoined("Bob")]
    assert ann.inbox[2:] == [UserJoined("Bob")]


def busy_room(busy_from: int = 3):
    clock, cluster = FakeClock(100.0), RecordingCluster()
    timer = FakeTimer(clock)
    room = Room(monotonic=clock, timer=timer, cluster=cluster, presence=Presence(interval=1.0, busy_from=busy_from))
    return room, clock, timer, cluster


def test_filling_a_busy_room_tells_its_members_one_line_a_second():
    room, clock, timer, cluster = busy_room(busy_from=3)
    members = [FakeMember(f"m{i}") for i in range(40)]
    for index, member in enumerate(members):
        clock.now = 100.0 + index / 16  # sixteen joins a second, for two and a half seconds
        timer.fire_due(clock.now)
        assert member.join(room, f"m{index}")
    clock.now = 103.0625
    timer.fire_due(clock.now)
    assert not timer.waiting
    # m0 and m1 were told as they came (a small room); from then on, one line
    # a second: 40 joins, 5 lines, instead of 40.
    assert cluster.published == [
        UserJoined("m0"),
        UserJoined("m1"),
        Notice("m2, m3 and 13 others joined the chat."),
        Notice("m17, m18 and 14 others joined the chat."),
        Notice("m33, m34 and 5 others joined the chat."),
    ]
    # The first member heard every one of them, in that order, and the last
    # what came after its own join.
    assert members[0].inbox[2:] == cluster.published[1:]  # after its Welcome and Greeting
    assert members[-1].inbox[2:] == cluster.published[-1:]


def test_a_join_in_a_quiet_busy_room_reads_as_always_and_not_to_the_joiner():
    room, clock, timer, _ = busy_room(busy_from=1)
    alice, bob = FakeMember(), FakeMember()
    alice.join(room, "Alice")
    clock.now += 5
    bob.join(room, "Bob")
    assert alice.inbox == [Welcome("Alice"), Greeting("Alice", 0, ""), UserJoined("Bob")]
    assert bob.inbox == [Welcome("Bob"), Greeting("Bob", 1, "Alice")]
    assert not timer.waiting


def test_a_summary_waits_on_the_timer_and_a_parting_line_does_not():
    room, clock, timer, _ = busy_room(busy_from=1)
    watcher, bob, carol = FakeMember(), FakeMember(), FakeMember()
    watcher.join(room, "Watcher")
    bob.join(room, "Bob")
    carol.join(room, "Carol")
    # Both wait: the Watcher's own join was the line.
    assert watcher.inbox == [Welcome("Watcher"), Greeting("Watcher", 0, "")]
    assert [when for when, _ in timer.waiting] == [clock.now + 1.0]
    room.leave(carol.membership, "bye")
    assert watcher.inbox[-1] == UserParted("Carol", "bye")
    timer.fire()
    assert watcher.inbox[-1] == UserJoined("Bob")  # Carol's join is dropped: she is gone


def test_leaves_in_a_busy_room_are_summed_up_too():
    room, clock, timer, _ = busy_room(busy_from=1)
    members = [FakeMember() for _ in range(5)]
    for index, member in enumerate(members):
        member.join(room, f"p{index}")
    clock.now += 10
    timer.fire()
    clock.now += 5  # a quiet room again
    members[0].inbox.clear()
    for member in members[1:]:
        room.leave(member.membership)
    assert members[0].inbox == [UserLeft("p1")]
    clock.now += 1
    timer.fire()
    assert members[0].inbox == [UserLeft("p1"), Notice("p2, p3 and p4 left the chat.")]


# --- several messages at once (the cluster thread's XREAD) -------------------


class CountingMember(FakeMember):
    """A fake member that notes its label in a shared log on every delivery."""

    def __init__(self, label: str, log: list[str]) -> None:
        super().__init__(label)
        self.log = log

    def deliver(self, item: protocol.Encoded) -> bool:
        self.log.append(self.label)
        return super().deliver(item)


def test_distribute_all_gives_each_member_the_whole_run_at_once_in_order():
    log: list[str] = []
    room = Room()
    alice, bob, carol = CountingMember("a", log), CountingMember("b", log), CountingMember("c", log)
    for member, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        member.join(room, name)
    for member in (alice, bob, carol):
        member.inbox.clear()
    log.clear()
    lines = [ChatMessage("alice", "one"), ActionMessage("bob", "waves"), ChatMessage("carol", "three")]
    room.distribute_all([(line, member.membership.member_id, 10.0) for line, member in zip(lines, (alice, bob, carol))])
    assert carol.inbox == lines[:2] and alice.inbox == lines[1:] and bob.inbox == [lines[0], lines[2]]
    # Member by member, each one's items together: a writer seals them as one record.
    assert log == ["a", "a", "b", "b", "c", "c"]
    newcomer = FakeMember()
    newcomer.join(room, "dave")
    assert [m.text for m in newcomer.inbox if isinstance(m, HistoryMessage)] == ["one", "waves", "three"]


def test_distribute_all_keeps_a_private_line_in_its_place_and_for_its_recipient():
    room, (alice, bob) = room_with("alice", "bob")
    private = PrivateMessage("zed", "bob", "psst")  # from someone on another server
    room.distribute_all(
        [
            (ChatMessage("zed", "before"), "other/1", None),
            (private, "other/1", None),
            (ChatMessage("zed", "after"), "other/1", None),
        ]
    )
    assert bob.inbox == [ChatMessage("zed", "before"), private, ChatMessage("zed", "after")]
    assert alice.inbox == [ChatMessage("zed", "before"), ChatMessage("zed", "after")]
