"""Field tables: words packed from and unpacked into named fields, the codec of every stream's beats.

A field table maps a dotted field name to (offset, width) from the word's LSB: `hw.layouts.layout_fields`
makes one from an Amaranth layout, and the device's INFO publishes the same tables, so the host packs
beats without importing the hardware. Pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

FieldTable = Mapping[str, tuple[int, int]]


def fields_from_json(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """INFO's list of {name, offset, width} records as a field table."""
    return {str(r["name"]): (int(r["offset"]), int(r["width"])) for r in records}


def word_bits(fields: FieldTable) -> int:
    """Bits a word of this table spans (its highest field's end)."""
    return max((offset + width for offset, width in fields.values()), default=0)


def pack_fields(fields: FieldTable, values: Mapping[str, Any]) -> int:
    """One word: each named value, two's complement truncated to its field's width; missing fields are 0."""
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    word = 0
    for name, value in values.items():
        offset, width = fields[name]
        word |= (int(value) & ((1 << width) - 1)) << offset
    return word


def unpack_fields(fields: FieldTable, word: int) -> dict[str, int]:
    """Every field of `word` as an unsigned integer."""
    return {name: (int(word) >> offset) & ((1 << width) - 1) for name, (offset, width) in fields.items()}


def beats_to_bytes(beats: Sequence[int], width: int) -> bytes:
    """Beats of `width` bits as ceil(width / 8) little-endian bytes each (the link's LOAD format)."""
    size = (width + 7) // 8
    mask = (1 << width) - 1
    return b"".join((int(beat) & mask).to_bytes(size, "little") for beat in beats)


__all__ = ["FieldTable", "fields_from_json", "word_bits", "pack_fields", "unpack_fields", "beats_to_bytes"]


def bits_to_int(bits: np.ndarray) -> int:
    """A 0/1 vector as an int, element j at bit j."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little").tobytes(), "little")
