"""How text from the network is shown to a person: made safe to print, and
the small formats both programs share (durations, ``NAME REST``, excerpts).

Nothing here is part of the wire protocol: a second implementation may show
things its own way. PROTOCOL.md says only what must never reach a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["printable_text", "collapse_blank_runs", "MAX_BLANK_RUN", "format_duration", "split_name", "excerpt"]


def printable_text(text: str) -> str:
    """Text from the network made safe to print on a terminal.

    C0 and C1 controls (ESC among them) and other non-printing characters
    become U+FFFD, so no escape sequence reaches the terminal; tabs become
    a space. Long runs of blanks are shortened (``collapse_blank_runs``).
    """
    text = collapse_blank_runs(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " if ch == "\t" else "\N{REPLACEMENT CHARACTER}" for ch in text)


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


def excerpt(text: str, length: int = 30) -> str:
    """The start of a line, printable, to tell the person which one is meant."""
    text = printable_text(text)
    return text if len(text) <= length else text[: length - 1] + "\N{HORIZONTAL ELLIPSIS}"
