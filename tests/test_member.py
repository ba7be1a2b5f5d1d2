"""chat/member.py: one person's session, its rules without a socket. Events
go in, what the person is told and what the room delivers come out in one
inbox (as they would in one send queue), and flood control runs on a clock
the test moves."""

from __future__ import annotations

import logging

import pytest

from socket_chat import protocol
from socket_chat.chat.allow import INVITED_ONLY, AllowList, Invitation
from socket_chat.chat.bans import Bans, banned_text
from socket_chat.chat.blocks import DEFAULT_MAX_LINES
from socket_chat.chat.limits import Limits
from socket_chat.chat.member import (
    ASK_USERNAME,
    MAX_AWAY_LENGTH,
    MAX_USERNAME_ATTEMPTS,
    TOO_MANY_USERNAMES,
    USERNAME_INVALID,
    USERNAME_LOOKS_TAKEN,
    USERNAME_TAKEN,
    MemberSession,
    Stage,
    recipient_name,
)
from socket_chat.chat.room import Room
from tests.test_limits import FakeClock
from tests.test_room import FakeMember

#: Three messages at once, then one a second: small enough to reach in a test.
STRICT = Limits(rate=1.0, burst=3)


class Person(FakeMember):
    """A room member with its session and no connection: what the session
    tells it goes into the same ``inbox`` as what the room delivers, in
    order, as into one send queue."""

    def __init__(self, room: Room, limits: Limits = Limits(), **options) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.session = MemberSession(
            room, self, limits, self.inbox.append, peer="192.0.2.7:4000", clock=self.clock, **options
        )

    def send(self, *events: protocol.Event) -> list[protocol.Message]:
        """Give the session ``events``; what came out for this person."""
        self.inbox.clear()
        for event in events:
            self.session.receive(event)
        return self.heard()

    def heard(self) -> list[protocol.Message]:
        heard, self.inbox[:] = list(self.inbox), []
        return heard


def joined(room: Room, name: str, limits: Limits = Limits(), **options) -> Person:
    """A person in ``room`` as ``name``, with nothing left in the inbox (of
    anyone in the room)."""
    person = Person(room, limits, **options)
    person.session.start()
    person.send(protocol.Username(name))
    assert person.session.stage is Stage.CHATTING
    return person


@pytest.fixture
def room() -> Room:
    return Room(history_size=0)


def errors(heard: list[protocol.Message]) -> list[str]:
    return [message.text for message in heard if isinstance(message, protocol.ErrorNotice)]


# --- choosing a username -----------------------------------------------------


def test_the_session_starts_with_the_limit_the_deadline_and_the_question(room):
    person = Person(room, Limits(rate=4, burst=10, username_timeout=42.5))
    person.session.start()
    assert person.heard() == [
        protocol.RateLimit(burst=10, interval_ms=250),
        protocol.UsernameDeadline(43),  # whole seconds, rounded up
        protocol.Stamps(),  # IDs and times offered
        protocol.MultilineOffer(DEFAULT_MAX_LINES),
        protocol.UsernameRequest(ASK_USERNAME),
    ]
    assert person.session.stage is Stage.NAMING


def test_a_session_given_its_connection_asks_for_a_key_proof_before_the_name(room):
    person = Person(room, Limits(rate=4, burst=10, username_timeout=42.5))
    person.session.start(session_id=bytes(32))
    assert person.heard() == [
        protocol.RateLimit(burst=10, interval_ms=250),
        protocol.UsernameDeadline(43),
        protocol.ProofRequest(),
        protocol.Stamps(),
        protocol.MultilineOffer(DEFAULT_MAX_LINES),
        protocol.UsernameRequest(ASK_USERNAME),
    ]
    assert person.session.stage is Stage.NAMING


