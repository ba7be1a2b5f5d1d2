"""Usernames: which may be taken, and when two are the same name.

Pure: no I/O, no state. The one place that decides about names; the server
(join and /nick), the room (who holds a name, /msg) and the cluster (the
names claimed in Redis) all ask here.

- ``accept(raw)`` gives the name as everyone will see it, or raises
  ``NameRefused`` whose ``reason`` says what was wrong.
- ``key(name)`` is what names are compared by: two names with one key are
  one name. It is the Unicode confusable skeleton (UTS #39, section 4) of the
  name after NFKC and case folding (letters of other scripts are taken to
  their prototypes before the folding too, for their capitals), so ``Admin``, ``ａｄｍｉｎ`` (fullwidth)
  and ``аdmin`` (with a Cyrillic а) all have the key of ``admin``.

What ``accept`` refuses, and why:

- invisible characters (Default_Ignorable_Code_Point: U+FE0F, U+034F, the
  Hangul fillers U+3164, U+115F, U+1160, U+FFA0, ...) and the blank braille
  pattern U+2800, which print as nothing or as a blank. Three have work to
  do in real names and stay where they do it: ZWNJ and ZWJ after a virama or
  between letters of a joining script (RFC 5892's CONTEXTJ idea), ZWJ inside
  an emoji sequence, and variation selectors after an emoji or a Han
  ideograph. They take no part in the key;
- characters that cannot be shown: controls, format characters, private
  use, unassigned (and the few assigned after this module's Unicode data);
- a name that starts with a combining mark, or piles them up (zalgo text
  that spills over the lines above and below);
- a name that ends with the mark ``/users`` gives a guest, ``(guest)``, in
  any look-alike form: a member posing as a guest;
- a name that mimics the client's line formats: a ``:`` anywhere
  (``NAME: TEXT``), or a leading ``[`` (``[NAME -> me]``), ``*`` (``* NAME
  action``) or ``>`` (the prompt); punctuation and symbols that look like
  them (``：``, ``∶``, ``ː``, ``⁎``, ``›``) count too, but not the letters
  and marks of a script that do (the Devanagari visarga ``ः``);
- letters of several scripts, as UTS #39's "Highly Restrictive" level says
  (section 5.2): one script, plus Common and Inherited characters (digits,
  punctuation, marks); the only mixtures allowed are Latin with the scripts
  written together in Japan (Han, Hiragana, Katakana), China and Taiwan
  (Han, Bopomofo) and Korea (Han, Hangul).

White space: the name is trimmed (of white space of any kind), and every
run of space separators inside it (the no-break space, the ideographic space
an input method types, ...) becomes one plain space. So ``Randall Flagg`` is
kept, and ``  Randall　 Flagg `` becomes it; a TAB inside is refused.

The data Python's ``unicodedata`` lacks (scripts, default ignorables, emoji,
confusables) is in ``names_data.py``, made by ``tools/make_names_data.py``.
"""

from __future__ import annotations

import bisect
import re
import unicodedata

from socket_chat.chat import names_data
from socket_chat.protocol import GUEST_MARK, MAX_USERNAME_LENGTH

__all__ = ["RULES", "NameRefused", "accept", "key", "skeleton", "script_of", "script_extensions_of"]

#: What ``accept`` and ``key`` depend on beyond this module: the tables of
#: names_data.py, and the interpreter's own Unicode (``unicodedata``: NFKC,
#: case folding, and which characters are assigned at all), which changes
#: with the Python version. Two servers that differ in it could each admit
#: a look-alike of the other's member, so the servers of a cluster must
#: share it (server/cluster.py checks it when a server joins; PROTOCOL.md section 8).
RULES = (
    f"names/1 unicode/{unicodedata.unidata_version} "
    f"ucd/{names_data.UCD_VERSION} confusables/{names_data.CONFUSABLES_VERSION}"
)

