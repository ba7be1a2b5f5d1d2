"""presentation.py: text from the network made safe to print, and the small
formats both programs show (durations, ``NAME REST``, excerpts)."""

from __future__ import annotations

import unicodedata

import pytest

import presentation

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
