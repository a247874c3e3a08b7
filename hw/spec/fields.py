"""Field tables: words packed from and unpacked into named fields, the codec of every stream's beats.

A field table maps a dotted field name to (offset, width) from the word's LSB: `field_table` makes one from a
layout description (the one definition of a beat's fields, which `hw.layouts.struct_layout` turns into the
gateware's Amaranth layout), `hw.layouts.layout_fields` from an Amaranth layout, and the device's INFO
publishes the hardware's tables, so the host packs beats without importing the hardware. Pure Python.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np

FieldTable = Mapping[str, tuple[int, int]]


def fields_from_json(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """INFO's list of {name, offset, width} records as a field table."""
    return {str(r["name"]): (int(r["offset"]), int(r["width"])) for r in records}


def word_bits(fields: FieldTable) -> int:
    """Bits a word of this table spans (its highest field's end)."""
    return max((offset + width for offset, width in fields.values()), default=0)


def pack_fields(fields: FieldTable, values: Mapping[str, Any], signed: Collection[str] | None = None) -> int:
    """One word: each named value in its field (negative ones two's complement); missing fields are 0.

    ValueError naming the field and its range for a value that is no integer or does not fit: with `signed` (the
    fields holding two's complement values), those fields take -2^(w-1)..2^(w-1)-1 and every other 0..2^w-1;
    without, a field takes either reading, -2^(w-1)..2^w-1. Nothing is ever cut to fit.
    """
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    word = 0
    for name, value in values.items():
        offset, width = fields[name]
        try:
            value = int(value) if isinstance(value, np.bool_) else operator.index(value)
        except TypeError:
            raise ValueError(f"field {name}={value!r} is not an integer") from None
        half = 1 << max(width - 1, 0) if width else 0
        low = -half if signed is None or name in signed else 0
        high = half - 1 if signed is not None and name in signed else (1 << width) - 1
        if not low <= value <= high:
            kind = "either reading" if signed is None else "signed" if name in signed else "unsigned"
            raise ValueError(f"field {name}={value} does not fit {width} bits ({kind}, {low}..{high})")
        word |= (value & ((1 << width) - 1)) << offset
    return word


def unpack_fields(fields: FieldTable, word: int) -> dict[str, int]:
    """Every field of `word` as an unsigned integer."""
    return {name: (int(word) >> offset) & ((1 << width) - 1) for name, (offset, width) in fields.items()}


def beats_to_bytes(beats: Sequence[int], width: int) -> bytes:
    """Beats of `width` bits as ceil(width / 8) little-endian bytes each (the link's LOAD format)."""
    size = (width + 7) // 8
    mask = (1 << width) - 1
    return b"".join((int(beat) & mask).to_bytes(size, "little") for beat in beats)


__all__ = ["FieldTable", "fields_from_json", "word_bits", "pack_fields", "unpack_fields", "beats_to_bytes", "Signed",
           "Array", "Field", "Description", "field_width", "field_table", "signed_fields", "WordFormat", "Word",
           "field_offset", "field_bits"]


def bits_to_int(bits: np.ndarray) -> int:
    """A 0/1 vector as an int, element j at bit j."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little").tobytes(), "little")


# ---------------------------------------------------------------------------------------------------------------
# Layout descriptions: a beat's fields written once, in the spec, for the host's packers (`field_table`) and the
# gateware's Amaranth layouts (`hw.layouts.struct_layout`) alike.


@dataclass(frozen=True)
class Signed:
    """A two's complement field of `width` bits (a plain int width is unsigned)."""

    width: int


@dataclass(frozen=True)
class Array:
    """`count` fields `elem`, element 0 lowest, named by element number."""

    elem: Field
    count: int


#: A field: a width in bits (unsigned), `Signed`, `Array`, or a nested description.
Field: TypeAlias = "int | Signed | Array | Description"
#: Named fields in order, the first at the LSB, each directly above the one before.
Description: TypeAlias = "Mapping[str, Field]"


def field_width(field: Field) -> int:
    """Bits `field` spans."""
    if isinstance(field, Signed):
        return field.width
    if isinstance(field, Array):
        return field.count * field_width(field.elem)
    if isinstance(field, Mapping):
        return sum(field_width(member) for member in field.values())
    return int(field)


def _leaves(desc: Field) -> Iterable[tuple[str, int, int | Signed]]:
    """(dotted name, offset, field) of each leaf field of a description, LSB first."""
    pending: list[tuple[str, int, Field]] = [("", 0, desc)]
    while pending:
        name, offset, field = pending.pop()
        if isinstance(field, Array):
            members: list[tuple[str, Field]] = [(str(j), field.elem) for j in range(field.count)]
        elif isinstance(field, Mapping):
            members = list(field.items())
        else:
            yield name, offset, field
            continue
        placed = []
        for member, sub in members:
            placed.append((f"{name}.{member}" if name else member, offset, sub))
            offset += field_width(sub)
        pending += reversed(placed)


def field_table(desc: Field) -> dict[str, tuple[int, int]]:
    """The leaf fields of a description as {dotted name: (offset, width)}, LSB first, named as
    `hw.layouts.layout_fields` names an Amaranth layout's (nested names joined by dots, array elements by number)."""
    return {name: (offset, field_width(field)) for name, offset, field in _leaves(desc)}


def signed_fields(desc: Field) -> frozenset[str]:
    """The dotted names of a description's `Signed` leaf fields: `pack_fields`'s `signed` for its table."""
    return frozenset(name for name, _, field in _leaves(desc) if isinstance(field, Signed))


class WordFormat:
    """A word written as a layout description: its field table, two's complement fields and width, derived once.

    A subclass gives `description` (an attribute or a property); a stream spec's beat format derives from this and
    adds its own packer over `pack_word` and `unpack_word`.
    """

    description: Field

    @cached_property
    def table(self) -> dict[str, tuple[int, int]]:
        """The word's field table (`field_table` of its description)."""
        return field_table(self.description)

    @cached_property
    def signed(self) -> frozenset[str]:
        """The word's two's complement fields (`signed_fields` of its description)."""
        return signed_fields(self.description)

    @property
    def width(self) -> int:
        """Bits the word spans."""
        return word_bits(self.table)

    def pack_word(self, values: Mapping[str, Any]) -> int:
        """One word of named field values (`pack_fields` with the word's signed fields); missing fields are 0."""
        return pack_fields(self.table, values, signed=self.signed)

    def unpack_word(self, word: int) -> dict[str, int]:
        """Every field of `word` as an unsigned integer."""
        return unpack_fields(self.table, word)


def field_offset(name: str) -> property:
    """A `WordFormat` property naming a field's place: the bit at which field `name` starts."""
    return property(lambda fmt: fmt.table[name][0], doc=f"The bit at which field {name} starts.")


def field_bits(name: str) -> property:
    """A `WordFormat` property naming a field's width: the bits of field `name`."""
    return property(lambda fmt: fmt.table[name][1], doc=f"The bits of field {name}.")


@dataclass(frozen=True, eq=False)
class Word(WordFormat):
    """The format of one word given by its description (for a stream spec with several kinds of word)."""

    description: Field
