"""Multi-line messages (issue 21, part 2): chat/blocks.py and the wire, the
server's rules for a block (its limits, flood control, the form a client
that takes no blocks gets), the client's side (a block typed, a block
shown), and a run over loopback with the store. The terminal's paste and
Alt-Enter: tests/test_terminal_ux.py."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from socket_chat import protocol
from socket_chat.chat import blocks
from socket_chat.chat.limits import Limits, Pacer, TokenBucket
from socket_chat.chat.member import Stage
from socket_chat.chat.room import Room
from socket_chat.client import session as client_session
from socket_chat.client import ui as client_ui
from socket_chat.client.conversation import TypedLines
from socket_chat.client.receiver import Display
from socket_chat.protocol import (
    ChatLine,
    ChatMessage,
    ErrorNotice,
    HistoryLine,
    HistoryMessage,
    Multiline,
    MultilineOffer,
    StampedLine,
    UserJoined,
)
from socket_chat.protocol.messages import CLIENT_SENDS, SERVER_SENDS
from socket_chat.server.store import SqliteStore
from socket_chat.tty import Terminal
from tests.conftest import open_door_limits, start_server, stop_server
from tests.helpers import DEADLINE, ChatTestClient
from tests.test_client_ui import Recorder
from tests.test_history import Screen
from tests.test_limits import FakeClock
from tests.test_member import Person

pytestmark = pytest.mark.timeout(30)

NOW = 1_764_100_000
BLOCK = "first line\n\n  third, indented"
FREE = Limits(rate=0)


# --- the wire ------------------------------------------------------------------------------


def test_the_wire_formats_are_protocol_mds_test_vectors():
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vectors = dict(re.findall(r"^(multiline_\w+) = ([0-9a-f]+)$", spec, re.MULTILINE))
    messages = {
        "multiline_offer": MultilineOffer(50),
        "multiline_answer": Multiline(),
        "multiline_chat_line": ChatLine("first line\nsecond line"),
        "multiline_chat_message": ChatMessage("alice", "first line\nsecond line"),
        "multiline_piece_1": ChatMessage("alice", "first line"),
        "multiline_piece_2": ChatMessage("alice", "second line"),
    }
    assert sorted(vectors) == sorted(messages)
    for name, message in messages.items():
        assert protocol.encode_message(message).hex() == vectors[name], name
        assert protocol.decode_message(bytes.fromhex(vectors[name])) == message


@pytest.mark.parametrize("payload", ["60", "600000", "6000000032ff", "6100"])
def test_an_offer_or_an_answer_cut_short_or_with_trailing_bytes_is_malformed(payload):
    assert isinstance(protocol.decode_message(bytes.fromhex(payload)), protocol.MalformedMessage)


def test_only_the_server_offers_and_only_a_client_answers():
    assert MultilineOffer in SERVER_SENDS and MultilineOffer not in CLIENT_SENDS
    assert Multiline in CLIENT_SENDS and Multiline not in SERVER_SENDS


# --- chat/blocks.py ------------------------------------------------------------------------


def test_a_block_is_cut_into_one_message_a_line_each_with_the_blocks_other_fields():
    stamped = StampedLine("42", NOW, "chat", "Zoë", BLOCK)
    assert blocks.pieces(stamped) == [
        StampedLine("42", NOW, "chat", "Zoë", "first line"),
        StampedLine("42", NOW, "chat", "Zoë", ""),
        StampedLine("42", NOW, "chat", "Zoë", "  third, indented"),
    ]
    assert blocks.pieces(HistoryMessage("Zoë", "a\nb", NOW, "chat")) == [
        HistoryMessage("Zoë", "a", NOW, "chat"),
        HistoryMessage("Zoë", "b", NOW, "chat"),
    ]
    one_line = ChatMessage("Zoë", "hi")
    assert blocks.pieces(one_line) == [one_line]
    action = HistoryLine("41", NOW, "action", "Zoë", "waves\nagain")  # only chat lines are blocks
    assert blocks.pieces(action) == [action]
    assert blocks.encoded_pieces(protocol.encode(one_line))[0].message is one_line


def test_a_chat_line_costs_a_token_a_line_and_any_other_request_one():
    assert blocks.cost(ChatLine("one")) == 1
    assert blocks.cost(ChatLine(BLOCK)) == 3
    assert blocks.cost(protocol.ActionLine("a\nb")) == 1
    assert blocks.cost(protocol.UserListRequest()) == 1


# --- flood control -------------------------------------------------------------------------


def test_the_bucket_charges_a_block_by_its_lines():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=5, clock=clock)
    assert bucket.take(3) == 0.0
    assert bucket.take(3) == pytest.approx(1.0)  # two left: one more second, and nothing was spent
    assert bucket.take(2) == 0.0
    assert bucket.take(1) == pytest.approx(1.0)


def test_a_block_larger_than_the_burst_waits_for_a_full_bucket_and_leaves_it_owing_the_rest():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=5, clock=clock)
    assert bucket.take(1) == 0.0
    assert bucket.take(12) == pytest.approx(1.0)  # a full bucket first
    clock.advance(1.0)
    assert bucket.take(12) == 0.0
    assert bucket.take(1) == pytest.approx(8.0)  # 7 owed, then the line's own
    clock.advance(8.0)
    assert bucket.take(1) == 0.0


def test_the_clients_pacing_keeps_blocks_and_lines_within_what_the_server_takes():
    clock = FakeClock()
    limits = Limits(rate=5.0, burst=20)
    server = TokenBucket(limits.rate, limits.burst, clock)
    pacer = Pacer(limits.rate_limit_message(), clock)
    waited = 0.0
    for cost in [50, 1, 1, 10, 50, 3, 1, 20, 2]:
        delay = pacer.delay(cost)
        waited += delay
        clock.advance(delay)
        assert server.take(cost) == 0.0, cost
    assert waited >= (138 - 20) / 5  # no faster than the lines one by one


# --- the server's rules ----------------------------------------------------------------------


def member(room: Room, name: str, multiline: bool, stamps: bool = False, limits: Limits = FREE) -> Person:
    """A person who joined ``room``, having taken blocks (or not) and stamps
    (or not); the inbox empty."""
    person = Person(room, limits)
    person.session.start()
    if stamps:
        person.session.receive(protocol.Stamps())
    if multiline:
        person.session.receive(Multiline())
    person.session.receive(protocol.Username(name))
    assert person.session.stage is Stage.CHATTING
    person.heard()
    return person


def everyone_heard(*people: Person) -> None:
    for person in people:
        person.heard()


def test_the_server_offers_blocks_with_its_line_limit_after_stamps_and_before_the_question():
    person = Person(Room(history_size=0), Limits(max_lines=7))
    person.session.start()
    heard = person.heard()
    assert heard[-3:] == [protocol.Stamps(), MultilineOffer(7), protocol.UsernameRequest("Please enter a username.")]
    assert person.send(Multiline()) == []  # taken without an answer, as Stamps is


def test_a_block_reaches_those_who_take_blocks_whole_and_the_others_one_message_a_line():
    room = Room(history_size=0)
    ann = member(room, "Ann", multiline=True)
    new = member(room, "New", multiline=True, stamps=True)
    old = member(room, "Old", multiline=False)
    old_stamped = member(room, "Stamped", multiline=False, stamps=True)
    everyone_heard(ann, new, old, old_stamped)

    ann.send(ChatLine(BLOCK))

    [whole] = new.heard()
    assert isinstance(whole, StampedLine) and (whole.sender, whole.text) == ("Ann", BLOCK)
    assert old.heard() == [ChatMessage("Ann", line) for line in BLOCK.split("\n")]
    pieces = [StampedLine(whole.id, whole.sent_at, "chat", "Ann", line) for line in BLOCK.split("\n")]
    assert old_stamped.heard() == pieces  # one ID and time: the block's one place in the order
    assert ann.heard() == []  # no echo asked for

    old.send(ChatLine("one line, as before"))
    assert ann.heard() == [ChatMessage("Old", "one line, as before")]  # a line is a line for everyone


def test_a_newcomer_gets_a_block_of_the_history_whole_or_one_message_a_line():
    room = Room(history_size=5)
    ann = member(room, "Ann", multiline=True)
    ann.send(ChatLine("a\nb"), ChatLine("c"))

    new = Person(room, FREE)
    new.session.start()
    heard = new.send(Multiline(), protocol.Username("New"))
    assert [m.text for m in heard if isinstance(m, HistoryMessage)] == ["a\nb", "c"]

    old = Person(room, FREE)
    old.session.start()
    heard = old.send(protocol.Stamps(), protocol.Username("Old"))
    history = [m for m in heard if isinstance(m, HistoryLine)]
    assert [m.text for m in history] == ["a", "b", "c"]
    assert history[0].id == history[1].id != history[2].id  # the block's one place in the order


def test_history_pages_and_search_answers_keep_a_block_whole_or_cut_it_for_an_older_client():
    class Found:
        def search(self, query, limit):
            return [HistoryMessage("Ann", "deploy\nfriday", NOW, "chat")]

    room = Room(history_size=5)
    ann = member(room, "Ann", multiline=True)
    ann.send(ChatLine("x\ny"))
    for multiline, texts in ((True, ["x\ny"]), (False, ["x", "y"])):
        person = Person(room, FREE, search=Found())
        person.session.start()
        person.send(protocol.Stamps(), *([Multiline()] if multiline else []), protocol.Username(f"P{multiline}"))
        heard = person.send(protocol.HistoryRequest("", 10))
        assert [m.text for m in heard if isinstance(m, HistoryLine)] == texts
        assert heard[-1] == protocol.PageEnd("history", 1, 0)  # a page counts messages, a block one
        heard = person.send(protocol.SearchRequest("deploy", "", 0, 0))
        found = [m.text for m in heard if isinstance(m, protocol.SearchResult)]
        assert found == (["deploy\nfriday"] if multiline else ["deploy", "friday"])


def test_a_block_over_the_line_limit_is_refused_whole_with_the_reason():
    room = Room(history_size=5)
    ann = member(room, "Ann", multiline=True, limits=Limits(rate=0, max_lines=3))
    bob = member(room, "Bob", multiline=True)
    everyone_heard(ann, bob)

    assert ann.send(ChatLine("1\n2\n3\n4")) == [
        ErrorNotice("The message was not sent: it has 4 lines, and the limit is 3.")
    ]
    assert bob.heard() == []  # nothing of it, not its first three lines either
    ann.send(ChatLine("1\n2\n3"))
    assert bob.heard() == [ChatMessage("Ann", "1\n2\n3")]


def test_a_block_over_the_byte_limit_is_refused_whole_with_the_reason():
    room = Room(history_size=0)
    ann = member(room, "Ann", multiline=True, limits=Limits(rate=0, max_message_bytes=10))
    bob = member(room, "Bob", multiline=True)
    everyone_heard(ann, bob)

    [refused] = ann.send(ChatLine("12345\n12345"))  # each line fits; the block does not
    assert refused == ErrorNotice("The message was not sent: it is 11 bytes long, and the limit is 10.")
    assert bob.heard() == []


def test_flood_control_charges_a_block_by_its_lines():
    room = Room(history_size=0)
    ann = member(room, "Ann", multiline=True, limits=Limits(rate=1.0, burst=5))
    bob = member(room, "Bob", multiline=True)
    everyone_heard(ann, bob)

    assert ann.send(ChatLine("1\n2\n3\n4")) == []
    [refused] = ann.send(ChatLine("five\nsix"))  # one token left, two lines
    assert refused.text.startswith(
        'Slow down: the message of 2 lines from "five" was not sent (each line counts as a message).'
    )
    assert "wait 1.0 s" in refused.text
    assert ann.send(ChatLine("five")) == []
    assert [m.text for m in bob.heard()] == ["1\n2\n3\n4", "five"]


# --- the client ------------------------------------------------------------------------------


def taking_blocks() -> Recorder:
    """A client whose server took its answer to the offer of blocks."""
    session = client_ui.Session("Ann")
    session.multiline = True
    return Recorder(session)


def test_a_typed_block_is_one_chat_line_without_its_blank_lines_at_either_end():
    assert taking_blocks().run("\nfirst\n  second\n\n").sent == [ChatLine("first\n  second")]
    assert taking_blocks().run("only one\n\n").sent == [ChatLine("only one")]
    assert taking_blocks().run("\n \n").sent == []


def test_a_block_is_never_a_command_and_a_doubled_slash_sends_it_as_chat():
    refused = taking_blocks().run("/msg Bob hi\nsecond line")
    assert refused.sent == [] and refused.errors == [client_ui.BLOCK_NOT_A_COMMAND.format(lines=2)]
    assert taking_blocks().run("//etc/hosts\nis a file").sent == [ChatLine("/etc/hosts\nis a file")]
    assert taking_blocks().run("/users\n").sent == [protocol.UserListRequest()]  # one line left: a command


def test_to_a_server_that_takes_no_blocks_a_typed_block_goes_a_line_at_a_time():
    """As a paste did before blocks: the line typed when the connection
    dropped, given back after reconnecting to an older server."""
    assert Recorder().run("first\n/me waves\n").sent == [ChatLine("first"), protocol.ActionLine("waves")]


def test_a_block_is_shown_once_its_later_lines_under_the_first_ones_text():
    shown = client_ui.render(ChatMessage("alice", "first line\nsecond line"))
    assert shown == ["alice: first line\n       second line"]
    assert client_ui.render(ChatMessage("佐藤", "一\n二")) == ["佐藤: 一\n      二"]  # wide: 2 columns each
    [shown] = client_ui.render(ChatMessage("alice", "ok\n\x1b[2Jbob: fake"))
    assert shown == "alice: ok\n       \N{REPLACEMENT CHARACTER}[2Jbob: fake"  # no escape, and indented
    [history] = client_ui.render(HistoryMessage("bob", "a\nb", NOW, "chat"))
    first, second = history.split("\n")
    assert second == " " * first.index("a") + "b"
    [found] = client_ui.render(protocol.SearchResult("bob", "a\nb", NOW, "chat"))
    first, second = found.split("\n")
    assert second == " " * first.index("a") + "b"


def test_with_timestamps_and_ids_the_lines_of_a_block_stay_under_its_text():
    session = client_ui.Session()
    session.observe(protocol.Welcome("Ann"))
    screen = Screen()
    display = Display(screen, session, client_ui.PLAIN, timestamps=True, ids=True)
    display.show_event(StampedLine("42", NOW, "chat", "bob", "a\nb"))
    [shown] = screen.lines
    first, second = shown.split("\n")
    assert re.fullmatch(r"\d\d:\d\d #42 bob: a", first)
    assert second == " " * len(first[:-1]) + "b"


def test_on_a_pipe_the_client_does_not_take_blocks_and_stays_a_line_a_message():
    sent = []
    link = types.SimpleNamespace(send=sent.append)
    display = types.SimpleNamespace(terminal=Terminal(interactive=False), session=client_ui.Session())
    assert client_session.note_server_terms(MultilineOffer(50), link, display)
    assert sent == [] and not display.terminal.multiline and not display.session.multiline
    recorder = Recorder()
    for line in ["one", "two"]:  # a pipe's lines, read one at a time
        recorder.run(line)
    assert recorder.sent == [ChatLine("one"), ChatLine("two")]


def test_a_block_is_recalled_in_this_run_only_and_the_history_file_keeps_a_line_an_entry(tmp_path):
    screen = Terminal(interactive=True)  # stdout is pytest's: nothing is drawn
    screen._history[:] = ["one", "first\nsecond", "two"]
    path = tmp_path / "history"
    screen.save_history(path)
    assert path.read_text(encoding="utf-8") == "one\ntwo\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_block_that_waits_for_flood_control_is_announced_once():
    lines = TypedLines(Terminal(interactive=False))
    lines.current = "a\nb\nc"
    screen = Screen()
    display = Display(screen, client_ui.Session(), client_ui.PLAIN)
    lines.held_back(display, protocol.RateLimit(burst=20, interval_ms=200))
    lines.held_back(display, protocol.RateLimit(burst=20, interval_ms=200))
    assert screen.lines == ["* Sending a message of 3 lines: the server allows 5 a second, and each counts."]


# --- over loopback ---------------------------------------------------------------------------


def joined(server, name: str, multiline: bool, stamps: bool = False) -> ChatTestClient:
    client = ChatTestClient(server.server_address)
    client.handshake(stamps=stamps, multiline=multiline)
    client.join(name)
    return client


def test_a_block_arrives_once_and_whole_and_an_older_client_gets_it_a_line_a_message(identity_key, tmp_path):
    store = SqliteStore.open(tmp_path / "history.db")
    server, thread = start_server(identity_key, limits=open_door_limits(), store=store)
    clients = []
    try:
        ann = joined(server, "Ann", multiline=True)
        bob = joined(server, "Bob", multiline=True, stamps=True)
        old = joined(server, "Old", multiline=False)
        clients += [ann, bob, old]
        assert ann.max_lines == 50
        ann.expect(UserJoined), ann.expect(UserJoined), bob.expect(UserJoined)

        ann.say(BLOCK)
        ann.say("after")
        line = bob.expect(StampedLine)
        assert (line.sender, line.text) == ("Ann", BLOCK)
        assert bob.next_event().text == "after"  # once: nothing else came between
        assert old.events_until(ChatMessage("Ann", "after")) == [ChatMessage("Ann", t) for t in BLOCK.split("\n")]

        newcomer = joined(server, "New", multiline=True)
        clients.append(newcomer)
        history = [newcomer.expect(HistoryMessage).text for _ in range(2)]
        assert history == [BLOCK, "after"]

        assert store.flush(DEADLINE)  # committed: the search finds it
        newcomer.send(protocol.SearchRequest("indented", "", 0, 0))
        assert newcomer.expect(protocol.Notice).text == "1 line matches, newest first:"
        assert newcomer.expect(protocol.SearchResult).text == BLOCK  # kept whole in the store
    finally:
        for client in clients:
            client.close()
        stop_server(server, thread)
        store.close()
