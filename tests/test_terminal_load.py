"""The terminal under load (issue 21, part 4): lines arriving at 100 a
second while a person types and pastes. Every arriving line is on the
screen once, in order, on a row of its own; what the person typed and
pasted reaches the others whole; the line being typed when the others stop
is intact at the prompt. Marked slow: it runs for seconds by design (the
default run's terminal tests check the same with a few lines). Uses the pty
machinery of test_terminal.py, whose model of the screen never scrolls, so
every row ever drawn is looked at, not just the last 24."""

from __future__ import annotations

import threading
import time

import pytest

from socket_chat.protocol import ChatMessage, UserJoined
from tests.test_terminal import TIMEOUT, expect_event, open_pty, wait_until_reading  # noqa: F401 (open_pty: a fixture)
from tests.test_terminal_ux import ann_and_other  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90), pytest.mark.xdist_group("terminal")]

RATE = 100  # lines a second from the others
ARRIVING = [f"arriving {n:03} from Bob" for n in range(1, 401)]  # four seconds of them
TYPED = "typed one key at a time while the others talk"
PLAIN_PASTE = [f"plain paste {n:02}" for n in range(1, 11)]  # each line its own message
BLOCK = ["a pasted block", "  its second line, indented", "and its last"]  # bracketed: one message
HALF_TYPED = "still typing when they stop"


def send_at_rate(bob, lines: list[str], rate: float, errors: list[BaseException]) -> None:
    """Bob says ``lines``, ``rate`` a second (paced by the clock, not by
    what arrives)."""
    try:
        begin = time.monotonic()
        for n, line in enumerate(lines):
            time.sleep(max(0.0, begin + n / rate - time.monotonic()))  # the pace, not a wait for anything
            bob.say(line)
    except Exception as exc:  # reported by the test
        errors.append(exc)


def type_slowly(pty, text: str) -> None:
    for key in text:
        pty.write(key.encode())
        time.sleep(0.01)  # a quick typist's pace


def test_lines_at_100_a_second_while_a_person_types_and_pastes(ann_and_other, own_server):
    other, pty = ann_and_other(rate=0)  # flood control off: Bob sends 100 lines a second
    bob = own_server.client("Bob")
    expect_event(other, UserJoined("Bob"))
    pty.expect(b"Bob joined the chat.")
    wait_until_reading(pty)
    errors: list[BaseException] = []
    sender = threading.Thread(target=send_at_rate, args=(bob, ARRIVING, RATE, errors), name="Bob")
    sender.start()
    try:
        type_slowly(pty, TYPED)
        pty.write(b"\r")
        pty.write("".join(f"{line}\r" for line in PLAIN_PASTE).encode())  # a paste the terminal does not bracket
        pty.write(("\x1b[200~" + "\r".join(BLOCK) + "\x1b[201~").encode())
        pty.write(b"\r")  # Enter sends the block
        type_slowly(pty, HALF_TYPED)
    finally:
        sender.join(TIMEOUT + len(ARRIVING) / RATE)
    assert not errors and not sender.is_alive(), errors

    pty.expect(f"Bob: {ARRIVING[-1]}".encode(), timeout=TIMEOUT * 2)
    rows = pty.expect_input(f"> {HALF_TYPED}")  # the line being typed, intact at the prompt
    assert_arrived_once_in_order_on_rows_of_their_own(rows)
    assert_own_lines_shown_once(rows)
    assert [row for row in rows if row.startswith(">")] == [f"> {HALF_TYPED}"], rows[-8:]  # one prompt, at the end

    # What Ann sent reached Other whole and in order (Other takes no blocks: the block a line at a time).
    for text in [TYPED, *PLAIN_PASTE, *BLOCK]:
        expect_event(other, ChatMessage("Ann", text))


def assert_arrived_once_in_order_on_rows_of_their_own(rows: list[str]) -> None:
    arrived = [row for row in rows if "arriving" in row]
    assert arrived == [f"Bob: {line}" for line in ARRIVING], [
        row for row, want in zip(arrived, ARRIVING, strict=False) if row != f"Bob: {want}"
    ][:5] or (len(arrived), len(ARRIVING))


def assert_own_lines_shown_once(rows: list[str]) -> None:
    """Ann's lines as the server echoes them: the typed one and each plain
    pasted line under her name, the block under it with its continuation
    lines indented to match."""
    for line in [TYPED, *PLAIN_PASTE]:
        assert rows.count(f"Ann: {line}") == 1, (line, [row for row in rows if "Ann" in row])
    first = rows.index(f"Ann: {BLOCK[0]}")
    assert rows[first + 1 : first + len(BLOCK)] == [f"     {line}" for line in BLOCK[1:]], rows[first : first + 4]
    assert sum(BLOCK[0] in row for row in rows) == 1, "the block is shown once"
