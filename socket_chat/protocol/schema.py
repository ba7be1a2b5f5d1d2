"""What a message's fields are on the wire: text, bytes or a number.

PROTOCOL.md section 4 has three field types: text (u16 length, then
UTF-8), bytes (u16 length, then the bytes as they are: a key, a signature)
and numbers (u32, big-endian). A message class says which each field is by
its annotation (``str``, ``bytes`` or ``int``); ``field_specs`` reads them once per
class with ``typing.get_type_hints``, which resolves the annotations to the
types themselves, so the answer does not depend on how they are written
(``from __future__ import annotations`` makes them strings, without it they
are classes). A field of any other type is refused when the class is first
used, not when a peer sends one.

The message classes (``messages``) check their values against these specs,
and the codec (``codec``) reads and writes fields by them.
"""

from __future__ import annotations

import dataclasses
import enum
import typing

__all__ = ["FieldType", "FieldSpec", "field_specs", "MAX_U32"]

#: The largest number a u32 field carries.
MAX_U32 = 0xFFFFFFFF


class FieldType(enum.Enum):
    """How a field goes on the wire; the value is its Python type."""

    #: Text: a u16 length, then that many bytes of UTF-8.
    TEXT = str
    #: A number from 0 to 2**32 - 1: a big-endian u32.
    U32 = int
    #: Bytes: a u16 length, then that many bytes, as they are.
    BYTES = bytes


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One field of a message: its name and its wire type."""

    name: str
    type: FieldType


#: Each class's specs, read once (``messages`` reads them all at import, so
#: later calls only look them up, from any thread).
_SPECS: dict[type, tuple[FieldSpec, ...]] = {}


def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The wire fields of the message dataclass ``cls``, in order.

    Raises:
        TypeError: a field is annotated with a type other than ``str``,
            ``bytes`` or ``int`` (a bug in the message class).
    """
    specs = _SPECS.get(cls)
    if specs is None:
        specs = _SPECS[cls] = _read_specs(cls)
    return specs


def _read_specs(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        try:
            specs.append(FieldSpec(f.name, FieldType(hints[f.name])))
        except ValueError:
            raise TypeError(
                f"{cls.__name__}.{f.name} is {hints[f.name]!r}: a message field is str, bytes or int"
            ) from None
    return tuple(specs)
