"""The sparse-quantized fully connected layer as the accelerator computes it: the executable spec.

A layer maps int8 activation codes x (cols) to int8 codes y (rows). Its weights are binary-coded
(`hw.spec.xor`: w[r, c] = sum_i alpha[r, i] b_i[r, c], b_i in {-1, +1}, plane bit 1 = +1) and pruned by
a keep mask (`hw.spec.bim`). In fixed point alpha becomes the unsigned integer `a` (rows, q), the layer's
whole rescaling folded in, and the bias `bias_q` (rows) is in the same units:

    acc[r] = sum_i a[r, i] * sum_c mask[r, c] * (2 b_i[r, c] - 1) * x[c]
    y[r]   = clamp(round_shift(acc[r] + bias_q[r], shift), -2^(out_bits-1), 2^(out_bits-1) - 1)
    y[r]   = max(y[r], 0)                                         with ReLU

round_shift is round-half-up, `(v + 2^(s-1)) >> s`, the `hw.spec.arith` one the spectral spec uses too. Every
term is an integer, so the order the hardware sums them in does not matter.

The accelerator's layout. The hardware reads one mask row of a BIM tile (n_t bits) and one XOR slice
(n_out bits) per cycle and needs them to cover the same weights, so the layer is stored **tile-major**:
the matrix padded to whole m_t x n_t tiles, tiles in row-major order, rows of a tile in order
(`tile_major`), with n_t = n_out. Both the XOR planes and the BIM mask are of that padded tile-major
matrix; padding columns meet activations that are 0 and padding rows' outputs are dropped, so whatever
the padding bits hold never matters. With q planes the XOR stream is plane after plane (the XOR format's
order) and the mask stream is sent once per plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.spec.arith import round_shift, saturate
from hw.spec.bim import from_tiles, tile_grid, to_tiles
from hw.spec.params import check_int

#: Activation codes in and out are int8.
ACT_BITS = 8
#: The requantization shift is 0..MAX_SHIFT: what `fc_fixed` computes, the FC engine's cfg beat takes (where its
#: shift field is wide enough, `hw.spec.fc_stream.FcStreamFormat.max_shift`) and a model file may hold.
MAX_SHIFT = 62


@dataclass(frozen=True)
class FcLayout:
    """The tile shape the accelerator streams: m_t rows x n_t columns (n_t is also the XOR slice n_out)."""

    m_t: int
    n_t: int

    def __post_init__(self) -> None:
        for name in ("m_t", "n_t"):
            check_int(name, getattr(self, name), 1)

    def grid(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(T_r, T_c) tiles covering a (rows, cols) matrix."""
        return tile_grid(shape, self.m_t, self.n_t)

    def padded_cols(self, cols: int) -> int:
        """Activations the engine reads per input vector: cols rounded up to whole tiles (zeros after cols)."""
        return -(-cols // self.n_t) * self.n_t

    def tile_major(self, a: np.ndarray, fill=0) -> np.ndarray:
        """(rows, cols) -> (T_r * T_c * m_t, n_t): padded with `fill`, tile after tile, row after row."""
        return to_tiles(a, self.m_t, self.n_t, fill).reshape(-1, self.n_t)

    def row_of(self, shape: tuple[int, int]) -> np.ndarray:
        """For each row of the tile-major matrix, the original (padded) row it belongs to."""
        t_r, t_c = self.grid(shape)
        tile_row = np.arange(t_r).repeat(t_c * self.m_t).reshape(t_r, t_c, self.m_t)
        return (tile_row * self.m_t + np.arange(self.m_t)).reshape(-1)

    def col_tile_of(self, shape: tuple[int, int]) -> np.ndarray:
        """For each row of the tile-major matrix, the column tile (which n_t activations it meets)."""
        t_r, t_c = self.grid(shape)
        return np.broadcast_to(np.arange(t_c)[None, :, None], (t_r, t_c, self.m_t)).reshape(-1)

    def from_tile_major(self, t: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The inverse of `tile_major`: (T_r * T_c * m_t, n_t) -> the (rows, cols) matrix, padding cut off."""
        t_r, t_c = self.grid(shape)
        t = np.asarray(t)
        if t.shape != (t_r * t_c * self.m_t, self.n_t):
            raise ValueError(f"a tile-major {tuple(shape)} matrix has shape ({t_r * t_c * self.m_t}, {self.n_t}), "
                             f"got {t.shape}")
        return from_tiles(t.reshape(t_r, t_c, self.m_t, self.n_t), shape)


def fc_accumulate(x: np.ndarray, planes: np.ndarray, mask: np.ndarray, a: np.ndarray) -> np.ndarray:
    """acc (..., rows) int64: sum_i a[r, i] * sum_c mask[r, c] (2 b_i[r, c] - 1) x[c], exactly.

    x (..., cols) integers; planes (q, rows, cols) 0/1; mask (rows, cols) bool; a (rows, q) integers.
    """
    x = np.asarray(x)
    planes, mask, a = np.asarray(planes), np.asarray(mask, dtype=bool), np.asarray(a, dtype=np.int64)
    if x.dtype.kind not in "iu":
        raise ValueError(f"activations must be integers, got {x.dtype}")
    q, rows, cols = planes.shape
    if x.shape[-1] != cols or mask.shape != (rows, cols) or a.shape != (rows, q):
        raise ValueError(f"shapes disagree: x (..., {x.shape[-1]}), planes {planes.shape}, mask {mask.shape}, "
                         f"a {a.shape}; expected x (..., {cols}), mask ({rows}, {cols}), a ({rows}, {q})")
    signs = np.where(planes.astype(bool), 1, -1) * mask  # (q, rows, cols) in {-1, 0, +1}
    # float64 matmul is exact: |x| <= 128 and cols < 2^40 keep every partial sum far below 2^53.
    per_plane = np.einsum("...c,qrc->...qr", np.asarray(x, dtype=np.float64), signs.astype(np.float64))
    return (np.rint(per_plane).astype(np.int64) * a.T).sum(axis=-2)


def fc_fixed(x: np.ndarray, planes: np.ndarray, mask: np.ndarray, a: np.ndarray, bias_q: np.ndarray, shift: int,
             relu: bool, out_bits: int = ACT_BITS) -> np.ndarray:
    """The layer's int64 output codes (..., rows): requantized `fc_accumulate` plus bias, optional ReLU."""
    if not 0 <= shift <= MAX_SHIFT:
        raise ValueError(f"shift must be in 0..{MAX_SHIFT}, got {shift}")
    acc = fc_accumulate(x, planes, mask, a) + np.asarray(bias_q, dtype=np.int64)
    y = saturate(round_shift(acc, shift), out_bits)
    return np.maximum(y, 0) if relu else y
