"""chat/presence.py: joins and leaves summed up in a busy room, on a pinned clock."""

from __future__ import annotations

import itertools

import pytest

from socket_chat.chat.presence import Presence, summary_text
from socket_chat.protocol import Notice, UserJoined, UserLeft

BUSY = 100  # members: a busy room in these tests


def joined(*names: str) -> list:
    return [UserJoined(name) for name in names]


def test_a_join_in_a_quiet_busy_room_is_told_at_once_as_itself():
    presence = Presence(interval=1.0, busy_from=50)
    assert presence.add(UserJoined("alice"), "s/1", now=10.0, members=BUSY) == [(UserJoined("alice"), "s/1")]
    assert presence.due is None


def test_joins_within_the_interval_wait_and_go_out_as_one_line():
    presence = Presence(interval=1.0, busy_from=50)
    presence.add(UserJoined("alice"), "s/1", now=10.0, members=BUSY)
    for index, name in enumerate(["bob", "carol", "dave", "erin", "frank"]):
        assert presence.add(UserJoined(name), f"s/{index + 2}", now=10.2 + index / 10, members=BUSY) == []
    assert presence.due == 11.0  # one interval after the last line told
    assert presence.flush(11.0) == [(Notice("bob, carol and 3 others joined the chat."), None)]
    assert presence.due is None


def test_one_change_that_waited_alone_reads_as_it_always_did():
    presence = Presence(interval=1.0, busy_from=50)
    presence.add(UserJoined("alice"), "s/1", now=10.0, members=BUSY)
    presence.add(UserLeft("bob"), "s/2", now=10.5, members=BUSY)
    assert presence.flush(11.0) == [(UserLeft("bob"), "s/2")]  # still not sent back to its member


def test_at_most_one_line_per_interval_however_many_come():
    presence = Presence(interval=1.0, busy_from=0)
    told_at = []
    now = 0.0
    for step in range(1000):  # ten joins or leaves a tenth of a second, for ten seconds
        now = step / 100
        if presence.due is not None and now >= presence.due and presence.flush(now):
            told_at.append(now)
        message = UserJoined(f"n{step}") if step % 3 else UserLeft(f"n{step - 1}")
        if presence.add(message, None, now, members=BUSY):
            told_at.append(now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(told_at)]
    assert len(told_at) >= 9 and min(gaps) >= 1.0 - 1e-9


def test_a_small_room_hears_of_every_join_at_once():
    presence = Presence(interval=1.0, busy_from=50)
    for index in range(10):
        told = presence.add(UserJoined(f"p{index}"), None, now=5.0, members=index + 1)
        assert told == [(UserJoined(f"p{index}"), None)]
    assert presence.due is None


def test_once_something_waits_what_follows_waits_too_so_the_order_holds():
    presence = Presence(interval=1.0, busy_from=50)
    presence.add(UserJoined("alice"), None, now=1.0, members=60)
    presence.add(UserJoined("bob"), None, now=1.5, members=61)
    # The room has shrunk below busy_from, but bob waits: carol must not pass him.
    assert presence.add(UserLeft("carol"), None, now=1.6, members=10) == []
    assert presence.flush(2.0) == [(Notice("bob joined the chat; carol left."), None)]


def test_a_member_who_parted_is_not_said_to_have_joined_afterwards():
    presence = Presence(interval=1.0, busy_from=0)
    presence.add(UserJoined("alice"), None, now=1.0, members=BUSY)
    presence.add(UserJoined("Bob"), None, now=1.2, members=BUSY)
    presence.add(UserJoined("carol"), None, now=1.3, members=BUSY)
    presence.parted("bob")  # told at once by the room, with the parting line
    assert presence.flush(2.0) == [(UserJoined("carol"), None)]


def test_flush_with_nothing_waiting_says_nothing():
    presence = Presence()
    assert presence.flush(3.0) == []


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        (joined("a", "b"), "a and b joined the chat."),
        (joined("a", "b", "c"), "a, b and c joined the chat."),
        (joined("a", "b", "c", "d"), "a, b and 2 others joined the chat."),
        ([UserLeft("a"), *joined("b", "c")], "a left the chat; b and c joined."),
        # A reconnect storm: everyone left and came back within the second.
        (
            [UserLeft("a"), UserLeft("b"), UserLeft("c"), UserLeft("d"), *joined("a", "b", "c", "d")],
            "a, b and 2 others left the chat; a, b and 2 others joined.",
        ),
        # Someone who came and went twice is counted once in each.
        ([UserJoined("a"), UserLeft("A"), UserJoined("a"), UserJoined("b")], "a and b joined the chat; A left."),
    ],
)
def test_summary_text(changes, text):
    assert summary_text(changes) == text