#: Printed as a blank though not a space nor default-ignorable.
BLANKS = frozenset({"\u2800"})
#: The line formats a name must not mimic (client/ui.py's ``render``).
FORBIDDEN_ANYWHERE = ":"
FORBIDDEN_FIRST = "[*>"
#: Combining marks in a row: Indic syllables and pointed Hebrew need up to about four.
MAX_MARKS_IN_A_ROW = 4

ZWNJ, ZWJ = "\u200c", "\u200d"
EMOJI_VARIATION = frozenset("\ufe0e\ufe0f")
#: Variation selectors for ideographs (VS1 to VS14 and the supplement's).
IDEOGRAPH_VARIATION = frozenset(map(chr, [*range(0xFE00, 0xFE0E), *range(0xE0100, 0xE01F0)]))
MONGOLIAN_VARIATION = frozenset("\u180b\u180c\u180d\u180f")
EMOJI_MODIFIERS = frozenset(map(chr, range(0x1F3FB, 0x1F400)))
VIRAMA = 9  # the canonical combining class of a virama

COMMON, INHERITED, UNKNOWN = "Zyyy", "Zinh", "Zzzz"
#: UTS #39 section 5.1: Han and Hiragana resolve to Japanese, and so on.
AUGMENTED = {"Hani": {"Hanb", "Jpan", "Kore"}, "Hira": {"Jpan"}, "Kana": {"Jpan"}, "Hang": {"Kore"}, "Bopo": {"Hanb"}}
#: UTS #39 section 5.2, Highly Restrictive: the mixtures allowed beyond one script.
ALLOWED_MIXTURES = (
    frozenset({"Latn", "Hani", "Hira", "Kana", "Jpan"}),
    frozenset({"Latn", "Hani", "Bopo", "Hanb"}),
    frozenset({"Latn", "Hani", "Hang", "Kore"}),
)


class NameRefused(ValueError):
    """A name that may not be taken. ``reason`` completes "The name ...":
    ``mixes Latin and Cyrillic letters``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def accept(raw: str) -> str:
    """The name as everyone will see it: NFC, trimmed, spaces made plain.

    Raises:
        NameRefused: the name may not be taken; its ``reason`` says why.
    """
    name = _tidy(raw)
    if not name:
        raise NameRefused("is empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise NameRefused(f"is longer than {MAX_USERNAME_LENGTH} characters")
    for position, char in enumerate(name):
        _check_char(name, position, char)
    _check_marks(name)
    _check_line_format(name)
    _check_scripts(name)
    return name


def key(name: str) -> str:
    """What names are compared by: equal keys, one name. Defined for any
    text (a /msg recipient too), accepted or not."""
    # Case folding comes before the skeleton, so that ADMIN is admin; but
    # letters of other scripts go to their prototypes first, so that capitals
    # that look alike (Greek Α, Cherokee Ꭺ, Latin A) stay alike.
    compatible = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", _tidy(name)))
    folded = unicodedata.normalize("NFKC", compatible.translate(_PROTOTYPES_NOT_LATIN).casefold())
    return skeleton(folded).casefold()


def skeleton(text: str) -> str:
    """UTS #39's skeleton: NFD, default ignorables out, every character to
    its confusable prototype, NFD again."""
    decomposed = unicodedata.normalize("NFD", text)
    visible = "".join(char for char in decomposed if not _in(_IGNORABLE, char))
    return unicodedata.normalize("NFD", visible.translate(_PROTOTYPES))


def script_of(char: str) -> str:
    """The character's Script, as a four-letter code (``Latn``; ``Zzzz``
    for one unknown to the data)."""
    return _SCRIPT_CODES[bisect.bisect_right(_SCRIPT_STARTS, ord(char)) - 1]


def script_extensions_of(char: str) -> frozenset[str]:
    """The character's Script_Extensions: the scripts it is used with."""
    point = ord(char)
    at = bisect.bisect_right(_EXTENSION_STARTS, point) - 1
    if at >= 0 and point <= _EXTENSION_ENDS[at]:
        return _EXTENSION_SETS[at]
    return frozenset({script_of(char)})


