"""chat/rooms.py: rooms besides the lobby, through the member session, with
no socket: joining and parting, the caps, look-alike names, invite-only
rooms bound to keys, the operator's close and kick, and each room's own
order and history."""

from __future__ import annotations

import pytest

from socket_chat import protocol
from socket_chat.chat.history import Line
from socket_chat.chat.member import ASK_USERNAME, NO_ROOMS_HERE, ROOMS_NOT_ASKED
from socket_chat.chat.room import Room
from socket_chat.chat.rooms import RoomRefused, Rooms, room_key, room_name
from tests.helpers import run_threads
from tests.test_member import STRICT, Person, errors

KEY_A = "SHA256:" + "A" * 43
KEY_B = "SHA256:" + "B" * 43


class Member(Person):
    """A person in the lobby who took the offer of rooms."""

    def request(self, command: str, room: str = "", argument: str = "") -> list[protocol.Message]:
        return self.send(protocol.RoomRequest(command, room, argument))

    def say(self, room: str, text: str, kind: str = "chat") -> list[protocol.Message]:
        return self.send(protocol.RoomLine(room, kind, text))


def member(lobby: Room, rooms: Rooms | None, name: str, key: str | None = None, take: bool = True) -> Member:
    person = Member(lobby, rooms=rooms)
    person.session.start()
    assert (protocol.Rooms() in person.inbox) is (rooms is not None)  # offered after the others, before the question
    if rooms is not None:
        assert person.inbox.index(protocol.Rooms()) == person.inbox.index(protocol.UsernameRequest(ASK_USERNAME)) - 1
    if take:
        person.send(protocol.Rooms())  # no answer
        assert person.heard() == []
    person.session.fingerprint = key  # as a proof that checked out would have set it
    person.send(protocol.Username(name))
    person.heard()
    return person


@pytest.fixture
def lobby() -> Room:
    return Room(history_size=0)


@pytest.fixture
def rooms(lobby: Room) -> Rooms:
    return Rooms(lobby, history_size=5, max_rooms=3, per_person=2, room_size=3, clock=lambda: 1764100000.0)


def of(heard: list[protocol.Message], kind: type) -> list:
    return [m for m in heard if isinstance(m, kind)]


def test_room_names_follow_the_username_rules_so_look_alikes_are_one_room():
    assert room_name("#dev") == "#dev"
    assert room_key("#dev") == room_key("#DEV") == room_key("#d\u0435v")  # a Cyrillic е
    for bad in ("dev", "#", "#a:b", "#" + "x" * 200, "#d\u0435v"):  # a new room of mixed scripts is refused
        with pytest.raises(RoomRefused):
            room_name(bad)


def test_join_makes_a_room_the_others_are_told_and_lines_go_to_its_members_only(lobby, rooms):
    ann, bob, cy = (member(lobby, rooms, name) for name in ("Ann", "Bob", "Cy"))
    assert ann.request("join", "#dev") == [protocol.Joined("#dev", "", 1, "Ann")]
    heard = bob.request("join", "#d\u0435v")  # the look-alike is the same room, under its first name
    assert heard == [protocol.Joined("#dev", "", 2, "Ann\nBob")]
    assert ann.heard() == [protocol.RoomNotice("#dev", "Bob joined #dev.")]
    assert bob.say("#dev", "hi") == []  # no echo asked for
    assert ann.heard() == [protocol.RoomMessage("#dev", "1", 1764100000, "chat", "Bob", "hi")]
    assert cy.heard() == []  # not in #dev, and the lobby heard nothing
    assert errors(cy.say("#dev", "let me in")) == ["You are not in #dev (/join #dev first). The line was not sent."]
    assert ann.heard() == bob.heard() == []


