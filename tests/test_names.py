"""chat/names.py: which names may be taken, and when two are one (pure, no network).

The look-alikes of issue 13 are refused on a real server in test_server.py,
on /nick in test_server_features.py and across a cluster in test_cluster.py.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socket_chat.chat import names, names_data
from socket_chat.protocol import MAX_USERNAME_LENGTH


def refusal(raw: str) -> str:
    """The reason ``raw`` is refused (fails the test if it is accepted)."""
    with pytest.raises(names.NameRefused) as refused:
        names.accept(raw)
    return refused.value.reason


# --- names people have ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "admin",
        "Randall Flagg",
        "José",
        "Nguyễn Văn Anh",
        "Zoë O'Brien",
        "Ærøskøbing",
        "İstanbul",
        "Дмитрий",
        "Владимир Путин",
        "Αλέξης",
        "佐藤",
        "山田ひろし",  # Han and Hiragana: Japanese
        "日本語テキスト",  # and Katakana
        "Tanaka太郎",  # Latin with Han: allowed, as in Japan
        "김민준",
        "محمد",
        "שָׁלוֹם",  # Hebrew with its points
        "हिन्दी",  # Devanagari: a virama and vowel signs
        "क्\u200dष",  # ZWJ after a virama
        "می\u200cخواهم",  # Persian: ZWNJ between joining letters
        "தமிழ்",
        "ภาษาไทย",
        "ᏣᎳᎩ",  # Cherokee
        "สมชาย",
        "မြန်မာ",
        "ශ්\u200dරී",  # Sinhala: ZWJ after the al-lakuna
        "ნინო",
        "Արամ",
        "አበበ",
        "ラーメン",  # the prolonged sound mark is Hiragana and Katakana
        "ジョン・スミス",
        "阿·凡提",  # the middle dot goes with Han
        "金민준",  # Han and Hangul: Korean
        "Ἀλέξανδρος",
        "Mary-Jane O'Brien",
        "दुःखी",  # the visarga looks like a colon, and is a letter's mark
        "ᐳᐦᑕ",  # Cree syllabics: ᐳ looks like >
        "J. R. R. Tolkien",
        "🇫🇷 Marie",
        "ash-3",
        "r2d2",
        "😀",
        "Ann 🦊",
        "❤\ufe0f",  # an emoji and its presentation selector
        "👩🏽\u200d💻",  # an emoji ZWJ sequence with a skin tone
        "x" * MAX_USERNAME_LENGTH,
    ],
)
def test_names_in_one_script_are_accepted_as_typed(name):
    assert names.accept(name) == name


def test_spaces_around_are_trimmed_and_runs_inside_become_one_plain_space():
    assert names.accept("  Randall Flagg  ") == "Randall Flagg"
    assert names.accept("Randall   Flagg") == "Randall Flagg"
    # The no-break space a keyboard types, an input method's ideographic space:
    assert names.accept("Randall\u00a0Flagg") == "Randall Flagg"
    assert names.accept("佐藤\u3000太郎") == "佐藤 太郎"


def test_a_name_is_nfc_normalized_and_counted_after():
    assert names.accept("Rene\u0301e") == "Ren\u00e9e"
    assert names.accept("e\u0301" * MAX_USERNAME_LENGTH) == "\u00e9" * MAX_USERNAME_LENGTH


# --- the look-alikes of issue 13 ------------------------------------------------


@pytest.mark.parametrize(
    "look_alike",
    ["аdmin", "ａｄｍｉｎ", "ADMIN", "Admin", "𝐚dmin", "admin\ufe0f", "admin\u034f", "admin\u3164"],
    ids=["cyrillic-a", "fullwidth", "capitals", "capital", "math-bold", "fe0f", "034f", "3164"],
)
def test_look_alikes_of_admin_have_its_key(look_alike):
    assert names.key(look_alike) == names.key("admin")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ΑΒΕ", "ABE"),  # Greek capitals
        ("ᎪᎠᎷ", "ADM"),  # Cherokee
        ("ΜΙΚΕ", "mike"),
        ("rn", "m"),
        ("d0g", "DOG"),
        ("Straße", "STRASSE"),
        ("Randall  Flagg", "randall flagg"),
    ],
)
def test_names_that_look_alike_have_one_key(one, other):
    assert names.key(one) == names.key(other)


@pytest.mark.parametrize(("one", "other"), [("alice", "alicia"), ("Дмитрий", "Dmitry"), ("ann", "anne")])
def test_names_that_differ_have_different_keys(one, other):
    assert names.key(one) != names.key(other)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("аdmin", "mixes Cyrillic and Latin letters"),
        ("Ωmega", "mixes Greek and Latin letters"),
        ("paypaӏ", "mixes Latin and Cyrillic letters"),
        ("Kim민준", None),  # Latin with Hangul is allowed (Korea)
        ("admin\ufe0f", "contains an invisible character (U+FE0F)"),
        ("admin\u034f", "contains an invisible character (U+034F)"),
        ("admin\u3164", "contains an invisible character (U+3164)"),
        ("\u3164", "contains an invisible character (U+3164)"),
        ("\u3164\u3164\u3164", "contains an invisible character (U+3164)"),
        ("\u115f", "contains an invisible character (U+115F)"),
        ("\u1160", "contains an invisible character (U+1160)"),
        ("\uffa0", "contains an invisible character (U+FFA0)"),
        ("ad\u200bmin", "contains an invisible character (U+200B)"),
        ("ad\u00admin", "contains an invisible character (U+00AD)"),
        ("admin\u200d", "contains an invisible character (U+200D)"),  # ZWJ that joins nothing
        ("ad\u200cmin", "contains an invisible character (U+200C)"),  # ZWNJ between Latin letters
        ("\u202eadmin", "contains an invisible character (U+202E)"),
        ("🏴\U000e0067\U000e0062\U000e007f", "contains an invisible character (U+E0067)"),  # tag characters
        ("\u2800", "contains a blank character (U+2800)"),
        ("ad\u2800min", "contains a blank character (U+2800)"),
        ("bad\x1bname", "contains a character that cannot be shown (U+001B)"),
        ("tab\there", "contains a character that cannot be shown (U+0009)"),
        ("line\u2028break", "contains a character that cannot be shown (U+2028)"),
        ("private\ue000", "contains a character that cannot be shown (U+E000)"),
        ("admin: hi", "may not contain ':'"),
        ("admin：hi", "may not contain ':'"),  # fullwidth colon
        ("admin∶hi", "may not contain ':'"),  # the ratio sign looks like one
        ("adminː hi", "may not contain ':'"),  # and so does the IPA length mark
        ("[admin -> me] psst", "may not start with '['"),
        ("* admin waves", "may not start with '*'"),
        ("⁎admin", "may not start with '*'"),
        ("> admin", "may not start with '>'"),
        ("›admin", "may not start with '>'"),
        ("bob (guest)", "may not end with '(guest)'"),  # posing as a guest
        ("bob(GUEST)", "may not end with '(guest)'"),
        ("bob （ｇｕｅｓｔ）", "may not end with '(guest)'"),  # fullwidth
        ("guest", None),
        ("bob the guest", None),
        ("\u0301admin", "may not start with a combining mark"),
        ("zal\u0300\u0301\u0302\u0303\u0304go", "piles up combining marks"),
        ("a\u0301\u0301", "piles up combining marks"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("\u00a0\u3000", "is empty"),
        ("x" * (MAX_USERNAME_LENGTH + 1), f"is longer than {MAX_USERNAME_LENGTH} characters"),
    ],
)
def test_refused_names_say_why(raw, reason):
    if reason is None:
        assert names.accept(raw) == raw
    else:
        assert refusal(raw) == reason


def test_the_issue_s_examples_are_refused_or_taken_while_admin_is_online():
    # The key makes fullwidth, capital and invisible-suffix forms admin's;
    # the rest are refused on their own.
    admin = names.key("admin")
    refused_alone = ["аdmin", "admin\ufe0f", "admin\u034f", "admin\u3164", "\u3164", "admin: hi", "[admin -> me] psst"]
    for raw in refused_alone:
        refusal(raw)
    assert names.key(names.accept("ａｄｍｉｎ")) == admin


def test_the_key_is_defined_for_any_text():
    for text in ["", "\x00", "\ud800", "\U0010ffff", ":" * 100, "[*>"]:
        assert isinstance(names.key(text), str)


def test_an_accepted_name_keeps_its_key_when_accepted_again():
    for name in ["Randall Flagg", "ａｄｍｉｎ", "Дмитрий", "👩🏽\u200d💻"]:
        accepted = names.accept(name)
        assert names.accept(accepted) == accepted
        assert names.key(accepted) == names.key(name)


# --- the data -------------------------------------------------------------------


def test_scripts_and_extensions_come_from_the_data():
    assert names.script_of("a") == "Latn"
    assert names.script_of("а") == "Cyrl"
    assert names.script_of("1") == "Zyyy"
    assert names.script_of("\u0301") == "Zinh"
    assert names.script_extensions_of("ー") == frozenset({"Hira", "Kana"})
    assert names.script_of("\U000e01f0") == "Zzzz"  # unassigned


def test_the_rules_name_the_interpreters_unicode_as_protocol_md_says():
    """The line a cluster's servers must share (PROTOCOL.md section 8)."""
    assert f"names/1 unicode/{unicodedata.unidata_version} ucd/15.0.0 confusables/13.0.0" == names.RULES
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    assert re.sub(r"unicode/[0-9.]+", "unicode/14.0.0", names.RULES) in spec


def test_the_data_names_its_versions():
    assert names_data.UCD_VERSION == "15.0.0"
    assert names_data.CONFUSABLES_VERSION == "13.0.0"


def test_every_default_ignorable_is_refused_alone():
    # A few from each range of Default_Ignorable_Code_Point.
    for item in names_data.DEFAULT_IGNORABLE.split():
        first, _, last = item.partition("-")
        for point in {int(first, 16), int(last or first, 16)}:
            with pytest.raises(names.NameRefused):
                names.accept("x" + chr(point))


def test_no_space_separator_survives_in_a_name():
    separators = [chr(p) for p in range(0x110000) if unicodedata.category(chr(p)) == "Zs"]
    for space in separators:
        assert names.accept(f"a{space}b") == "a b"


@settings(deadline=None, database=None, derandomize=True, max_examples=400)
@given(st.text(max_size=40))
def test_any_text_is_accepted_as_a_fixed_point_or_refused_with_a_reason(raw):
    try:
        name = names.accept(raw)
    except names.NameRefused as refused:
        assert refused.reason
        return
    assert names.accept(name) == name
    assert names.key(name) == names.key(raw)
    assert ":" not in name and name[0] not in "[*>"