def test_a_name_accepted_puts_the_person_in_the_room(room, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    watcher = joined(room, "Watcher")
    person = Person(room)

    heard = person.send(protocol.Username("  Ann "))

    assert heard[0] == protocol.Welcome("Ann") and isinstance(heard[1], protocol.Greeting)
    assert person.session.stage is Stage.CHATTING and person.session.membership.name == "Ann"
    assert watcher.heard() == [protocol.UserJoined("Ann")]
    assert "Ann joined from 192.0.2.7:4000" in caplog.text


@pytest.mark.parametrize(
    ("wanted", "answer"),
    [
        ("ann", USERNAME_TAKEN),  # another case of the same name: no "looks the same"
        ("ＡＮＮ", USERNAME_LOOKS_TAKEN.format(holder="Ann")),
        ("\u0430nn", USERNAME_INVALID.format(reason="mixes Cyrillic and Latin letters")),
        ("", USERNAME_INVALID.format(reason="is empty")),
    ],
)
def test_a_name_refused_is_asked_again_with_the_reason(room, wanted, answer):
    joined(room, "Ann")
    person = Person(room)
    assert person.send(protocol.Username(wanted)) == [protocol.UsernameRequest(answer)]
    assert person.session.stage is Stage.NAMING


def test_the_last_username_attempt_refused_ends_the_session_with_the_reason(room):
    joined(room, "Ann")
    person = Person(room)
    for _ in range(MAX_USERNAME_ATTEMPTS - 1):
        assert person.send(protocol.Username("Ann")) == [protocol.UsernameRequest(USERNAME_TAKEN)]
    assert person.session.goodbye is None

    assert person.send(protocol.Username("Ann")) == []  # not asked again
    assert person.session.stage is Stage.ENDED
    assert person.session.goodbye == TOO_MANY_USERNAMES == f"Too many username attempts ({MAX_USERNAME_ATTEMPTS})."


def test_the_last_username_attempt_may_still_succeed(room):
    joined(room, "Ann")
    person = Person(room)
    for _ in range(MAX_USERNAME_ATTEMPTS - 1):
        person.send(protocol.Username("Ann"))
    assert person.send(protocol.Username("Bea"))[0] == protocol.Welcome("Bea")
    assert person.session.stage is Stage.CHATTING


def test_before_a_name_only_a_name_is_answered(room):
    person = Person(room)
    assert person.send(protocol.ChatLine("hello?")) == [protocol.ErrorNotice("Choose a username first.")]
    assert person.send(protocol.EchoOwnLines()) == [protocol.EchoOwnLines()]  # any stage
    assert person.send(protocol.MalformedMessage("a bad field")) == [
        protocol.ErrorNotice("Message not understood: a bad field.")
    ]
    assert person.session.stage is Stage.NAMING


@pytest.mark.parametrize(
    "end", [protocol.Goodbye(""), protocol.Goodbye("never mind"), protocol.ConnectionClosed(clean=True)]
)
def test_leaving_before_a_name_ends_the_session_without_a_goodbye(room, end):
    person = Person(room)
    assert person.send(end) == []
    assert person.session.stage is Stage.ENDED and person.session.goodbye is None


# --- lines to everyone -------------------------------------------------------


def test_a_line_and_an_action_go_to_the_others_not_back_to_the_sender(room):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    ann.heard()

    assert ann.send(protocol.ChatLine("hello"), protocol.ActionLine("waves")) == []
    assert bob.heard() == [protocol.ChatMessage("Ann", "hello"), protocol.ActionMessage("Ann", "waves")]


def test_echo_own_lines_brings_ones_lines_back_in_the_rooms_order(room):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    ann.heard()

    assert ann.send(protocol.EchoOwnLines(), protocol.ChatLine("mine"), protocol.ActionLine("nods")) == [
        protocol.EchoOwnLines(),
        protocol.ChatMessage("Ann", "mine"),
        protocol.ActionMessage("Ann", "nods"),
    ]
    assert bob.heard() == [protocol.ChatMessage("Ann", "mine"), protocol.ActionMessage("Ann", "nods")]


@pytest.mark.parametrize(
    "line", [protocol.ChatLine, protocol.ActionLine, lambda text: protocol.PrivateLine("Bob", text)]
)
def test_empty_and_oversized_text_is_refused_with_the_reason_and_goes_nowhere(room, line):
    ann, bob = joined(room, "Ann", Limits(max_message_bytes=10)), joined(room, "Bob")
    ann.heard()

    assert errors(ann.send(line("  \t"), line("é" * 6), line("x" * 10))) == [
        "An empty message was not sent.",
        "The message was not sent: it is 12 bytes long, and the limit is 10.",
    ]
    assert len(bob.heard()) == 1  # only the line within the limit


def test_echo_never_brings_back_a_refused_line(room):
    ann = joined(room, "Ann", Limits(max_message_bytes=10))
    assert ann.send(protocol.EchoOwnLines(), protocol.ChatLine("x" * 11), protocol.ChatLine("short")) == [
        protocol.EchoOwnLines(),
        protocol.ErrorNotice("The message was not sent: it is 11 bytes long, and the limit is 10."),
        protocol.ChatMessage("Ann", "short"),
    ]


def test_public_text_is_logged_only_with_log_messages(room, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    quiet, loud = joined(room, "Quiet"), joined(room, "Loud", log_messages=True)

    quiet.send(protocol.ChatLine("secret plans"), protocol.ActionLine("whispers"))
    loud.send(protocol.ChatLine("open plans"), protocol.ActionLine("shouts"))

    assert "secret plans" not in caplog.text and "whispers" not in caplog.text
    assert "Quiet said a line (12 characters)" in caplog.text
    assert "Quiet did an action (8 characters)" in caplog.text
    assert "Loud: open plans" in caplog.text and "* Loud shouts" in caplog.text


# --- private lines -----------------------------------------------------------


def test_a_private_line_reaches_its_recipient_and_a_receipt_the_sender(room, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    ann, bob, cat = joined(room, "Ann"), joined(room, "Bob"), joined(room, "Cat")
    for person in (ann, bob):
        person.heard()

    assert ann.send(protocol.PrivateLine(" bob ", "psst")) == [protocol.PrivateMessage("Ann", "Bob", "psst")]
    assert bob.heard() == [protocol.PrivateMessage("Ann", "Bob", "psst")]
    assert cat.heard() == []
    assert "Ann sent a private message to  bob " in caplog.text and "psst" not in caplog.text


@pytest.mark.parametrize("recipient", ["Nobody", "", "x" * 1000, "bad\nname"])
def test_a_private_line_to_no_one_online_is_a_clear_error(room, recipient):
    ann = joined(room, "Ann")
    [error] = errors(ann.send(protocol.PrivateLine(recipient, "hello?")))
    assert error.startswith("No one called ") and error.endswith(" is online; the private message was not sent.")


def test_a_private_line_to_someone_away_is_answered_with_their_away_message(room):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    bob.send(protocol.Away("at lunch"))

    assert ann.send(protocol.PrivateLine("Bob", "there?")) == [
        protocol.PrivateMessage("Ann", "Bob", "there?"),
        protocol.AwayReply("Bob", "at lunch"),
    ]
    assert bob.send(protocol.PrivateLine("Bob", "note to self"))[-1] == protocol.PrivateMessage(
        "Bob", "Bob", "note to self"
    )  # no AwayReply


def test_recipient_names_that_cannot_be_usernames_are_not_looked_up():
    assert recipient_name(" Bob ") == "Bob"
    assert recipient_name("   ") is None
    assert recipient_name("a\tb") is None
    assert recipient_name("x" * (4 * protocol.MAX_USERNAME_LENGTH + 1)) is None


# --- /nick -------------------------------------------------------------------


def test_a_new_name_is_told_to_everyone_and_used_from_then_on(room, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    ann.heard()

    assert ann.send(protocol.NickRequest(" Annie "), protocol.ChatLine("renamed")) == [
        protocol.NickChanged("Ann", "Annie")
    ]
    assert bob.heard() == [protocol.NickChanged("Ann", "Annie"), protocol.ChatMessage("Annie", "renamed")]
    assert "192.0.2.7:4000: now known as Annie" in caplog.text


@pytest.mark.parametrize(
    ("wanted", "answer"),
    [
        ("Ann", protocol.Notice("You are already called Ann.")),
        ("BOB", protocol.ErrorNotice("The username BOB is taken.")),
        ("ＢＯＢ", protocol.ErrorNotice("The username ＢＯＢ looks the same as Bob, who is online.")),
        (
            "a:b",
            protocol.ErrorNotice("That is not a valid username: it may not contain ':'. The name was not changed."),
        ),
    ],
)
def test_a_new_name_refused_is_told_only_to_the_person(room, wanted, answer):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    ann.heard()
    assert ann.send(protocol.NickRequest(wanted)) == [answer]
    assert bob.heard() == []
    assert ann.session.membership.name == "Ann"


# --- /users, /away and /back -------------------------------------------------


def test_users_lists_everyone_with_their_away_messages(room):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    bob.send(protocol.Away("lunch"))
    [listed] = ann.send(protocol.UserListRequest())
    assert isinstance(listed, protocol.UserList)
    assert listed.names() == ["Ann", "Bob"] and listed.away() == {"Bob (guest)": "lunch"}  # no key: guests


def test_away_then_a_line_to_everyone_brings_the_person_back(room):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")

    assert ann.send(protocol.Away("  gone\tfishing \n")) == [protocol.Notice("You are marked as away: gone fishing")]
    assert room.away_message("Ann") == ("Ann", "gone fishing")
    assert ann.send(protocol.ChatLine("back again")) == [protocol.Notice("You are back: no longer marked as away.")]
    assert room.away_message("Ann") is None
    assert bob.heard()[-1] == protocol.ChatMessage("Ann", "back again")


def test_back_and_away_without_a_message(room):
    ann = joined(room, "Ann")
    assert ann.send(protocol.Back()) == [protocol.Notice("You are not marked as away.")]
    assert ann.send(protocol.Away("")) == [protocol.Notice("You are marked as away.")]
    assert ann.send(protocol.Back()) == [protocol.Notice("You are back: no longer marked as away.")]
    assert room.away_message("Ann") is None


def test_an_away_message_over_the_limit_is_refused(room):
    ann = joined(room, "Ann")
    assert ann.send(protocol.Away("x" * MAX_AWAY_LENGTH)) == [
        protocol.Notice("You are marked as away: " + "x" * MAX_AWAY_LENGTH)
    ]
    assert ann.send(protocol.Away("y" * (MAX_AWAY_LENGTH + 1))) == [
        protocol.ErrorNotice(
            f"An away message may be {MAX_AWAY_LENGTH} characters long at most; you were not marked as away."
        )
    ]
    assert room.away_message("Ann") == ("Ann", "x" * MAX_AWAY_LENGTH)  # the one before


# --- flood control -----------------------------------------------------------


def test_a_burst_goes_through_then_a_line_is_refused_until_a_token_comes_back(room):
    ann, bob = joined(room, "Ann", STRICT), joined(room, "Bob")
    ann.heard()

    assert ann.send(*(protocol.ChatLine(f"line {n}") for n in range(4))) == [
        protocol.ErrorNotice(
            'Slow down: "line 3" was not sent. You can send 3 messages at once, then 1 a second; wait 1.0 s.'
        )
    ]
    ann.clock.advance(0.5)
    assert errors(ann.send(protocol.ChatLine("too soon"))) == [
        'Slow down: "too soon" was not sent. You can send 3 messages at once, then 1 a second; wait 0.5 s.'
    ]
    ann.clock.advance(0.5)  # the refusals cost nothing: one token is back
    assert ann.send(protocol.ChatLine("in time")) == []
    assert [message.text for message in bob.heard()] == ["line 0", "line 1", "line 2", "in time"]


@pytest.mark.parametrize(
    ("request_", "refused"),
    [
        (protocol.PrivateLine("Bob", "five"), '"five" was not sent'),
        (protocol.ActionLine("five"), '"five" was not sent'),
        (protocol.NickRequest("Annie"), "the name was not changed"),
        (protocol.UserListRequest(), "the user list was not sent"),
        (protocol.Away("lunch"), "you were not marked as away"),
        (protocol.Back(), "you are still marked as away"),
        (protocol.MalformedMessage("junk"), "it was not answered"),
        (protocol.Username("again"), "it was not answered"),  # not expected now
    ],
)
def test_every_request_counts_against_flood_control(room, request_, refused):
    ann, bob = joined(room, "Ann", STRICT), joined(room, "Bob")
    ann.send(protocol.PrivateLine("Bob", "one"), protocol.ActionLine("two"), protocol.UserListRequest())
    bob.heard()

    [error] = errors(ann.send(request_))
    assert error.startswith(f"Slow down: {refused}. You can send 3 messages at once")
    assert bob.heard() == []
    assert ann.session.membership.name == "Ann" and ann.session.membership.away is None


def test_a_rate_of_zero_turns_flood_control_off(room):
    ann = joined(room, "Ann", Limits(rate=0, burst=1))
    assert errors(ann.send(*(protocol.ChatLine(str(n)) for n in range(100)))) == []


# --- what is not expected, and the end ---------------------------------------


def test_an_event_with_no_rule_now_is_answered_not_acted_on(room):
    ann = joined(room, "Ann")
    assert ann.send(protocol.Username("Bea"), protocol.ChatMessage("Ann", "forged")) == [
        protocol.ErrorNotice("Username is not expected now."),
        protocol.ErrorNotice("ChatMessage is not expected now."),
    ]
    assert ann.send(protocol.MalformedMessage("a bad field")) == [
        protocol.ErrorNotice("Message not understood: a bad field.")
    ]
    assert ann.session.stage is Stage.CHATTING


def test_a_goodbye_with_a_reason_leaves_with_that_parting_line(room, caplog):
    caplog.set_level(logging.INFO, logger="chat.server")
    ann, bob = joined(room, "Ann"), joined(room, "Bob")

    assert ann.send(protocol.Goodbye("see you")) == []
    assert ann.session.stage is Stage.ENDED and ann.session.goodbye is None
    assert bob.heard() == []  # the others are told when the session leaves the room
    ann.session.leave()
    ann.session.leave()  # once
    assert bob.heard() == [protocol.UserParted("Ann", "see you")]
    assert caplog.text.count("Ann left") == 1
    assert room.find("Ann") is None


@pytest.mark.parametrize(
    ("end", "told"),
    [
        (protocol.Goodbye(""), []),
        (protocol.ConnectionClosed(clean=False), []),
        (protocol.Goodbye("x" * 5000), ["The message was not sent: it is 5000 bytes long, and the limit is 4096."]),
    ],
)
def test_leaving_without_a_parting_line_that_passes_is_a_plain_leave(room, end, told):
    ann, bob = joined(room, "Ann"), joined(room, "Bob")
    assert errors(ann.send(end)) == told
    ann.session.leave()
    assert bob.heard() == [protocol.UserLeft("Ann")]


def test_a_session_that_ended_receives_nothing_more(room):
    ann = joined(room, "Ann")
    ann.send(protocol.Goodbye(""))
    with pytest.raises(RuntimeError):
        ann.session.receive(protocol.ChatLine("one more"))


def test_leaving_before_a_name_touches_no_one(room):
    watcher = joined(room, "Watcher")
    person = Person(room)
    person.session.leave()
    assert person.session.stage is Stage.ENDED
    assert watcher.heard() == []


# --- a resumed connection: the same checks as a proof ---------------------------

RESUMED = "SHA256:" + "R" * 43


def test_a_resumed_key_that_is_banned_or_no_longer_invited_is_turned_away_at_the_start(room):
    bans = Bans(clock=lambda: 1_800_000_000.0)
    bans.add(RESUMED, "spam", "the console")
    banned = Person(room, bans=bans, tickets=lambda key: protocol.NewTicket(60, b"t"))
    banned.session.start(b"\x00" * 32, resumed_key=RESUMED)
    assert banned.session.stage is Stage.ENDED and banned.session.goodbye == banned_text("spam")
    assert not any(isinstance(m, protocol.UsernameRequest) for m in banned.heard())  # never asked for a name
    gone = Person(room, allowed=lambda: AllowList((Invitation("SHA256:" + "O" * 43),)))
    gone.session.start(b"\x00" * 32, resumed_key=RESUMED)
    assert gone.session.stage is Stage.ENDED and gone.session.goodbye == INVITED_ONLY


def test_a_ticket_is_given_before_the_name_only_to_whom_the_name_would_admit(room):
    bans = Bans(clock=lambda: 1_800_000_000.0)
    person = Person(room, bans=bans, host="203.0.113.7", tickets=lambda key: protocol.NewTicket(60, b"t"))
    person.session.start()
    bans.add("203.0.113.7", "flood", "the console")  # banned while choosing a name
    assert person.send(protocol.TicketRequest()) == []
    assert person.session.stage is Stage.ENDED and person.session.goodbye == banned_text("flood")
    welcome = Person(room, bans=bans, host="198.51.100.1", tickets=lambda key: protocol.NewTicket(60, b"t"))
    welcome.session.start()
    assert welcome.send(protocol.TicketRequest()) == [protocol.NewTicket(60, b"t")]


# --- a ban from another thread (the server's, or a cluster's sweep) -------------


def test_a_ban_of_someone_in_the_room_tells_the_others_at_once(room):
    watcher, mal = joined(room, "Watcher"), joined(room, "mal")
    watcher.heard()
    mal.session.ban(0, "spam")
    assert watcher.heard() == [protocol.UserBanned("mal", 0, "spam")]
    mal.session.leave()  # the connection closed: no second word of it
    assert watcher.heard() == []


class Welcomed(Person):
    """A person banned (as from the sweep's thread) the moment the room
    delivers their Welcome: inside the room's join, before the session
    takes its place (``membership`` is still None then)."""

    def deliver(self, item: protocol.Encoded) -> bool:
        if isinstance(item.message, protocol.Welcome):
            assert self.session.membership is None
            self.session.ban(3600, "spam")
        return super().deliver(item)


def test_a_ban_between_the_welcome_and_the_session_taking_its_place_is_told_as_a_ban(room):
    watcher = joined(room, "Watcher")
    mal = Welcomed(room)
    mal.session.start()
    mal.send(protocol.Username("mal"))
    assert mal.session.membership is not None
    assert watcher.heard() == [protocol.UserJoined("mal")]
    mal.session.leave()  # the close that followed the ban
    assert watcher.heard() == [protocol.UserBanned("mal", 3600, "spam")]