def test_each_room_has_its_own_order_and_history_and_the_lobby_is_untouched(lobby, rooms):
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#dev"), ann.request("join", "#ops")
    for n in range(7):
        ann.say("#dev", f"dev {n}")
    ann.say("#ops", "ops 0", kind="action")
    ann.send(protocol.ChatLine("in the lobby"))
    assert of(bob.heard(), protocol.ChatMessage) == [protocol.ChatMessage("Ann", "in the lobby")]
    heard = bob.request("join", "#dev")
    assert [(m.id, m.text) for m in of(heard, protocol.RoomHistoryLine)] == [
        (str(n + 1), f"dev {n}") for n in range(2, 7)
    ]
    ops = of(bob.request("join", "#ops"), protocol.RoomHistoryLine)
    assert [(m.id, m.kind, m.text) for m in ops] == [("1", "action", "ops 0")]  # its own sequence


def test_part_tells_the_others_and_an_empty_room_is_gone(lobby, rooms):
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#dev"), bob.request("join", "#dev")
    ann.heard()
    assert bob.request("part", "#dev", "off to bed") == [protocol.Parted("#dev", "")]
    assert ann.heard() == [protocol.RoomNotice("#dev", "Bob left #dev (off to bed).")]
    assert errors(bob.request("part", "#dev")) == ["You are not in #dev (/join #dev first)."]
    ann.request("part", "#dev")
    assert errors(ann.request("who", "#dev")) == ["There is no room #dev."]
    assert rooms.listing() == [protocol.RoomList("")]


def test_leaving_the_chat_leaves_every_room_and_passes_the_founders_role_on(lobby, rooms):
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#dev"), bob.request("join", "#dev")
    ann.session.leave()
    assert protocol.RoomNotice("#dev", "Ann left #dev.") in bob.heard()
    assert bob.request("mode", "#dev", "+i") == [
        protocol.RoomNotice("#dev", "Bob set #dev +i: only those invited may join.")
    ]


def test_rooms_lists_names_counts_and_topics_and_who_lists_a_rooms_members(lobby, rooms):
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#ops"), ann.request("join", "#dev"), bob.request("join", "#dev")
    ann.heard()
    assert bob.request("topic", "#dev", "  the   build ") == [
        protocol.RoomNotice("#dev", "Bob set the topic of #dev: the build")
    ]
    assert ann.heard() == [protocol.RoomNotice("#dev", "Bob set the topic of #dev: the build")]
    (listing,) = bob.request("rooms")
    assert listing.rooms() == [("#dev", 2, "the build"), ("#ops", 1, "")]
    assert bob.request("who", "#ops") == [protocol.RoomMembers("#ops", "Ann")]
    assert errors(bob.request("topic", "#dev", "x" * 301))[0].startswith("A topic may be 300 characters")
    assert errors(bob.request("dance", "#dev")) == ["There is no room command /dance."]


def test_the_caps_are_each_a_clear_refusal(lobby, rooms):
    people = [member(lobby, rooms, name) for name in ("Ann", "Bob", "Cy", "Di")]
    ann = people[0]
    ann.request("join", "#a"), ann.request("join", "#b")
    assert errors(ann.request("join", "#c")) == ["You are in 2 rooms already, the most one may be in: /part one first."]
    for person in people[1:3]:
        person.request("join", "#a")
    assert errors(people[3].request("join", "#a")) == ["#a is full: it holds 3 people at most."]
    people[3].request("join", "#c")
    assert errors(people[2].request("join", "#d"))[0].startswith("This server has 3 rooms already, the most it holds")
    assert ann.request("join", "#a")[0] == protocol.Joined("#a", "", 3, "Ann\nBob\nCy")  # already in: sent again


def test_invite_only_rooms_take_an_invitation_bound_to_the_key(lobby, rooms):
    ann = member(lobby, rooms, "Ann", key=KEY_A)
    bob = member(lobby, rooms, "Bob", key=KEY_B)
    ann.request("join", "#dev")
    assert ann.request("mode", "#dev", "+i") == [
        protocol.RoomNotice("#dev", "Ann set #dev +i: only those invited may join.")
    ]
    assert errors(bob.request("join", "#dev")) == ["#dev is invite-only (+i): ask its founder for an /invite."]
    assert errors(bob.request("invite", "#dev", "Ann")) == ["You are not in #dev (/join #dev first)."]
    assert errors(bob.request("who", "#dev")) == ["#dev is invite-only: only its members see who is in it."]
    assert ann.request("invite", "#dev", "bob") == [protocol.Notice("Bob is invited to #dev (bound to their key).")]
    assert bob.heard() == [protocol.Notice("Ann invites you to #dev: /join #dev")]
    bob.session.leave()  # a guest takes the name, then a look-alike of it: neither holds the key
    guest = member(lobby, rooms, "BOB")
    assert errors(guest.request("join", "#dev")) == ["#dev is invite-only (+i): ask its founder for an /invite."]
    guest.session.leave()
    back = member(lobby, rooms, "Bob", key=KEY_B)  # the key itself: its invitation
    assert of(back.request("join", "#dev"), protocol.Joined)[0].count == 2
    back.request("part", "#dev")
    assert errors(back.request("join", "#dev"))[0].startswith("#dev is invite-only")  # used once


