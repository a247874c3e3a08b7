"""Executable spec of the `hw.bim_unpacker` streams (`BimUnpacker`, `SparseExpander`), in NumPy/Python.

Tiles are streamed in C order over their leading axes (for a matrix's (T_r, T_c, ...) tile grid: row of
tiles by row of tiles), rows of a tile in order, positions of a row from j = 0.

Unpacker input beat, fields from the LSB (`unpacker_beat_fields`, also `BimUnpackerParams.beat_layout`):

    p       r bits            a P row, bit k = P[i, k]                          (read when has_p)
    z       n_t bits          Z row z_row of the next tile, bit j = Z[k, j]      (read when has_z)
    z_row   max(1, ceil(log2 r)) bits                                           (values >= r write nothing)
    has_p   1 bit             the beat carries a P row: one output row
    has_z   1 bit             the beat carries a Z row, written to the shadow Z
    first   1 bit             (with has_p) the tile's first row: the shadow Z becomes the tile's Z first
    last    1 bit             (with has_p) the tile's last row: copied to the output row's `last`

The canonical stream (`tiles_to_beats`) is r Z-only beats carrying tile 0's Z, then per tile its m_t P
beats, the first min(m_t, r) of them carrying the next tile's Z rows, then r - m_t Z-only beats when r > m_t
(none after the last tile): r + T·m_t + (T - 1)·max(0, r - m_t) beats for T tiles. `unpack_beats` is the
unpacker's behaviour on any beat stream.

Mask row (unpacker output, expander input, `mask_row_fields`): `row` (n_t bits, bit j = mask[i, j]) then
`last` (bit n_t).

Expander value beat (`value_beat_fields`): values_per_beat values of value_width bits, value e at bits
[e·w, (e+1)·w). The values are one continuous stream: each mask row takes the next popcount(row) values (its
kept positions' values, in position order); a row with `last` ends a group (a tile) and the rest of the beat
that held the group's final value is padding, so each group starts on a beat boundary (`pack_values` writes
zeros). Dense row (expander output, `dense_row_fields`): value j at bits [j·w, (j+1)·w), 0 where pruned, then
`last` at bit n_t·w.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hw.spec.bim import boolean_product
from hw.spec.fields import Array, Description, Word, WordFormat, bits_to_int, field_bits, field_offset


def _tiles(p: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P and Z as (T, m_t, r) and (T, r, n_t) bool arrays, leading axes flattened in C order."""
    p, z = np.asarray(p, dtype=bool), np.asarray(z, dtype=bool)
    if p.ndim < 2 or z.ndim < 2 or p.shape[:-2] != z.shape[:-2] or p.shape[-1] != z.shape[-2]:
        raise ValueError(f"P {p.shape} and Z {z.shape} must be (..., m_t, r) and (..., r, n_t) with the same tiles")
    return p.reshape(-1, *p.shape[-2:]), z.reshape(-1, *z.shape[-2:])


_FLAGS = ("has_p", "has_z", "first", "last")


def unpacker_beat_fields(n_t: int, r: int) -> Description:
    """The unpacker input beat's fields, LSB first (`BimUnpackerParams.beat_layout` is this description)."""
    return {"p": r, "z": n_t, "z_row": max(1, (r - 1).bit_length()), **dict.fromkeys(_FLAGS, 1)}


def mask_row_fields(n_t: int) -> Description:
    """A mask row's fields: `row` (bit j = mask[i, j]) and `last` (the tile's last row), LSB first."""
    return {"row": n_t, "last": 1}


def value_beat_fields(value_width: int, values_per_beat: int) -> Array:
    """An expander value beat: values_per_beat values of value_width bits, element 0 lowest."""
    return Array(value_width, values_per_beat)


def dense_row_fields(n_t: int, value_width: int) -> Description:
    """An expander dense row: `row` (n_t values of value_width bits, element j lowest) and `last`."""
    return {"row": Array(value_width, n_t), "last": 1}


@dataclass(frozen=True)
class UnpackerBeatFormat(WordFormat):
    """Bit offsets and widths of one unpacker input beat's fields (`unpacker_beat_fields`); `table`: p, z, z_row,
    has_p, has_z, first, last; no field is signed."""

    n_t: int
    r: int

    @cached_property
    def description(self) -> Description:
        """The beat's fields (`unpacker_beat_fields`)."""
        return unpacker_beat_fields(self.n_t, self.r)

    z_row_width = field_bits("z_row")
    z_offset = field_offset("z")
    z_row_offset = field_offset("z_row")
    #: has_p at this bit, then has_z, first, last.
    flags_offset = field_offset("has_p")

    def pack(self, *, p: int | None = None, z: tuple[int, int] | None = None, first: bool = False,
             last: bool = False) -> int:
        """One beat: a P row `p` (an r-bit int) and/or a Z row `z` = (row index, n_t-bit int); tags."""
        values = {"first": int(first), "last": int(last)}
        if p is not None:
            if not 0 <= p < 1 << self.r:
                raise ValueError(f"P row {p:#x} does not fit r={self.r} bits")
            values |= {"p": p, "has_p": 1}
        if z is not None:
            index, row = z
            if not 0 <= index < 1 << self.z_row_width:
                raise ValueError(f"Z row index {index} does not fit {self.z_row_width} bits")
            if not 0 <= row < 1 << self.n_t:
                raise ValueError(f"Z row {row:#x} does not fit n_t={self.n_t} bits")
            values |= {"z": row, "z_row": index, "has_z": 1}
        return self.pack_word(values)

    def unpack(self, beat: int) -> dict[str, int]:
        """All fields of a beat, ignored ones included."""
        return self.unpack_word(beat)