# --- the checks ----------------------------------------------------------------

_SPACES = re.compile(r"[^\S\n\r\t\v\f\x1c-\x1f\x85\u2028\u2029]+")  # runs of space separators (Zs)


def _tidy(raw: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFC", raw).strip())


def _check_char(name: str, position: int, char: str) -> None:
    if _in(_IGNORABLE, char):
        if not _does_work(name, position, char):
            raise NameRefused(f"contains an invisible character ({_code(char)})")
    elif char in BLANKS:
        raise NameRefused(f"contains a blank character ({_code(char)})")
    elif not char.isprintable():
        raise NameRefused(f"contains a character that cannot be shown ({_code(char)})")
    elif script_of(char) == UNKNOWN:
        raise NameRefused(f"contains a character newer than this server knows ({_code(char)})")


def _does_work(name: str, position: int, char: str) -> bool:
    """Whether an invisible character changes how its neighbours look."""
    before = name[position - 1] if position else ""
    after = name[position + 1 : position + 2]
    if not before:
        return False
    if char in (ZWNJ, ZWJ):
        if unicodedata.combining(before) == VIRAMA:
            return True
        joining = script_of(before) in _JOINING and after.isalpha() and before.isalpha()
        emoji = char == ZWJ and bool(after) and _in(_PICTOGRAPHIC, after) and _ends_emoji(name[:position])
        return joining or emoji
    if char in EMOJI_VARIATION:
        return _in(_EMOJI, before)
    if char in IDEOGRAPH_VARIATION:
        return script_of(before) == "Hani"
    if char in MONGOLIAN_VARIATION:
        return script_of(before) == "Mong"
    return False


def _ends_emoji(text: str) -> bool:
    """Whether ``text`` ends with an emoji (with its modifier or selector)."""
    text = text.rstrip("".join(EMOJI_MODIFIERS) + "\ufe0f")
    return bool(text) and _in(_PICTOGRAPHIC, text[-1])


def _check_marks(name: str) -> None:
    if unicodedata.category(name[0]).startswith("M"):
        raise NameRefused("may not start with a combining mark")
    run, previous = 0, ""
    for char in unicodedata.normalize("NFD", name):
        if not unicodedata.category(char).startswith("M"):
            run, previous = 0, ""
            continue
        run += 1
        if run > MAX_MARKS_IN_A_ROW or char == previous:
            raise NameRefused("piles up combining marks")
        previous = char


def _check_line_format(name: str) -> None:
    shapes = [_punctuation_shape(char) for char in name]
    for forbidden in FORBIDDEN_ANYWHERE:
        if any(forbidden in shape for shape in shapes):
            raise NameRefused(f"may not contain '{forbidden}'")
    first = shapes[0][:1]
    if first and first in FORBIDDEN_FIRST:
        raise NameRefused(f"may not start with '{first}'")
    if key(name).endswith(_GUEST_MARK_KEY):  # a member with a key posing as a guest, or as someone's guest mark
        raise NameRefused(f"may not end with '{GUEST_MARK.strip()}'")


def _punctuation_shape(char: str) -> str:
    """How a character prints, as far as line formats go: its NFKC form,
    and for punctuation and symbols their confusable prototype (``∶`` is
    ``:``). A letter or mark of a script is itself: the Devanagari visarga
    ``ः`` looks like a colon and is written in names."""
    compatible = unicodedata.normalize("NFKC", char)
    if unicodedata.category(char)[0] in "LM" and script_of(char) not in (COMMON, INHERITED):
        return compatible
    return compatible.translate(_PROTOTYPES)


def _check_scripts(name: str) -> None:
    """UTS #39 sections 5.1 and 5.2: single script, or Highly Restrictive."""
    sets = [scripts for scripts in map(_augmented, name) if scripts is not None]
    if not sets or frozenset.intersection(*sets):
        return
    if any(all(scripts & mixture for scripts in sets) for mixture in ALLOWED_MIXTURES):
        return
    raise NameRefused(f"mixes {_listed(_script_names(name))} letters")


def _augmented(char: str) -> frozenset[str] | None:
    """The scripts a character may be written with; None for any."""
    scripts = script_extensions_of(char)
    if COMMON in scripts or INHERITED in scripts:
        return None
    extra = set().union(*(AUGMENTED.get(script, set()) for script in scripts))
    return scripts | extra


def _script_names(name: str) -> list[str]:
    """The names of the scripts in ``name``, in order of appearance."""
    seen: list[str] = []
    for char in name:
        scripts = script_extensions_of(char)
        code = script_of(char) if script_of(char) in scripts else min(scripts)
        if code not in (COMMON, INHERITED) and _SCRIPT_NAMES[code] not in seen:
            seen.append(_SCRIPT_NAMES[code])
    return seen


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


# --- the data, unpacked once -----------------------------------------------------


def _ranges(packed: str) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for item in packed.split():
        first, _, last = item.partition("-")
        starts.append(int(first, 16))
        ends.append(int(last or first, 16))
    return starts, ends


def _in(ranges: tuple[list[int], list[int]], char: str) -> bool:
    point = ord(char)
    at = bisect.bisect_right(ranges[0], point) - 1
    return at >= 0 and point <= ranges[1][at]


def _prototypes(packed: str) -> dict[int, str]:
    table = {}
    for item in packed.split():
        source, _, target = item.partition(">")
        table[int(source, 16)] = "".join(chr(int(point, 16)) for point in target.split("+"))
    return table


def _scripts(packed: str) -> tuple[list[int], list[str]]:
    starts, codes = [], []
    for item in packed.split():
        first, _, code = item.partition(">")
        starts.append(int(first, 16))
        codes.append(code)
    return starts, codes


_SCRIPT_NAMES = {
    code: name.replace("_", " ") for code, _, name in (item.partition("=") for item in names_data.SCRIPT_NAMES.split())
}
_SCRIPT_STARTS, _SCRIPT_CODES = _scripts(names_data.SCRIPTS)
_extensions = [item.partition(">") for item in names_data.SCRIPT_EXTENSIONS.split()]
_EXTENSION_STARTS, _EXTENSION_ENDS = _ranges(" ".join(span for span, _, _ in _extensions))
_EXTENSION_SETS = [frozenset(codes.split("+")) for _, _, codes in _extensions]
_IGNORABLE = _ranges(names_data.DEFAULT_IGNORABLE)
_EMOJI = _ranges(names_data.EMOJI)
_PICTOGRAPHIC = _ranges(names_data.EXTENDED_PICTOGRAPHIC)
_JOINING = frozenset(names_data.JOINING_SCRIPTS.split())
_PROTOTYPES = _prototypes(names_data.CONFUSABLES)


def _prototypes_not_latin() -> dict[int, str]:
    """The prototypes of the characters not in the Latin script; a capital
    whose prototype is a Latin capital's (Greek Ι's is I's, l) becomes that
    capital, which case folding then takes where the Latin one goes."""
    capitals = {_PROTOTYPES.get(ord(letter), letter): letter for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    table = {}
    for point, shape in _PROTOTYPES.items():
        if script_of(chr(point)) != "Latn":
            table[point] = capitals.get(shape, shape) if chr(point).isupper() else shape
    return table


_PROTOTYPES_NOT_LATIN = _prototypes_not_latin()

#: What a name may not end with: the mark /users puts after a guest's name,
#: in any look-alike form (``(guest)``, ``（guest）``, ``(GUEST)``).
_GUEST_MARK_KEY = key(GUEST_MARK.strip())