def test_a_guests_invitation_is_bound_to_that_connection(lobby, rooms):
    ann = member(lobby, rooms, "Ann", key=KEY_A)
    guest = member(lobby, rooms, "Gus")
    ann.request("join", "#dev"), ann.request("mode", "#dev", "+i")
    assert ann.request("invite", "#dev", "Gus") == [
        protocol.Notice("Gus is invited to #dev (bound to this connection of theirs (a guest: no key)).")
    ]
    assert errors(member(lobby, rooms, "Gus2").request("join", "#dev"))[0].startswith("#dev is invite-only")
    assert of(guest.request("join", "#dev"), protocol.Joined)


def test_only_the_founder_sets_the_mode_and_invites(lobby, rooms):
    ann, bob = member(lobby, rooms, "Ann"), member(lobby, rooms, "Bob")
    ann.request("join", "#dev"), bob.request("join", "#dev")
    assert errors(bob.request("mode", "#dev", "+i")) == ["Only the founder of #dev may use /mode there."]
    assert errors(ann.request("mode", "#dev", "+x")) == [
        "The mode is +i (only those invited may join) or -i (anyone may)."
    ]
    assert errors(ann.request("invite", "#dev", "Bob")) == [
        "Anyone may join #dev (it is not +i): no invitation is needed."
    ]


def test_the_operator_closes_a_room_and_kicks_from_one(lobby, rooms):
    ann, bob, cy = (member(lobby, rooms, name) for name in ("Ann", "Bob", "Cy"))
    for person in (ann, bob, cy):
        person.request("join", "#dev")
    ann.heard(), bob.heard(), cy.heard()
    assert rooms.kick("#DEV", "bob", "spam") == "Bob was kicked from #dev."
    assert bob.heard() == [protocol.Parted("#dev", "You were kicked from #dev by the operator: spam")]
    kicked = protocol.RoomNotice("#dev", "Bob was kicked from #dev by the operator: spam")
    assert ann.heard() == cy.heard() == [kicked]
    assert bob.session.stage.value == "chatting"  # still in the chat: the lobby
    with pytest.raises(RoomRefused, match="No one called Bob is in #dev"):
        rooms.kick("#dev", "Bob")
    assert rooms.close("#dev", "off topic") == "#dev is closed (2 people were in it)."
    assert ann.heard() == cy.heard() == [protocol.Parted("#dev", "The operator closed #dev: off topic")]
    assert errors(ann.say("#dev", "hello?")) == ["There is no room #dev. The line was not sent."]
    with pytest.raises(RoomRefused, match="There is no room #dev"):
        rooms.close("#dev")
    assert rooms._joined == {}  # nothing kept for the people who were in it


def test_room_requests_are_refused_without_the_offer_taken_or_without_rooms(lobby, rooms):
    older = member(lobby, rooms, "Old", take=False)
    assert errors(older.request("join", "#dev")) == [ROOMS_NOT_ASKED]
    in_a_cluster = member(lobby, None, "Clu")
    in_a_cluster.send(protocol.Rooms())  # not offered: taking it changes nothing
    assert errors(in_a_cluster.request("join", "#dev")) == [NO_ROOMS_HERE]
    assert errors(in_a_cluster.say("#dev", "hi")) == [NO_ROOMS_HERE]


