"""Executable spec of the `hw.fc_engine.FcEngine` streams, in plain NumPy/Python.

A layer (`FcLayer`) is its weights compressed as the engine consumes them: the bit-planes of the tile-major
matrix (`hw.spec.fc`) XOR-encoded slice by slice with n_out = n_t, the keep mask as BIM factors of the
same tiles, and the fixed-point constants a, bias_q, shift, relu. Beats, fields from the LSB (`cfg_beat_fields`
and `scale_beat_fields`, which are also the engine's StructLayouts; `FcStreamFormat` holds the widths):

`cfg`, one beat per layer:

    rows   bit_length(max_rows) bits    1..max_rows
    cols   bit_length(max_cols) bits    1..max_cols
    bits   bit_length(max_bits) bits    planes q, 1..max_bits
    shift  shift_bits bits              0..min(62, 2^shift_bits - 1)
    relu   1 bit

`x`, cols beats: one activation each, int8 two's complement, column 0 first. The engine pads the vector
with zeros to whole tiles of n_t.

`scale`, rows beats, row 0 first:

    a      max_bits x a_bits            element i = a[row, i], unsigned, element 0 lowest; elements from q on
                                        are ignored (`pack_scale` writes 0)
    bias   bias_bits                    bias_q[row], two's complement

`xor`: the XOR decoder's input beats (`hw.spec.xor_stream`) of the q planes of the tile-major matrix,
plane after plane: q · T_r · T_c · m_t slices of n_t bits, slice k of a plane = tile-major row k.

`bim`: the BIM unpacker's input beats (`hw.spec.bim_stream`) of the mask's tiles in row-major tile
order, the whole tile list once per plane. `layer_streams` writes the canonical stream of the q · T_r · T_c
tiles in sequence, so the first tile's Z rows of plane i + 1 ride on the last tile's P beats of plane i; q
canonical streams of one plane each, concatenated, are equally valid (only r Z-only beats slower per plane).
The rows' `last` tags are not used by the engine.

`o`, rows beats: y[row], int8 two's complement, row 0 first.

A layer's beats on each port follow the previous layer's: the engine takes cfg, then x and scale (in any
interleaving), consumes one slice with one mask row per cycle, and emits `o`; the next cfg is taken after
the last `o` beat. xor and bim beats offered early wait in the decoder and the unpacker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hw.spec.bim import boolean_product, tiles_to_mask
from hw.spec.bim_stream import tiles_to_beats
from hw.spec.fc import ACT_BITS, MAX_SHIFT, FcLayout, fc_fixed
from hw.spec.fields import Array, Description, Signed, Word
from hw.spec.params import check_range
from hw.spec.xor import decode_slices
from hw.spec.xor_stream import slices_to_beats


def cfg_beat_fields(max_rows: int, max_cols: int, max_bits: int, shift_bits: int) -> Description:
    """The cfg beat's fields, LSB first (`FcEngineParams.cfg_layout` is this description)."""
    return {"rows": max_rows.bit_length(), "cols": max_cols.bit_length(), "bits": max_bits.bit_length(),
            "shift": shift_bits, "relu": 1}


def scale_beat_fields(max_bits: int, a_bits: int, bias_bits: int) -> Description:
    """A scale beat's fields, LSB first: a (element i = plane i) and bias (`FcEngineParams.scale_layout`)."""
    return {"a": Array(a_bits, max_bits), "bias": Signed(bias_bits)}


