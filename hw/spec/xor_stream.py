"""Executable spec of the `hw.xor_decoder.XorDecoder` streams, in plain NumPy/Python.

An input beat packs, from the LSB (`beat_fields`, which is also the decoder's StructLayout):

    x          n_in bits                          the slice's stored bits (first beat of a slice only)
    positions  max_patches x w bits, w = ceil(log2 n_out), element 0 lowest
    count      bit_length(max_patches) bits       valid positions in this beat, from element 0
    last       1 bit                              this beat ends the slice

A slice with k patches is max(1, ceil(k / max_patches)) beats: every beat but the final one carries
max_patches positions, the final one the rest (possibly none) with `last` set. Fields the decoder ignores
(x of continuation beats, position elements at or above `count`) are written as 0 by `slices_to_beats`;
`scramble_ignored` fills them with noise to show they are ignored. The output is one n_out-bit word per
slice, bit j = y[j], with y from `hw.spec.xor.decode_slices`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .fields import Array, Description, WordFormat, bits_to_int, field_bits, field_offset
from .xor import decode_slices, position_width


def beat_fields(n_in: int, n_out: int, max_patches: int) -> Description:
    """The input beat's fields, LSB first (`XorDecoderParams.beat_layout` is this description)."""
    return {"x": n_in, "positions": Array(position_width(n_out), max_patches), "count": max_patches.bit_length(),
            "last": 1}


@dataclass(frozen=True)
class BeatFormat(WordFormat):
    """Bit offsets and widths of one input beat's fields (`beat_fields`); `table`: x, positions.0 ..
    positions.{max_patches - 1}, count, last; no field is signed."""

    n_in: int
    n_out: int
    max_patches: int

    @cached_property
    def description(self) -> Description:
        """The beat's fields (`beat_fields`)."""
        return beat_fields(self.n_in, self.n_out, self.max_patches)

    position_width = field_bits("positions.0")
    count_width = field_bits("count")
    positions_offset = field_offset("positions.0")
    count_offset = field_offset("count")
    last_offset = field_offset("last")

    def pack(self, x: int, positions: list[int], last: bool) -> int:
        """One beat: `x` as an n_in-bit int, up to max_patches `positions`, `last`."""
        if not 0 <= x < 1 << self.n_in:
            raise ValueError(f"x={x:#x} does not fit n_in={self.n_in} bits")
        if len(positions) > self.max_patches:
            raise ValueError(f"{len(positions)} positions in one beat, max_patches={self.max_patches}")
        values = {"x": x, "count": len(positions), "last": int(last)}
        for k, position in enumerate(positions):
            # Positions from n_out up are outside the format, yet packable: testbenches show the decoder ignores them.
            if not 0 <= position < 1 << self.position_width:
                raise ValueError(f"patch position {position} does not fit {self.position_width} bits")
            values[f"positions.{k}"] = position
        return self.pack_word(values)

    def unpack(self, beat: int) -> tuple[int, list[int], int, bool]:
        """(x, all max_patches position fields, count, last) of a beat."""
        f = self.unpack_word(beat)
        return f["x"], [f[f"positions.{k}"] for k in range(self.max_patches)], f["count"], bool(f["last"])


def slices_to_beats(x: np.ndarray, patch_counts: np.ndarray, patch_positions: np.ndarray, max_patches: int,
                    *, n_out: int) -> list[int]:
    """The canonical beat stream for slices `x` (S, n_in) with their patches (counts, flat positions)."""
    x = np.asarray(x, dtype=np.uint8)
    counts = np.asarray(patch_counts, dtype=np.int64)
    positions = [int(p) for p in np.asarray(patch_positions, dtype=np.int64)]
    if x.ndim != 2 or counts.shape != (x.shape[0],) or int(counts.sum()) != len(positions):
        raise ValueError(f"x {x.shape}, patch_counts {counts.shape} and {len(positions)} positions disagree")
    if positions and not 0 <= min(positions) <= max(positions) < n_out:
        raise ValueError(f"patch positions must be in 0..{n_out - 1}, got {min(positions)}..{max(positions)}")
    fmt = BeatFormat(x.shape[1], n_out, max_patches)
    beats, offset = [], 0
    for row, count in zip(x, counts):
        mine = positions[offset:offset + count]
        offset += count
        chunks = [mine[c:c + max_patches] for c in range(0, len(mine), max_patches)] or [[]]
        for index, chunk in enumerate(chunks):
            beats.append(fmt.pack(bits_to_int(row) if index == 0 else 0, chunk, index == len(chunks) - 1))
    return beats


def scramble_ignored(beats: list[int], fmt: BeatFormat, rng: random.Random) -> list[int]:
    """`beats` with random values in the fields the decoder ignores: continuation x, positions past count."""
    scrambled, starts_slice = [], True
    for beat in beats:
        _, _, count, last = fmt.unpack(beat)
        ignored = ([] if starts_slice else ["x"]) + [f"positions.{k}" for k in range(count, fmt.max_patches)]
        for name in ignored:
            offset, width = fmt.table[name]
            beat = (beat & ~(((1 << width) - 1) << offset)) | (rng.getrandbits(width) << offset)
        scrambled.append(beat)
        starts_slice = last
    return scrambled


def expected_words(m: np.ndarray, x: np.ndarray, patch_counts: np.ndarray,
                   patch_positions: np.ndarray) -> list[int]:
    """The decoder's output words: `decode_slices` per slice, bit j of the word = y[j]."""
    return [bits_to_int(y) for y in decode_slices(m, x, patch_counts, patch_positions)]