def test_a_room_line_is_checked_as_a_lobby_line_and_echoed_on_request(lobby, rooms):
    ann = member(lobby, rooms, "Ann")
    ann.send(protocol.EchoOwnLines())
    ann.request("join", "#dev")
    assert errors(ann.say("#dev", "   ")) == ["An empty message was not sent."]
    assert errors(ann.say("#dev", "x", kind="shout")) == ["A room line's kind is chat or action, not shout."]
    assert ann.say("#dev", "waves", kind="action") == [
        protocol.RoomMessage("#dev", "1", 1764100000, "action", "Ann", "waves")
    ]


class Kept:
    """A RoomHistoryStore in memory, as the server's store behaves."""

    def __init__(self) -> None:
        self.lines: dict[str, list[Line]] = {}

    def keep_room(self, room: str, entry: Line) -> None:
        self.lines.setdefault(room, []).append(entry)

    def room_recent(self, room: str, count: int) -> list[Line]:
        return self.lines.get(room, [])[-count:]


def test_a_room_made_again_gets_its_history_and_ids_back_from_the_store(lobby):
    store = Kept()
    rooms = Rooms(lobby, history_size=2, store=store, clock=lambda: 5.0)
    ann = member(lobby, rooms, "Ann")
    ann.request("join", "#dev")
    for text in ("one", "two", "three"):
        ann.say("#dev", text)
    ann.request("part", "#dev")
    assert [line.text for line in store.lines[room_key("#dev")]] == ["one", "two", "three"]
    heard = ann.request("join", "#Dev")
    assert [(m.id, m.text) for m in of(heard, protocol.RoomHistoryLine)] == [("2", "two"), ("3", "three")]
    ann.send(protocol.EchoOwnLines())
    assert of(ann.say("#dev", "four"), protocol.RoomMessage)[0].id == "4"


def test_the_room_messages_encode_as_protocol_md_says():
    import re
    from pathlib import Path

    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text()
    section = spec.split("### Rooms", 1)[1].split("### Display", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    vectors = dict(line.split(" = ") for line in block.strip().splitlines())
    assert len(vectors) == 10
    for written, hex_bytes in vectors.items():
        message = eval(written, {name: getattr(protocol, name) for name in re.findall(r"^\w+", written)})
        assert protocol.encode_message(message).hex() == hex_bytes, written
        assert protocol.decode_message(bytes.fromhex(hex_bytes)) == message


def test_room_requests_and_lines_are_charged_to_flood_control(lobby, rooms):
    ann = Member(lobby, STRICT, rooms=rooms)  # 3 at once, then 1 a second
    ann.session.start()
    ann.send(protocol.Rooms(), protocol.Username("Ann"))
    ann.heard()
    assert of(ann.request("join", "#dev"), protocol.Joined)
    ann.request("rooms"), ann.say("#dev", "one")
    assert errors(ann.request("rooms"))[0].startswith("Slow down: nothing was done.")
    assert errors(ann.say("#dev", "two"))[0].startswith('Slow down: "two" was not sent.')
    ann.clock.advance(1.0)
    assert of(ann.request("who", "#dev"), protocol.RoomMembers)


def test_lines_said_at_once_from_several_threads_reach_everyone_in_one_order_per_room(lobby):
    rooms = Rooms(lobby, history_size=0)
    people = [member(lobby, rooms, f"P{n}") for n in range(4)]
    listeners = [member(lobby, rooms, name) for name in ("Ann", "Bob")]
    for person in people + listeners:
        person.request("join", "#dev")
    for person in people + listeners:
        person.heard()

    def talk(person: Member) -> None:
        me = person.session.membership
        assert me is not None
        for n in range(50):
            rooms.say(me, "#dev", "chat", f"{me.name} {n}")

    run_threads([lambda p=p: talk(p) for p in people])
    heard = [[(m.id, m.text) for m in of(listener.heard(), protocol.RoomMessage)] for listener in listeners]
    assert heard[0] == heard[1]  # one order
    assert [line_id for line_id, _ in heard[0]] == [str(n) for n in range(1, 201)]  # numbered in it, none lost
    for name in (f"P{n}" for n in range(4)):  # each one's lines in the order said
        assert [text for _, text in heard[0] if text.split()[0] == name] == [f"{name} {n}" for n in range(50)]