@dataclass(frozen=True)
class FcStreamFormat:
    """Widths of the engine's beats: tile shape, BIM rank, XOR sizes and the layer limits.

    n_t is the BIM tile width; the engine's XOR slices are as wide (its `n_out`), which `from_describe` maps.
    """

    n_t: int
    m_t: int
    r: int
    n_in: int
    max_patches: int
    max_rows: int
    max_cols: int
    max_bits: int
    a_bits: int = 16
    bias_bits: int = 32
    shift_bits: int = 6

    @classmethod
    def from_describe(cls, params: Mapping[str, Any]) -> FcStreamFormat:
        """The format of an engine from its `FcEngineParams.describe()` record (INFO's `engines.fc.params`),
        n_t being its XOR slice width n_out."""
        widths = {name: int(params[name]) for name in ("m_t", "r", "n_in", "max_patches", "max_rows", "max_cols",
                                                       "max_bits", "a_bits", "bias_bits", "shift_bits")}
        return cls(n_t=int(params["n_out"]), **widths)

    @property
    def layout(self) -> FcLayout:
        return FcLayout(self.m_t, self.n_t)

    @property
    def max_shift(self) -> int:
        return min(MAX_SHIFT, (1 << self.shift_bits) - 1)

    @cached_property
    def cfg(self) -> Word:
        """The cfg beat (`cfg_beat_fields`); no field is signed."""
        return Word(cfg_beat_fields(self.max_rows, self.max_cols, self.max_bits, self.shift_bits))

    @cached_property
    def scale(self) -> Word:
        """A scale beat (`scale_beat_fields`); its table: a.0 .. a.{max_bits - 1}, bias (signed)."""
        return Word(scale_beat_fields(self.max_bits, self.a_bits, self.bias_bits))

    @property
    def cfg_fields(self) -> tuple[tuple[str, int], ...]:
        """(name, width) of the cfg beat's fields, LSB first."""
        return tuple((name, width) for name, (_, width) in self.cfg.table.items())

    @property
    def scale_width(self) -> int:
        return self.scale.width

    def pack_cfg(self, rows: int, cols: int, bits: int, shift: int, relu: bool) -> int:
        """One cfg beat; ValueError naming the field when a value is outside its range."""
        check_range("rows", rows, 1, self.max_rows)
        check_range("cols", cols, 1, self.max_cols)
        check_range("bits", bits, 1, self.max_bits)
        check_range("shift", shift, 0, self.max_shift)
        return self.cfg.pack_word({"rows": rows, "cols": cols, "bits": bits, "shift": shift, "relu": int(bool(relu))})

    def unpack_cfg(self, beat: int) -> dict[str, int]:
        """The cfg beat's fields."""
        return self.cfg.unpack_word(beat)

    def pack_x(self, x: np.ndarray) -> list[int]:
        """The x beats of an activation vector (int8 values)."""
        x = np.asarray(x)
        if x.ndim != 1 or x.dtype.kind not in "iu":
            raise ValueError(f"x must be a 1-D integer vector, got {x.dtype} {x.shape}")
        check_range("x", x, -(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1)
        return [int(v) & 0xFF for v in x]

    def pack_scale(self, a: np.ndarray, bias_q: np.ndarray) -> list[int]:
        """The scale beats: per row its a (q <= max_bits values) and bias_q."""
        a = np.asarray(a, dtype=np.int64)
        bias_q = np.asarray(bias_q, dtype=np.int64)
        if a.ndim != 2 or not 1 <= a.shape[1] <= self.max_bits or bias_q.shape != a.shape[:1]:
            raise ValueError(f"a must be (rows, q <= {self.max_bits}) and bias_q (rows,), got {a.shape} and "
                             f"{bias_q.shape}")
        check_range("a", a, 0, (1 << self.a_bits) - 1)
        check_range("bias_q", bias_q, -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1)
        return [self.scale.pack_word({**{f"a.{i}": v for i, v in enumerate(row.tolist())}, "bias": int(bias)})
                for row, bias in zip(a, bias_q)]

    def unpack_scale(self, beat: int) -> tuple[list[int], int]:
        """(all max_bits a elements, bias_q) of a scale beat."""
        fields = self.scale.unpack_word(beat)
        bias = fields["bias"]
        return [fields[f"a.{i}"] for i in range(self.max_bits)], bias - (bias >> (self.bias_bits - 1) << self.bias_bits)


@dataclass(frozen=True, eq=False)
class FcLayer:
    """One compressed layer as the engine consumes it (shapes in the field comments).

    The XOR fields are `host.compress.xor.encode_slices` output for the tile-major planes; p and z are the
    BIM factors of the (rows, cols) mask's m_t x n_t tiles.
    """

    cols: int
    xor_x: np.ndarray            # (q * T_r * T_c * m_t, n_in) 0/1
    patch_counts: np.ndarray     # (q * T_r * T_c * m_t,)
    patch_positions: np.ndarray  # (sum of patch_counts,), ascending within a slice
    p: np.ndarray                # (T_r, T_c, m_t, r) bool
    z: np.ndarray                # (T_r, T_c, r, n_t) bool
    a: np.ndarray                # (rows, q) unsigned
    bias_q: np.ndarray           # (rows,)
    shift: int
    relu: bool

    @property
    def shape(self) -> tuple[int, int]:
        return int(np.shape(self.a)[0]), int(self.cols)

    @property
    def bits(self) -> int:
        return int(np.shape(self.a)[1])

    @property
    def layout(self) -> FcLayout:
        return FcLayout(int(np.shape(self.p)[2]), int(np.shape(self.z)[3]))

    @property
    def slices_per_plane(self) -> int:
        t_r, t_c = self.layout.grid(self.shape)
        return t_r * t_c * self.layout.m_t

    def mask(self) -> np.ndarray:
        """The (rows, cols) keep mask of the BIM factors."""
        return tiles_to_mask(self.p, self.z, self.shape)

    def planes(self, m: np.ndarray) -> np.ndarray:
        """The decoded (q, rows, cols) planes (pruned positions hold whatever the decoder gives)."""
        y = decode_slices(m, self.xor_x, self.patch_counts, self.patch_positions)
        y = y.reshape(self.bits, self.slices_per_plane, -1)
        return np.stack([self.layout.from_tile_major(plane, self.shape) for plane in y])

    def output(self, m: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The layer's int8 codes for activations `x`: `fc_fixed` on the decoded planes and the mask."""
        return fc_fixed(x, self.planes(m), self.mask(), self.a, self.bias_q, self.shift, self.relu)


def xor_targets(planes: np.ndarray, mask: np.ndarray, layout: FcLayout) -> tuple[np.ndarray, np.ndarray]:
    """`encode_slices` targets and care bits, (q * T_r * T_c * m_t, n_t) each, of (q, rows, cols) planes and a mask.

    Padding positions are not cared for: they meet zero activations or belong to rows that are dropped.
    """
    planes = np.asarray(planes)
    mask = np.asarray(mask, dtype=bool)
    if planes.ndim != 3 or planes.shape[1:] != mask.shape:
        raise ValueError(f"planes (q, rows, cols) and mask (rows, cols) disagree: {planes.shape} and {mask.shape}")
    targets = np.concatenate([layout.tile_major(plane.astype(np.uint8)) for plane in planes])
    care = np.tile(layout.tile_major(mask, fill=False), (planes.shape[0], 1))
    return targets, care


def _check_layer(fmt: FcStreamFormat, layer: FcLayer) -> None:
    rows, cols = layer.shape
    t_r, t_c = fmt.layout.grid((rows, cols))
    tiles = (t_r, t_c)
    if np.shape(layer.p) != (*tiles, fmt.m_t, fmt.r) or np.shape(layer.z) != (*tiles, fmt.r, fmt.n_t):
        raise ValueError(f"p and z must be {(*tiles, fmt.m_t, fmt.r)} and {(*tiles, fmt.r, fmt.n_t)} for a "
                         f"{(rows, cols)} layer, got {np.shape(layer.p)} and {np.shape(layer.z)}")
    slices = layer.bits * t_r * t_c * fmt.m_t
    if np.shape(layer.xor_x) != (slices, fmt.n_in) or np.shape(layer.patch_counts) != (slices,):
        raise ValueError(f"xor_x must be ({slices}, {fmt.n_in}) and patch_counts ({slices},) for q={layer.bits}, "
                         f"got {np.shape(layer.xor_x)} and {np.shape(layer.patch_counts)}")


def layer_streams(fmt: FcStreamFormat, layer: FcLayer, x: np.ndarray) -> dict[str, list[int]]:
    """Every input stream's beats for one layer and activation vector: cfg, x, scale, xor, bim."""
    rows, cols = layer.shape
    x = np.asarray(x)
    if x.shape != (cols,):
        raise ValueError(f"x must have shape ({cols},) for a layer of {cols} columns, got {x.shape}")
    cfg = fmt.pack_cfg(rows, cols, layer.bits, layer.shift, layer.relu)
    _check_layer(fmt, layer)
    q = layer.bits
    p = np.tile(np.asarray(layer.p, dtype=bool).reshape(-1, fmt.m_t, fmt.r), (q, 1, 1))
    z = np.tile(np.asarray(layer.z, dtype=bool).reshape(-1, fmt.r, fmt.n_t), (q, 1, 1))
    return {
        "cfg": [cfg],
        "x": fmt.pack_x(x),
        "scale": fmt.pack_scale(layer.a, layer.bias_q),
        "xor": slices_to_beats(layer.xor_x, layer.patch_counts, layer.patch_positions, fmt.max_patches,
                               n_out=fmt.n_t),
        "bim": tiles_to_beats(p, z),
    }


def output_beats(y: np.ndarray) -> list[int]:
    """The `o` beats of int8 output codes."""
    y = np.asarray(y)
    check_range("y", y, -(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1)
    return [int(v) & 0xFF for v in y]


def tile_major_mask_rows(layer: FcLayer) -> np.ndarray:
    """(T_r * T_c * m_t, n_t) bool: the mask rows the unpacker emits for one plane, padding included."""
    return boolean_product(layer.p, layer.z).reshape(-1, np.shape(layer.z)[3])


def fc_layer_cycles(engine: Mapping[str, Any], cols: int, rows: int, xor_beats: int, *, loaded: bool = False) -> int:
    """Full-rate cycles of one FC layer on `engine` (`FcEngineParams.describe()`, INFO's `engines.fc.params`):
    the load (x and scale side by side, max(cols, rows) beats), one XOR beat a cycle, the pipeline's drain
    (`latency` + 4; 0 from an INFO that predates it) and one output a cycle. Exact while no mask tile has more
    rows set than m_t (r <= m_t). `loaded`: the layer's input came in while the conv layer before it ran (in one
    RUN, the device streams an FC layer's input, cfg and weights behind a conv layer's output), so its cycles
    from that layer's end leave out the load."""
    return (0 if loaded else max(cols, rows)) + xor_beats + int(engine.get("latency", 0)) + 4 + rows