def tiles_to_beats(p: np.ndarray, z: np.ndarray) -> list[int]:
    """The canonical unpacker input stream for tiles P (..., m_t, r) and Z (..., r, n_t)."""
    p, z = _tiles(p, z)
    tiles, m_t, r = p.shape
    fmt = UnpackerBeatFormat(z.shape[2], r)
    z_rows = [[bits_to_int(row) for row in tile] for tile in z]
    beats = [fmt.pack(z=(k, z_rows[0][k])) for k in range(r)]
    for t in range(tiles):
        following = z_rows[t + 1] if t + 1 < tiles else []
        for i in range(m_t):
            ride = (i, following[i]) if i < len(following) else None
            beats.append(fmt.pack(p=bits_to_int(p[t, i]), z=ride, first=i == 0, last=i == m_t - 1))
        beats += [fmt.pack(z=(k, following[k])) for k in range(m_t, len(following))]
    return beats


def expected_mask_rows(p: np.ndarray, z: np.ndarray) -> list[int]:
    """The unpacker's output beats: each tile's Boolean product P∘Z, row by row, `last` on its final row."""
    p, z = _tiles(p, z)
    masks = boolean_product(p, z)
    return mask_row_beats(masks)


def mask_row_beats(masks: np.ndarray) -> list[int]:
    """Mask rows of tiles (..., m_t, n_t) as row beats, `last` on each tile's final row."""
    masks = np.asarray(masks, dtype=bool)
    masks = masks.reshape(-1, *masks.shape[-2:])
    word = Word(mask_row_fields(masks.shape[2]))
    return [word.pack_word({"row": bits_to_int(row), "last": int(i == len(tile) - 1)})
            for tile in masks for i, row in enumerate(tile)]


def unpack_beats(beats: list[int], n_t: int, r: int) -> list[int]:
    """What the unpacker emits for any beat stream: the shadow/active Z rules applied beat by beat."""
    fmt = UnpackerBeatFormat(n_t, r)
    row_word = Word(mask_row_fields(n_t))
    shadow, active, rows = [0] * r, [0] * r, []
    for beat in beats:
        f = fmt.unpack(beat)
        if f["has_p"] and f["first"]:
            active = list(shadow)
        if f["has_z"] and f["z_row"] < r:
            shadow[f["z_row"]] = f["z"]
        if f["has_p"]:
            row = 0
            for k in range(r):
                if f["p"] >> k & 1:
                    row |= active[k]
            rows.append(row_word.pack_word({"row": row, "last": f["last"]}))
    return rows


