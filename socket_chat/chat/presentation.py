"""How text from the network is shown to a person: made safe to print, and
the small formats both programs share (durations, ``NAME REST``, excerpts),
and the highlight rule (``mentions``), which the server's ``/mentions`` uses too.

Nothing here is part of the wire protocol: a second implementation may show
things its own way. PROTOCOL.md says only what must never reach a terminal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "printable_text",
    "collapse_blank_runs",
    "MAX_BLANK_RUN",
    "format_duration",
    "format_length",
    "split_name",
    "excerpt",
    "mentions",
    "columns",
    "block_text",
]


def mentions(text: str, name: str) -> bool:
    """``text`` holds ``name`` as a whole (not inside a longer word), in
    any case: "ann:" and "@Ann" mention Ann; "Annie" and "banner" do not."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def printable_text(text: str) -> str:
    """Text from the network made safe to print on a terminal.

    C0 and C1 controls (ESC among them) and other non-printing characters
    become U+FFFD, so no escape sequence reaches the terminal; tabs become
    a space. Long runs of blanks are shortened (``collapse_blank_runs``).
    A joiner (ZWJ, ZWNJ) between two characters it can join stays (see
    ``joins``), and so does an England, Scotland or Wales flag.
    """
    text = collapse_blank_runs(text)
    if text.isprintable():
        return text
    shown = [ch if ch.isprintable() else " " if ch == "\t" else _REPLACEMENT for ch in text]
    for start, end in _kept_invisibles(text):
        shown[start:end] = text[start:end]
    return "".join(shown)


# --- joiners: kept where they join something ---------------------------------

_REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
ZWNJ, ZWJ = "\u200c", "\u200d"
#: What may stand between the emoji before a ZWJ and the ZWJ: variation
#: selectors (U+FE0F makes 🏳 an emoji, 🏳️) and skin tones (👩🏽‍💻).
_EMOJI_TRAILERS = frozenset("\ufe0e\ufe0f") | frozenset(map(chr, range(0x1F3FB, 0x1F400)))
#: The only emoji tag sequences (UTS #51) in use: the flags of England,
#: Scotland and Wales. Other tag characters stay replaced: they are
#: invisible, and could carry hidden text.
_TAG_FLAGS = re.compile(
    "\U0001f3f4(?:\U000e0067\U000e0062(?:\U000e0065\U000e006e\U000e0067|"
    "\U000e0073\U000e0063\U000e0074|\U000e0077\U000e006c\U000e0073))\U000e007f"
)


def joins(before: str, after: str, joiner: str) -> bool:
    """Whether ``joiner`` (ZWJ or ZWNJ) between ``before`` and ``after``
    joins something: two letters or marks (ZWNJ in Persian ``می‌خواهم``,
    ZWJ after a virama in Indic scripts; ZWNJ also breaks a Latin ligature),
    or, for ZWJ only, two emoji (``👩‍💻``; ``before`` may end in a variation
    selector or a skin tone). A joiner at either end, or next to another
    invisible character (bidi controls among them), joins nothing."""
    if _letter_or_mark(before) and _letter_or_mark(after):
        return True
    if joiner != ZWJ:
        return False
    base = before.rstrip("".join(_EMOJI_TRAILERS))
    return _emoji(base[-1:]) and _emoji(after[:1])


def _kept_invisibles(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` that are not printable but stay: joiners that
    join, and the tag flags."""
    kept = [match.span() for match in _TAG_FLAGS.finditer(text)]
    for i, ch in enumerate(text):
        if ch in (ZWJ, ZWNJ) and joins(text[max(0, i - 3) : i], text[i + 1 : i + 2], ch):
            kept.append((i, i + 1))
    return kept


def _letter_or_mark(text: str) -> bool:
    return bool(text) and unicodedata.category(text[-1])[0] in "LM"


def _emoji(ch: str) -> bool:
    # Emoji are symbols (So): 👨 👩 👧 💻 🌈 ❤ ♀ 🏳. Python's unicodedata has
    # no Extended_Pictographic property; So is its close superset here.
    return bool(ch) and unicodedata.category(ch) == "So"


#: The longest run of blank characters shown as it was sent.
MAX_BLANK_RUN = 8
#: White space, and the characters that print as blanks without being white
#: space: the braille blank and the Hangul fillers.
_BLANK_RUN = re.compile(rf"[\s\u2800\u115f\u1160\u3164\uffa0]{{{MAX_BLANK_RUN + 1},}}")


def collapse_blank_runs(text: str) -> str:
    """``text`` with every run of more than ``MAX_BLANK_RUN`` blanks made
    that many spaces.

    Against line-wrap spoofing: ``ok``, then 200 spaces, then ``admin:
    please run...`` would wrap so that its end starts a row of its own and
    reads as admin's line. Indentation and a few aligning spaces are kept.
    """
    return _BLANK_RUN.sub(" " * MAX_BLANK_RUN, text)


def format_duration(seconds: int) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``: how long someone has been online."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


_LENGTH_UNITS = (("week", 604_800), ("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1))


def format_length(seconds: int) -> str:
    """``10 minutes``, ``2 hours``, ``1 day 12 hours``: how long a ban lasts
    (its two largest units, the rest left out)."""
    parts = []
    for unit, size in _LENGTH_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count > 1 else ''}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0 seconds"


def split_name(text: str, names: Iterable[str]) -> tuple[str, str]:
    """Split ``NAME REST`` where NAME may hold spaces: the longest name
    online that ``text`` starts with (then a space or the end), else the
    first word. Case-insensitive, as names are."""
    folded = text.casefold()
    for name in sorted(names, key=len, reverse=True):
        key = name.casefold()
        if folded == key or folded.startswith(key + " "):
            return text[: len(name)], text[len(name) :].strip()
    first, _, rest = text.partition(" ")
    return first, rest.strip()


def columns(text: str) -> int:
    """About how many columns a terminal gives ``text`` (printable): two
    for a wide or fullwidth character, none for a combining mark or a
    format character, one for any other (as wcwidth counts them, closely
    enough to indent the lines of a block)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Me", "Mn", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def excerpt(text: str, length: int = 30) -> str:
    """The start of a line, printable, to tell the person which one is meant."""
    text = printable_text(text)
    return text if len(text) <= length else text[: length - 1] + "\N{HORIZONTAL ELLIPSIS}"


def block_text(text: str, before: str) -> str:
    """A chat line's text made printable; a block's lines (LF between them)
    each printable, the second and later ones indented by the columns of
    ``before`` (what is shown before the text: ``alice: ``), so that they
    stand under the first one's text and no line of a block can pass for
    someone else's line."""
    if "\n" not in text:
        return printable_text(text)
    indent = "\n" + " " * columns(before)
    return indent.join(printable_text(line) for line in text.split("\n"))
