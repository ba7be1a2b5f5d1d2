"""bench/rooms.py counts right: the people are spread evenly over the
rooms, every delivery is counted once (a duplicate as a duplicate, a
missing one as lost), and its report and targets hold the figures. The
run itself is part of the quick run (tests/test_bench.py, marked slow).
Never a time: a benchmark reports, a test checks."""

from __future__ import annotations

import json
import types

from bench import rooms
from socket_chat import protocol

PLAN = rooms.FULL_ROOMS


def client(name: str):
    return types.SimpleNamespace(name=name)


def test_the_people_are_spread_evenly_and_each_speaker_is_in_its_room():
    for plan in (rooms.FULL_ROOMS, rooms.QUICK_ROOMS):
        sizes = [rooms.members_of(room, plan) for room in range(plan.rooms)]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == plan.people * plan.rooms_each, sizes
        assert all(room in rooms.rooms_of(room, plan) for room in range(plan.chatting))
        assert plan.big + 1 <= plan.people
    assert rooms.members_of(0, PLAN) == 50  # 1,000 people, 5 rooms each of 100


def test_traffic_counts_each_delivery_once_and_knows_when_a_line_is_everywhere():
    traffic = rooms.Traffic(big_receivers=2, chat_receivers={"#room0": 1})
    big = protocol.RoomMessage(rooms.BIG, "1", 0, "chat", "p9", "0 0")
    traffic.on_room(client("a"), big, 0.0)
    assert not traffic.big_done(0)
    traffic.on_room(client("a"), big, 0.0)  # the same client given it twice
    traffic.on_room(client("b"), big, 0.001)
    assert traffic.big_done(0) and traffic.duplicated == 1 and len(traffic.latencies_ms) == 1

    traffic.chat_sent.append(("#room0", 7))
    assert not traffic.chat_done()
    traffic.on_room(client("c"), protocol.RoomMessage("#room0", "1", 0, "chat", "p0", "7 chat"), 0.0)
    traffic.on_room(client("c"), protocol.Joined("#room0", "", 2, "c"), 0.0)
    assert traffic.chat_done() and traffic.joined["c"] == 1


def fan(kind: str, mode: str, cpu: float, big: int = 1000, chat: int = 0) -> rooms.FanRun:
    return rooms.FanRun(kind, mode, big_deliveries=big, chat_deliveries=chat, seconds=1.0, server_cpu=cpu)


def test_the_target_is_judged_on_the_median_of_the_rounds():
    results = rooms.RoomsResults(big=500, chatting=50, chat_members=50, chat_lines_per_second=50.0)
    assert rooms.targets(results) == []
    assert rooms.rows(results) == ["Not measured in this run (see the errors, if any)."]
    # Three rounds; the last on a slow phase of the machine for the run with the chatting. The
    # chatting costs 20 µs a delivery alone (a line to a small room: dearer than one to 500), so
    # apart, a run's 1,000 big-room and 100 chatting deliveries would cost 10 + 2 ms.
    for alone, with_ in ((0.010, 0.0104), (0.010, 0.0108), (0.010, 0.030)):
        for kind in ("lockstep", "burst"):
            results.runs += [fan(kind, "alone", alone), fan(kind, "with", with_ + 0.002, chat=100)]
        results.runs.append(fan("chatting", "alone", 0.002, big=0, chat=100))
    results.joins = rooms.JoinRun(1000, 100, joins=5000, seconds=2.0, server_cpu=1.0, notices=120_000)
    results.joins.waits_ms = [1.0, 2.0, 3.0]

    lockstep, burst = rooms.targets(results)
    assert burst[0].startswith("burst (64 in flight), one room of 500") and burst[2] == "yes"
    assert lockstep[0].startswith("lockstep (one message in flight), one room of 500 while 50 other rooms chat")
    # Summed, the slow round weighs (and the mix of rooms); a round's median against apart does not.
    assert lockstep[1:] == ("17.3 / 10.0 µs a delivery; against apart, median of the rounds 1.07", "yes")
    section = "\n".join(rooms.markdown(results))
    assert "| lockstep (one message in flight) | 10.0 | 17.3 | 1.733 | 1.067 (1.05–1.87; 1.03–2.67) |" in section
    assert "| 5,000 at once | 1,000 | 100 | 2.00 | 2,500 | 0.20 | 2.0 | 3.0 | 24.0 |" in section
    assert "on their own, 20.0 µs of server CPU per delivery (300 deliveries)" in section
    assert "Lost or duplicated deliveries in these runs: 0." in section

    results.runs.append(rooms.FanRun("lockstep", "with", lost=2, duplicated=1))
    figures = json.loads(json.dumps(rooms.as_json(results)))
    assert figures["lost_or_duplicated"] == 3 and figures["joins"]["joins"] == 5000
    assert len(figures["round_ratios"]["lockstep"]) == 3  # the fourth, with no run alone beside it, left out


def test_a_run_cut_short_still_gives_a_report():
    """An error after the lockstep runs (no burst run yet): the section says
    n/a where it has nothing, rather than failing the whole report."""
    results = rooms.RoomsResults(big=500, chatting=50, chat_members=50, chat_lines_per_second=50.0)
    results.runs += [fan("lockstep", "alone", 0.010), fan("lockstep", "with", 0.012, chat=100)]
    section = "\n".join(rooms.markdown(results))
    assert "| burst (64 in flight) | n/a | n/a | n/a |" in section
    assert [target[0].split(",")[0] for target in rooms.targets(results)] == ["lockstep (one message in flight)"]