def scrambled_beats(p: np.ndarray, z: np.ndarray, rng: random.Random) -> list[int]:
    """Another valid stream for the same tiles: each tile's Z rows in random order, some written twice (a wrong
    value first), spread over the previous tile's P beats and extra Z-only beats; idle beats (neither P nor Z)
    inserted; ignored fields (P, Z, first, last where unused) random. `unpack_beats` of it = the tiles' masks."""
    p, z = _tiles(p, z)
    tiles, m_t, r = p.shape
    n_t = z.shape[2]
    fmt = UnpackerBeatFormat(n_t, r)

    def writes(t: int) -> list[tuple[int, int]]:
        rows = [(k, bits_to_int(z[t, k])) for k in range(r)]
        rng.shuffle(rows)
        early = [(k, rng.getrandbits(n_t)) for k in range(r) if rng.random() < 0.2]
        return early + rows  # a stale value before the right one: the later write wins

    def noise(beat: int, *, p_used: bool, z_used: bool) -> int:
        if not p_used:
            beat |= rng.getrandbits(r)
            beat |= rng.getrandbits(2) << fmt.table["first"][0]  # first and last, adjacent
        if not z_used:
            beat |= rng.getrandbits(n_t) << fmt.z_offset | rng.getrandbits(fmt.z_row_width) << fmt.z_row_offset
        return beat

    def z_only(write: tuple[int, int]) -> int:
        return noise(fmt.pack(z=write), p_used=False, z_used=True)

    def idle() -> int:
        return noise(0, p_used=False, z_used=False)

    beats = [z_only(write) for write in writes(0)]
    for t in range(tiles):
        pending = writes(t + 1) if t + 1 < tiles else []
        for i in range(m_t):
            while rng.random() < 0.15:
                beats.append(idle() if rng.random() < 0.5 or not pending or i == 0 else z_only(pending.pop(0)))
            ride = pending.pop(0) if pending and rng.random() < 0.7 else None
            beat = fmt.pack(p=bits_to_int(p[t, i]), z=ride, first=i == 0, last=i == m_t - 1)
            beats.append(noise(beat, p_used=True, z_used=ride is not None))
        beats += [z_only(write) for write in pending]
    if r < 1 << fmt.z_row_width:  # indices past r write nothing
        beats.insert(len(beats) // 2, z_only((r, rng.getrandbits(n_t))))
    return beats


# ---------------------------------------------------------------------------------------------------------------
# SparseExpander


@dataclass(frozen=True)
class ExpanderFormat:
    """Bit packing of the expander's value beats (`value_beat_fields`) and dense rows (`dense_row_fields`)."""

    n_t: int
    value_width: int
    values_per_beat: int

    @cached_property
    def value(self) -> Word:
        """A value beat (`value_beat_fields`); its table: "0" .. str(values_per_beat - 1)."""
        return Word(value_beat_fields(self.value_width, self.values_per_beat))

    @cached_property
    def dense(self) -> Word:
        """A dense row (`dense_row_fields`); its table: row.0 .. row.{n_t - 1}, last."""
        return Word(dense_row_fields(self.n_t, self.value_width))

    def pack_beat(self, values: list[int]) -> int:
        """One value beat, value e at bits [e·w, (e+1)·w); fewer than values_per_beat values are zero-padded."""
        if len(values) > self.values_per_beat:
            raise ValueError(f"{len(values)} values in one beat, values_per_beat={self.values_per_beat}")
        return self.value.pack_word(self._checked(values, ""))

    def unpack_beat(self, beat: int) -> list[int]:
        return list(self.value.unpack_word(beat).values())

    def pack_dense(self, row: list[int], last: bool) -> int:
        if len(row) != self.n_t:
            raise ValueError(f"a dense row has n_t={self.n_t} values, got {len(row)}")
        return self.dense.pack_word({**self._checked(row, "row."), "last": int(last)})

    def _checked(self, words: list[int], prefix: str) -> dict[str, int]:
        """{prefix + str(e): word e}, each word checked to fit value_width bits."""
        for word in words:
            if not 0 <= int(word) < 1 << self.value_width:
                raise ValueError(f"value {int(word)} does not fit value_width={self.value_width} bits")
        return {f"{prefix}{e}": int(word) for e, word in enumerate(words)}


def _masks_and_values(masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values)
    if masks.ndim < 2 or masks.shape != values.shape:
        raise ValueError(f"masks {masks.shape} and values {values.shape} must both be (..., m_t, n_t)")
    return masks.reshape(-1, *masks.shape[-2:]), values.reshape(-1, *values.shape[-2:]).astype(np.int64)


def pack_values(masks: np.ndarray, values: np.ndarray, fmt: ExpanderFormat) -> list[int]:
    """The value beats for tiles `masks`, `values` (..., m_t, n_t): each tile's kept values in row-major
    order, packed values_per_beat per beat, the tile's final beat padded with zeros."""
    masks, values = _masks_and_values(masks, values)
    beats = []
    v = fmt.values_per_beat
    for mask, tile in zip(masks, values):
        kept = [int(x) for x in tile[mask]]
        beats += [fmt.pack_beat(kept[b:b + v]) for b in range(0, len(kept), v)]
    return beats


def expected_dense_rows(masks: np.ndarray, values: np.ndarray, fmt: ExpanderFormat) -> list[int]:
    """The expander's output beats: each tile's values where the mask keeps them, 0 elsewhere."""
    masks, values = _masks_and_values(masks, values)
    dense = np.where(masks, values, 0)
    return [fmt.pack_dense(row.tolist(), i == len(tile) - 1) for tile in dense for i, row in enumerate(tile)]


def expand(mask_beats: list[int], value_beats: list[int], fmt: ExpanderFormat) -> list[int]:
    """What the expander emits for any mask-row and value streams: the continuous-stream rules applied."""
    n, v = fmt.n_t, fmt.values_per_beat
    mask_row = Word(mask_row_fields(n))
    flat = [x for beat in value_beats for x in fmt.unpack_beat(beat)]
    taken, rows = 0, []
    for beat in mask_beats:
        fields = mask_row.unpack_word(beat)
        bits, last = fields["row"], fields["last"]
        kept = [j for j in range(n) if bits >> j & 1]
        if taken + len(kept) > len(flat):
            raise ValueError(f"row {len(rows)} needs values {taken}..{taken + len(kept) - 1}, "
                             f"the value stream has {len(flat)}")
        row = [0] * n
        for index, j in enumerate(kept):  # the prefix count of position j is `index`
            row[j] = flat[taken + index]
        taken += len(kept)
        if last:
            taken = -(-taken // v) * v
        rows.append(fmt.pack_dense(row, bool(last)))
    return rows
