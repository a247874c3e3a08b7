"""Golden model of SPEC2 sparse spectral convolution (Niu et al., HiPC 2019): the one home of its math.

The operator. A layer maps x (C_in, H, W) to y (C_out, H_out, W_out) by overlap-and-add (OaA) with tile
size L, FFT size N (a power of two, N >= L + K - 1) and the spatial kernel size K it was made for:

1. Tiles: x is cut into T_r x T_c = ceil(H / L) x ceil(W / L) tiles of L x L starting at x[0, 0]; tile (r, c)
   holds x[:, r L + a, c L + b] for a, b < L (zero past the map's edge) and is zero-padded to N x N.
2. Spectra: each tile's 2-D DFT, kept as the rfft2 half N x (N/2 + 1) (rows k1 = 0..N-1, columns
   k2 = 0..N/2); bin (k1, k2) has linear index k1 (N/2 + 1) + k2.
3. Per output channel o: Y[o] = sum over i of X[i] * W[o, i], bin by bin, W the layer's spectral weights.
4. Each Y[o] back through the inverse 2-D DFT (irfft2, N x N real), added into a canvas of
   (T_r L + N - L) x (T_c L + N - L) at (r L, c L): neighbouring tiles overlap by N - L.
5. y = canvas[o, s + r, s + c] + bias[o] for r < H_out, c < W_out; "same": s = K - 1 - (K - 1) // 2 and
   H_out = H; "valid": s = K - 1 and H_out = H - K + 1. Then ReLU if the layer has it.

With W[o, i] = rfft2 of w[o, i] flipped in both axes and zero-padded to N x N (`kernel_spectrum`) this is
exactly torch.nn.Conv2d's cross-correlation y[o, r, c] = sum_{i,u,v} w[o, i, u, v] x[i, r + u - p, c + v - p]
(p = (K - 1) // 2 for "same", the extra pad of an even K at the bottom/right as torch does; p = 0 for
"valid"). Once W is pruned or trained freely it is no longer a K x K kernel: the layer *is* steps 1-5
(`spectral_conv_float`), and golden, hardware and training all compute that.

Sparse spectral weights. A real kernel's spectrum is Hermitian, W[k1, k2] = conj W[-k1, -k2] (mod N), so
the half holds it all, with one redundancy: columns 0 and N/2 pair with themselves (k1 <-> N - k1). Only
*canonical* bins are stored: columns 1..N/2-1 whole, and rows 0..N/2 of columns 0 and N/2 (34 bins at
N = 8); the other bins of those two columns are the conjugates of their partners. The four self-conjugate
bins (0 or N/2, 0 or N/2) must be real. A kernel is a list of (canonical index, complex value), indices
ascending; the stored values are int16 re/im times one float `weight_scale` per layer.

Fixed point (`Spec2Fixed`; every width a parameter, defaults in brackets). Rounding is round-half-up by
add-then-arithmetic-shift everywhere: rs(v, s) = (v + 2^(s-1)) >> s, rs(v, 0) = v (`round_shift`).

* Activations in: signed act_bits [8], entering the FFT shifted left by in_shift guard bits [3 at N = 8:
  the most an unshifted forward FFT can take without overflow].
* FFT data path: signed data_bits [18, the ECP5 multiplier and block-RAM width] per component. Twiddles
  W_N^k = exp(-2 pi i k / N), k < N/2, as signed twiddle_bits [16] Q1.f, f = twiddle_bits - 2, per component:
  floor(cos * 2^f + 1/2), floor(-sin * 2^f + 1/2) (`twiddles`); 1 and -i are exact, so trivial twiddles need no
  special case. The inverse uses (wr, -wi).
* 1-D FFT (`fft_fixed`): radix-2 decimation in time; inputs in bit-reversed order, outputs natural;
  stages st = 0..log2 N - 1 with span m = 2^(st+1): for each group g and j < m/2, a = x[g m + j],
  b = x[g m + j + m/2], w = W_N^(j N/m), t = (rs(wr br - wi bi, f), rs(wr bi + wi br, f)) (one rounding per
  component of the exact complex product), x[g m + j] = rs(a + t, s_st), x[g m + j + m/2] = rs(a - t, s_st).
* Forward 2-D FFT (`fft2_fixed`): row FFTs (along the last axis, imaginary input 0), keep columns 0..N/2,
  then column FFTs of those N/2 + 1 columns. Stage shifts s_st (0 or 1): the log2 N row stages then the
  log2 N column stages (`Spec2Fixed.forward_shifts`); by default a stage shifts only when a worst-case bound
  (`fft_bounds`) says it could overflow otherwise (none at N = 8). The result is DFT(x) 2^-E,
  E = sum(shifts) - in_shift (`forward_exponent`, -3 by default).
* Spectral weights: signed weight_bits [16] re/im (int16 in the file). MAC (`spectral_mac`): per tile and
  output channel, acc[k] = sum_i X_i[k] W[o, i][k] over the canonical bins, exact: no rounding, and
  acc_bits = data_bits + weight_bits + 1 + ceil(log2 max_c_in) [45] cannot overflow, so the order of the
  products is free.
* IFFT input (`ifft_input`): Y = clamp(rs(acc, mac_shift)) to signed data_bits - 1 [17] per component, then
  the non-canonical bins of columns 0 and N/2 are filled with the conjugates of their partners (a negated
  -2^16 is 2^16, which the 18-bit path holds).
* Inverse 2-D FFT (`ifft2_fixed`): column IFFTs of the N/2 + 1 columns, then each row is completed to N
  bins by Z[k2] = conj Z[N - k2] for k2 > N/2, run through a complex IFFT, and its real part kept. Every
  inverse stage shifts by 1: the IDFT's 1/N^2 exactly, and with the clamped input nothing can overflow.
* Overlap-add: exact integer sums, ola_bits = data_bits + ceil(log2 ceil(N/L)^2) [20].
* Output (`requantize`): y = clamp(rs(v * out_mult + bias_q[o], out_shift)) to signed out_bits [8], lower
  bound 0 with ReLU; out_mult unsigned, below 2^mult_bits [16]. Saturation happens here and at the IFFT
  input only; everywhere else the widths are proven sufficient.

Scales: x = x_q in_scale; W = (re + i im) weight_scale; a canvas value v means v 2^(mac_shift + E) in_scale
weight_scale (`canvas_scale`); y = y_q out_scale. `quant_params` derives out_mult, out_shift and bias_q from
them; the integers in `QuantParams` are what the hardware uses.

Bank-conflict-free order (`Schedule`): the input spectrum sits in B banks, bin index q in bank q mod B. Each
kernel's entries are cut into groups of P lanes with distinct banks; a group's slots are sorted by bank,
and a short group is padded with zero entries on the lowest banks it leaves free (index = that bank
number), so with P = B lane j always reads bank j. The stream runs kernel (o, i) row-major, group by group
(`stream_entries`). The file (`save_spectral` / `load_spectral`; its arrays without the file: `layer_fields` /
`layer_from_fields`) is described in docs/formats.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .npzfile import load_checked

FORMAT_VERSION = 1
PADDINGS = ("same", "valid")
# Largest FFT size: linear indices must fit the file's uint16 field.
MAX_N = 256


class SpectralFormatError(ValueError):
    """A malformed or inconsistent sparse spectral layer (file or object); the message names the field."""


def _check_int(name: str, value: Any, low: int, high: int | None = None, what: str = "") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {allowed}{what}, got {value}")
    return value


def _log2(n: int) -> int:
    return n.bit_length() - 1


# --- geometry --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OaaParams:
    """Overlap-and-add geometry: FFT size n (power of two, 4..256), kernel size k, tile size l, padding.

    n >= l + k - 1 so that an unpruned kernel's tile convolution does not wrap around.
    """

    n: int = 8
    k: int = 3
    l: int = 6  # noqa: E741 (the paper's name)
    padding: str = "same"

    def __post_init__(self) -> None:
        _check_int("n", self.n, 4, MAX_N)
        if self.n & (self.n - 1):
            raise ValueError(f"n must be a power of two, got {self.n}")
        _check_int("k", self.k, 1)
        _check_int("l", self.l, 1)
        if self.n < self.l + self.k - 1:
            raise ValueError(f"n must be >= l + k - 1 = {self.l + self.k - 1}, got {self.n}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")

    @property
    def half_cols(self) -> int:
        return self.n // 2 + 1

    @property
    def bins(self) -> int:
        """Bins of the rfft2 half: n (n/2 + 1)."""
        return self.n * self.half_cols

    @property
    def crop(self) -> int:
        """Canvas row/column of output (0, 0)."""
        return self.k - 1 - (self.k - 1) // 2 if self.padding == "same" else self.k - 1

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an H x W input map."""
        if self.padding == "same":
            return h, w
        if h < self.k or w < self.k:
            raise ValueError(f"'valid' padding needs a map of at least {self.k} x {self.k}, got {h} x {w}")
        return h - self.k + 1, w - self.k + 1

    def tiles(self, h: int, w: int) -> tuple[int, int]:
        """Tile rows and columns covering an H x W map."""
        return -(-h // self.l), -(-w // self.l)


def canonical_mask(n: int) -> np.ndarray:
    """(n, n/2 + 1) bool: the bins a sparse kernel may store (columns 0 and n/2 only rows 0..n/2)."""
    mask = np.ones((n, n // 2 + 1), dtype=bool)
    mask[n // 2 + 1:, [0, n // 2]] = False
    return mask


def self_conjugate_mask(n: int) -> np.ndarray:
    """(n, n/2 + 1) bool: the four bins equal to their own conjugate partner (values there must be real)."""
    mask = np.zeros((n, n // 2 + 1), dtype=bool)
    mask[np.ix_([0, n // 2], [0, n // 2])] = True
    return mask


def complete_half(half: np.ndarray) -> np.ndarray:
    """Copy of a (..., n, n/2 + 1) half with the non-canonical bins of columns 0 and n/2 set to their partners'
    conjugates, so that it is the rfft2 half of a real array (given real self-conjugate bins)."""
    out = np.array(half, dtype=np.complex128)
    n = out.shape[-2]
    rows = np.arange(n // 2 + 1, n)
    for col in (0, n // 2):
        out[..., rows, col] = np.conj(out[..., n - rows, col])
    return out


def half_to_full(half: np.ndarray) -> np.ndarray:
    """(..., n, n/2 + 1) canonical half -> the full Hermitian (..., n, n) spectrum."""
    h = complete_half(half)
    n = h.shape[-2]
    full = np.empty((*h.shape[:-1], n), dtype=np.complex128)
    full[..., : n // 2 + 1] = h
    neg = (-np.arange(n)) % n
    full[..., n // 2 + 1:] = np.conj(h[..., neg, :][..., n // 2 - 1:0:-1])
    return full


def kernel_spectrum(w: np.ndarray, n: int) -> np.ndarray:
    """(C_out, C_in, K, K) spatial kernels -> (C_out, C_in, n, n/2 + 1) complex spectral weights of the
    cross-correlation: rfft2 of each kernel flipped in both axes, zero-padded to n x n."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"kernels must have shape (C_out, C_in, K, K), got {w.shape}")
    if w.shape[2] > n:
        raise ValueError(f"kernel size {w.shape[2]} exceeds n={n}")
    return np.fft.rfft2(w[..., ::-1, ::-1], s=(n, n))


# --- the float operator ----------------------------------------------------------------------------------


def tile_input(x: np.ndarray, oaa: OaaParams) -> np.ndarray:
    """(..., C, H, W) -> (..., C, T_r, T_c, n, n) zero-padded L x L tiles (dtype kept)."""
    x = np.asarray(x)
    *lead, c, h, w = x.shape
    tr, tc = oaa.tiles(h, w)
    padded = np.zeros((*lead, c, tr * oaa.l, tc * oaa.l), dtype=x.dtype)
    padded[..., :h, :w] = x
    tiles = padded.reshape(*lead, c, tr, oaa.l, tc, oaa.l).swapaxes(-3, -2)
    out = np.zeros((*lead, c, tr, tc, oaa.n, oaa.n), dtype=x.dtype)
    out[..., : oaa.l, : oaa.l] = tiles
    return out


def overlap_add(z: np.ndarray, l: int) -> np.ndarray:  # noqa: E741
    """(..., T_r, T_c, n, n) tile outputs -> (..., T_r l + n - l, T_c l + n - l) canvas, tile (r, c) at (r l, c l)."""
    *lead, tr, tc, n, _ = z.shape
    a = -(-n // l)  # tile outputs span a x a blocks of l x l
    zp = np.zeros((*lead, tr, tc, a * l, a * l), dtype=z.dtype)
    zp[..., :n, :n] = z
    blocks = zp.reshape(*lead, tr, tc, a, l, a, l)
    out = np.zeros((*lead, tr + a - 1, l, tc + a - 1, l), dtype=z.dtype)
    for i in range(a):
        for j in range(a):
            out[..., i:i + tr, :, j:j + tc, :] += blocks[..., :, :, i, :, j, :].swapaxes(-3, -2)
    out = out.reshape(*lead, (tr + a - 1) * l, (tc + a - 1) * l)
    return out[..., : tr * l + n - l, : tc * l + n - l]


def crop(canvas: np.ndarray, oaa: OaaParams, h: int, w: int) -> np.ndarray:
    """The (..., H_out, W_out) output window of a canvas made from an H x W map."""
    h_out, w_out = oaa.output_shape(h, w)
    s = oaa.crop
    return canvas[..., s:s + h_out, s:s + w_out]


def _channel_mix(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Y[..., o, r, c, k] = sum_i weights[o, i, k] x[..., i, r, c, k] (k = the trailing bin axes), by matmul."""
    c_out, c_in = weights.shape[:2]
    bin_shape = weights.shape[2:]
    lead = x.shape[: x.ndim - 3 - len(bin_shape)]
    tiles = x.shape[len(lead) + 1: len(lead) + 3]
    nb, bt = math.prod(bin_shape), math.prod(lead) * math.prod(tiles)
    wm = weights.reshape(c_out, c_in, nb).transpose(2, 0, 1)
    xm = x.reshape(-1, c_in, math.prod(tiles), nb).transpose(3, 1, 0, 2).reshape(nb, c_in, bt)
    y = (wm @ xm).reshape(nb, c_out, -1, math.prod(tiles)).transpose(2, 1, 3, 0)
    return y.reshape(*lead, c_out, *tiles, *bin_shape)


def oaa_conv_float(x: np.ndarray, half: np.ndarray, oaa: OaaParams) -> np.ndarray:
    """Steps 1-5 without bias: (..., C_in, H, W) float -> (..., C_out, H_out, W_out) float64, with spectral
    weights `half` (C_out, C_in, n, n/2 + 1), which must be the rfft2 half of real arrays (`complete_half`)."""
    x = np.asarray(x, dtype=np.float64)
    if half.shape[1:] != (x.shape[-3], oaa.n, oaa.half_cols):
        raise ValueError(f"spectral weights of shape {half.shape} do not fit C_in={x.shape[-3]}, n={oaa.n}")
    h, w = x.shape[-2:]
    spectra = np.fft.rfft2(tile_input(x, oaa))
    z = np.fft.irfft2(_channel_mix(half, spectra), s=(oaa.n, oaa.n))
    return crop(overlap_add(z, oaa.l), oaa, h, w)


def conv2d_float(x: np.ndarray, w: np.ndarray, oaa: OaaParams) -> np.ndarray:
    """Cross-correlation of x (..., C_in, H, W) with spatial kernels w (C_out, C_in, K, K) by OaA (no bias)."""
    if np.shape(w)[2] != oaa.k:
        raise ValueError(f"kernels are {np.shape(w)[2]} x {np.shape(w)[3]}, the geometry says k={oaa.k}")
    return oaa_conv_float(x, kernel_spectrum(w, oaa.n), oaa)


# --- the sparse layer ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Schedule:
    """Bank-conflict-free order: p lanes, b banks; groups[o, i] groups for kernel (o, i); order holds
    sum(groups) * p slots, kernel by kernel (row-major), each the position of an entry within its kernel's
    list or -1 for a zero padding entry."""

    p: int
    b: int
    groups: np.ndarray
    order: np.ndarray


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Per-layer fixed-point parameters: the integers drive the hardware, the scales say what they mean."""

    in_scale: float
    out_scale: float
    mac_shift: int
    out_mult: int
    out_shift: int
    bias_q: np.ndarray


@dataclass(frozen=True, eq=False)
class SpectralLayer:
    """A sparse spectral conv layer: counts[o, i] entries per kernel, kernels row-major; per entry its
    canonical linear index (ascending within a kernel) and int16 re, im; value = (re + i im) weight_scale."""

    oaa: OaaParams
    c_out: int
    c_in: int
    counts: np.ndarray
    index: np.ndarray
    re: np.ndarray
    im: np.ndarray
    weight_scale: float
    bias: np.ndarray
    relu: bool = False
    schedule: Schedule | None = None
    quant: QuantParams | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def nnz(self) -> int:
        return int(self.index.size)

    def kernel_of_entry(self) -> np.ndarray:
        """Flat kernel number o * C_in + i of every entry."""
        return np.repeat(np.arange(self.c_out * self.c_in), self.counts.reshape(-1))

    def int_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense int64 (C_out, C_in, n, n/2 + 1) re and im, zero off the stored entries."""
        shape = (self.c_out * self.c_in, self.oaa.bins)
        re, im = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
        kernel = self.kernel_of_entry()
        re[kernel, self.index] = self.re
        im[kernel, self.index] = self.im
        full = (self.c_out, self.c_in, self.oaa.n, self.oaa.half_cols)
        return re.reshape(full), im.reshape(full)

    def half_spectrum(self) -> np.ndarray:
        """The float spectral weights as a (C_out, C_in, n, n/2 + 1) rfft2 half (non-canonical bins filled)."""
        re, im = self.int_weights()
        return complete_half((re + 1j * im) * self.weight_scale)

    def density(self) -> float:
        """Stored entries over canonical bins (1 - sparsity)."""
        return self.nnz / (self.c_out * self.c_in * int(canonical_mask(self.oaa.n).sum()))


def _bad(field: str, message: str) -> SpectralFormatError:
    return SpectralFormatError(f"field '{field}': {message}")


def _array(field: str, value: Any, dtype: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise _bad(field, f"expected {np.dtype(dtype)} of shape {shape}, got {got}")


def _kernel_name(kernel: int, c_in: int) -> str:
    o, i = divmod(int(kernel), c_in)
    return f"kernel (o={o}, i={i})"


def _validate(layer: SpectralLayer) -> None:
    if not isinstance(layer.oaa, OaaParams):
        raise _bad("oaa", f"must be OaaParams, got {type(layer.oaa).__name__}")
    for name in ("c_out", "c_in"):
        try:
            _check_int(name, getattr(layer, name), 1)
        except ValueError as error:
            raise _bad(name, str(error)) from None
    n, c_out, c_in = layer.oaa.n, layer.c_out, layer.c_in
    canonical = canonical_mask(n).reshape(-1)
    _array("counts", layer.counts, np.int64, (c_out, c_in))
    if (layer.counts < 0).any() or (layer.counts > canonical.sum()).any():
        raise _bad("counts", f"entries per kernel must be in 0..{int(canonical.sum())} (canonical bins at n={n})")
    nnz = int(layer.counts.sum())
    _array("index", layer.index, np.int64, (nnz,))
    _array("re", layer.re, np.int16, (nnz,))
    _array("im", layer.im, np.int16, (nnz,))
    index = layer.index
    if nnz:
        if index.min() < 0 or index.max() >= canonical.size:
            raise _bad("index", f"index outside 0..{canonical.size - 1} (n={n})")
        if not canonical[index].all():
            q = int(index[~canonical[index]][0])
            raise _bad("index", f"bin {q} = ({q // layer.oaa.half_cols}, {q % layer.oaa.half_cols}) is not "
                                "canonical (columns 0 and n/2 store rows 0..n/2 only)")
        flat = layer.counts.reshape(-1)
        starts = np.zeros(nnz, dtype=bool)
        starts[(np.cumsum(flat) - flat)[flat > 0]] = True
        if (np.diff(index)[~starts[1:]] <= 0).any():
            raise _bad("index", "indices within a kernel must be strictly ascending")
        zero = (layer.re == 0) & (layer.im == 0)
        if zero.any():
            raise _bad("re", f"entry {int(np.argmax(zero))} is zero (a pruned bin is not stored)")
        if (layer.im[self_conjugate_mask(n).reshape(-1)[index]] != 0).any():
            raise _bad("im", "self-conjugate bins (rows and columns 0 and n/2) must be real")
    scale = layer.weight_scale
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (float, np.floating)) or not (
            math.isfinite(scale) and scale > 0):
        raise _bad("weight_scale", f"must be a finite float > 0, got {scale!r}")
    _array("bias", layer.bias, np.float32, (c_out,))
    if not np.isfinite(layer.bias).all():
        raise _bad("bias", "has non-finite values")
    if not isinstance(layer.relu, (bool, np.bool_)):
        raise _bad("relu", f"must be a bool, got {layer.relu!r}")
    if layer.schedule is not None:
        check_schedule(layer.schedule, layer.counts, layer.index, n)
    if layer.quant is not None:
        _validate_quant(layer.quant, c_out)


def _validate_quant(q: QuantParams, c_out: int) -> None:
    if not isinstance(q, QuantParams):
        raise _bad("quant", f"must be QuantParams, got {type(q).__name__}")
    for name in ("in_scale", "out_scale"):
        v = getattr(q, name)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (float, np.floating)) or not (
                math.isfinite(v) and v > 0):
            raise _bad(name, f"must be a finite float > 0, got {v!r}")
    for name, low, high in (("mac_shift", 0, 62), ("out_mult", 1, 2**31 - 1), ("out_shift", 0, 62)):
        try:
            _check_int(name, getattr(q, name), low, high)
        except ValueError as error:
            raise _bad(name, str(error)) from None
    _array("bias_q", q.bias_q, np.int64, (c_out,))


def _group_layout(sch: Schedule, counts: np.ndarray, index: np.ndarray, c_in: int) -> dict[str, np.ndarray]:
    """Per slot: entry number (-1 padding), bank and kernel, checking the schedule's rules on the way."""
    p, b = sch.p, sch.b
    flat_counts = counts.reshape(-1)
    n_groups = int(sch.groups.sum())
    slots = sch.order.reshape(n_groups, p)
    kernel = np.repeat(np.arange(flat_counts.size), sch.groups.reshape(-1))
    real = slots >= 0
    if (slots < -1).any() or (slots >= flat_counts[kernel][:, None]).any():
        g = int(np.argmax(((slots < -1) | (slots >= flat_counts[kernel][:, None])).any(axis=1)))
        raise _bad("order", f"group {g} of {_kernel_name(kernel[g], c_in)}: position outside "
                            f"-1..{int(flat_counts[kernel[g]]) - 1}")
    if n_groups and not real.any(axis=1).all():
        g = int(np.argmin(real.any(axis=1)))
        raise _bad("order", f"group {g} of {_kernel_name(kernel[g], c_in)} holds only padding")
    starts = np.cumsum(flat_counts) - flat_counts
    entry = np.where(real, starts[kernel][:, None] + slots, -1)
    seen = np.bincount(entry[real], minlength=index.size)
    if (seen != 1).any():
        e = int(np.argmax(seen != 1))
        k = int(np.searchsorted(np.cumsum(flat_counts), e, side="right"))
        raise _bad("order", f"entry {e - int(starts[k])} of {_kernel_name(k, c_in)} appears {int(seen[e])} times "
                            "(every entry exactly once)")
    banks = np.where(real, index[np.maximum(entry, 0)] % b, b)
    ordered = np.sort(np.where(real, banks, b + np.arange(p)), axis=1)
    if (np.diff(ordered, axis=1) == 0).any():
        g = int(np.argmax((np.diff(ordered, axis=1) == 0).any(axis=1)))
        raise _bad("order", f"group {g} of {_kernel_name(kernel[g], c_in)}: two entries in one bank")
    rows = np.arange(n_groups)[:, None]
    used = np.zeros((n_groups, b), dtype=bool)
    used[np.broadcast_to(rows, banks.shape)[real], banks[real]] = True
    pad = ~used & (np.cumsum(~used, axis=1) <= (p - real.sum(axis=1))[:, None])
    expected = np.sort(np.where(used | pad, np.arange(b), b), axis=1)[:, :p]
    expected_pad = pad[rows, expected]
    wrong = (real == expected_pad) | (real & (banks != expected))
    if wrong.any():
        g = int(np.argmax(wrong.any(axis=1)))
        raise _bad("order", f"group {g} of {_kernel_name(kernel[g], c_in)}: slots must run in ascending bank "
                            "order with padding on the lowest free banks")
    return {"entry": entry.reshape(-1), "bank": expected.reshape(-1), "kernel": np.repeat(kernel, p)}


def check_schedule(sch: Schedule, counts: np.ndarray, index: np.ndarray, n: int) -> None:
    """Raise SpectralFormatError (naming the field) unless `sch` is a conflict-free order of these entries."""
    if not isinstance(sch, Schedule):
        raise _bad("schedule", f"must be Schedule, got {type(sch).__name__}")
    bins = n * (n // 2 + 1)
    try:
        _check_int("p", sch.p, 1)
        _check_int("b", sch.b, sch.p, bins, what=f" (at least p={sch.p}, at most the {bins} bins)")
    except ValueError as error:
        raise _bad(str(error).split(" ", 1)[0], str(error)) from None
    _array("groups", sch.groups, np.int64, counts.shape)
    if (sch.groups < 0).any():
        raise _bad("groups", "negative group count")
    _array("order", sch.order, np.int64, (int(sch.groups.sum()) * sch.p,))
    _group_layout(sch, counts, index, counts.shape[1])


def stream_entries(layer: SpectralLayer) -> dict[str, np.ndarray]:
    """The kernel stream slot by slot (P slots a cycle): out, in (channels), index, re, im (int64), valid.

    Padding slots carry index = their bank and value 0."""
    sch = layer.schedule
    if sch is None:
        raise ValueError("the layer has no schedule")
    lay = _group_layout(sch, layer.counts, layer.index, layer.c_in)
    valid = lay["entry"] >= 0
    e = np.maximum(lay["entry"], 0)
    o, i = np.divmod(lay["kernel"], layer.c_in)
    return {"out": o, "in": i, "index": np.where(valid, layer.index[e], lay["bank"]),
            "re": np.where(valid, layer.re[e].astype(np.int64), 0),
            "im": np.where(valid, layer.im[e].astype(np.int64), 0), "valid": valid}


def spectral_conv_float(x: np.ndarray, layer: SpectralLayer) -> np.ndarray:
    """The layer's operator in float64: (..., C_in, H, W) -> (..., C_out, H_out, W_out), bias and ReLU included."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 3 or x.shape[-3] != layer.c_in:
        raise ValueError(f"input must have shape (..., C_in={layer.c_in}, H, W), got {x.shape}")
    y = oaa_conv_float(x, layer.half_spectrum(), layer.oaa) + layer.bias.astype(np.float64)[:, None, None]
    return np.maximum(y, 0.0) if layer.relu else y


# --- fixed point -----------------------------------------------------------------------------------------


def round_shift(v: np.ndarray, s: int) -> np.ndarray:
    """Round-half-up right shift of integers: (v + 2^(s-1)) >> s, v itself for s = 0."""
    v = np.asarray(v, dtype=np.int64)
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def _clamp(v: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def twiddles(n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward twiddles W_n^k = exp(-2 pi i k / n), k < n/2, as int64 (re, im) in Q1.(bits - 2), round half up."""
    k = np.arange(n // 2)
    scale = float(1 << (bits - 2))
    return (np.floor(np.cos(2 * np.pi * k / n) * scale + 0.5).astype(np.int64),
            np.floor(-np.sin(2 * np.pi * k / n) * scale + 0.5).astype(np.int64))


def bit_reverse(n: int) -> np.ndarray:
    """The bit-reversal permutation of 0..n-1 (n a power of two)."""
    bits = _log2(n)
    idx = np.arange(n)
    out = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        out |= ((idx >> b) & 1) << (bits - 1 - b)
    return out


@dataclass(frozen=True)
class Spec2Fixed:
    """Fixed-point widths of the SPEC2 datapath (all signed two's complement but out_mult).

    act_bits: input activations. data_bits: FFT/IFFT data per component. twiddle_bits: twiddles, Q1.(bits-2).
    weight_bits: spectral weights per component (at most 16: int16 in the file). out_bits: outputs.
    mult_bits: the unsigned requantization multiplier. max_c_in: input channels the accumulator is sized for.
    in_shift: left shift of the activations into the FFT data path (guard bits for precision).
    fwd_shifts: per forward stage 0 or 1, row stages then column stages (2 log2 n).
    None for either: in_shift as large as an unshifted forward FFT allows, then stages shift only where the
    worst-case bound needs it. The inverse shifts by 1 at every stage.
    """

    act_bits: int = 8
    data_bits: int = 18
    twiddle_bits: int = 16
    weight_bits: int = 16
    out_bits: int = 8
    mult_bits: int = 16
    max_c_in: int = 1024
    in_shift: int | None = None
    fwd_shifts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_int("act_bits", self.act_bits, 2, 16)
        _check_int("data_bits", self.data_bits, self.act_bits + 1, 30,
                   what=f" (more than act_bits={self.act_bits})")
        _check_int("twiddle_bits", self.twiddle_bits, 4, 30)
        _check_int("weight_bits", self.weight_bits, 2, 16)
        _check_int("out_bits", self.out_bits, 2, 16)
        _check_int("mult_bits", self.mult_bits, 1, 31)
        _check_int("max_c_in", self.max_c_in, 1, 1 << 20)
        if self.acc_bits > 53:
            raise ValueError(f"max_c_in must keep acc_bits <= 53 (exact in the model), got acc_bits={self.acc_bits}")
        if self.in_shift is not None:
            _check_int("in_shift", self.in_shift, 0, self.data_bits - self.act_bits)
        if self.fwd_shifts is not None:
            if not isinstance(self.fwd_shifts, tuple) or any(
                    isinstance(s, bool) or s not in (0, 1) for s in self.fwd_shifts):
                raise ValueError(f"fwd_shifts must be a tuple of 0s and 1s, got {self.fwd_shifts!r}")

    @property
    def acc_bits(self) -> int:
        """Accumulator width: no sum over max_c_in channels of complex products can overflow it."""
        return self.data_bits + self.weight_bits + 1 + (self.max_c_in - 1).bit_length()

    @property
    def ifft_in_bits(self) -> int:
        return self.data_bits - 1

    def ola_bits(self, oaa: OaaParams) -> int:
        """Overlap-add width: up to ceil(n/l)^2 tile outputs meet at a canvas position."""
        a = -(-oaa.n // oaa.l)
        return self.data_bits + (a * a - 1).bit_length()

    def input_shift(self, n: int) -> int:
        """Left shift of the activations into the forward FFT for size n."""
        return _forward_plan(self, n)[0]

    def forward_shifts(self, n: int) -> tuple[int, ...]:
        """The forward stage shifts for size n; ValueError if the plan could overflow."""
        return _forward_plan(self, n)[1]

    def forward_exponent(self, n: int) -> int:
        """sum(forward_shifts) - input_shift: the forward FFT computes DFT(x) 2^-exponent."""
        g, shifts = _forward_plan(self, n)
        return sum(shifts) - g

    def inverse_shifts(self, n: int) -> tuple[int, ...]:
        return (1,) * (2 * _log2(n))


@functools.lru_cache(maxsize=64)
def _forward_plan(spec: Spec2Fixed, n: int) -> tuple[int, tuple[int, ...]]:
    stages = 2 * _log2(n)
    top = (1 << (spec.data_bits - 1)) - 1

    def peak(g: int, shifts: tuple[int, ...]) -> float:
        return fft_bounds(shifts, float(1 << (spec.act_bits - 1 + g)), spec.twiddle_bits)[0]

    def greedy(g: int) -> tuple[int, ...]:
        shifts, m = [], float(1 << (spec.act_bits - 1 + g))
        for _ in range(stages):
            s = int(_stage_bounds(m, 0, 0.0, spec.twiddle_bits)[0] > top)
            shifts.append(s)
            m = _stage_bounds(m, s, 0.0, spec.twiddle_bits)[0]
        return tuple(shifts)

    if spec.fwd_shifts is not None and len(spec.fwd_shifts) != stages:
        raise ValueError(f"fwd_shifts must have {stages} entries for n={n}, got {len(spec.fwd_shifts)}")
    base = spec.fwd_shifts if spec.fwd_shifts is not None else (0,) * stages
    if spec.in_shift is not None:
        g = spec.in_shift
    else:
        g = 0
        while g < spec.data_bits - spec.act_bits and peak(g + 1, base) <= top:
            g += 1
    shifts = spec.fwd_shifts if spec.fwd_shifts is not None else greedy(g)
    if (bound := peak(g, shifts)) > top:
        raise ValueError(f"fwd_shifts {shifts} with in_shift={g} can overflow {spec.data_bits}-bit data "
                         f"(bound {bound:.0f})")
    return g, shifts


def _stage_bounds(m: float, s: int, e: float, twiddle_bits: int) -> tuple[float, float]:
    """One butterfly stage: bounds on |value| and on |error vs exact twiddles and no rounding|."""
    half = math.sqrt(0.5)  # a complex number rounded per component moves by at most this
    delta = half * 2.0 ** -(twiddle_bits - 2)  # twiddle quantization, |w_q - w|
    extra = half if s else 0.0
    m_next = (2 * m * (1 + delta) + half) / 2**s + extra
    e_next = (e * (2 + delta) + delta * m + half) / 2**s + extra
    return m_next, e_next


def fft_bounds(shifts: tuple[int, ...], in_max: float, twiddle_bits: int) -> tuple[float, float]:
    """Worst-case (peak magnitude, error magnitude) over stages `shifts` for inputs of magnitude <= in_max,
    the error against the exact transform scaled by 2^-sum(shifts); the peak bounds every stage."""
    m, e, peak = float(in_max), 0.0, float(in_max)
    for s in shifts:
        m, e = _stage_bounds(m, s, e, twiddle_bits)
        peak = max(peak, m)
    return peak, e


def fft_fixed(re: np.ndarray, im: np.ndarray, shifts: tuple[int, ...], spec: Spec2Fixed,
              inverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Radix-2 DIT FFT along the last axis (n = 2^len(shifts)) of int64 (re, im); see the module docstring."""
    re, im = np.asarray(re, dtype=np.int64), np.asarray(im, dtype=np.int64)
    n = re.shape[-1]
    if n != 1 << len(shifts):
        raise ValueError(f"{len(shifts)} stage shifts for an FFT of size {n}")
    perm = bit_reverse(n)
    re, im = re[..., perm], im[..., perm]
    wr, wi = twiddles(n, spec.twiddle_bits)
    if inverse:
        wi = -wi
    frac, lead = spec.twiddle_bits - 2, re.shape[:-1]
    lo, hi = -(1 << (spec.data_bits - 1)), (1 << (spec.data_bits - 1)) - 1
    for st, s in enumerate(shifts):
        half = 1 << st
        k = np.arange(half) * (n // (2 * half))
        r = re.reshape(*lead, n // (2 * half), 2, half)
        i = im.reshape(*lead, n // (2 * half), 2, half)
        ar, ai, br, bi = r[..., 0, :], i[..., 0, :], r[..., 1, :], i[..., 1, :]
        tr = round_shift(wr[k] * br - wi[k] * bi, frac)
        ti = round_shift(wr[k] * bi + wi[k] * br, frac)
        re = np.stack([round_shift(ar + tr, s), round_shift(ar - tr, s)], axis=-2).reshape(*lead, n)
        im = np.stack([round_shift(ai + ti, s), round_shift(ai - ti, s)], axis=-2).reshape(*lead, n)
        if re.size and (min(re.min(), im.min()) < lo or max(re.max(), im.max()) > hi):
            raise OverflowError(f"FFT stage {st} leaves {spec.data_bits}-bit range: the input is outside what "
                                "the stage schedule was checked for")
    return re, im


def fft2_fixed(tiles: np.ndarray, spec: Spec2Fixed) -> tuple[np.ndarray, np.ndarray]:
    """(..., n, n) integer tiles -> (..., n, n/2 + 1) int64 (re, im): row FFTs, columns 0..n/2, column FFTs."""
    tiles = np.asarray(tiles, dtype=np.int64)
    n = tiles.shape[-1]
    lim = 1 << (spec.act_bits - 1)
    if tiles.size and (tiles.min() < -lim or tiles.max() >= lim):
        raise ValueError(f"activations must be signed {spec.act_bits}-bit, in {-lim}..{lim - 1}")
    shifts = spec.forward_shifts(n)
    rows = len(shifts) // 2
    re, im = fft_fixed(tiles << spec.input_shift(n), np.zeros_like(tiles), shifts[:rows], spec)
    re, im = re[..., : n // 2 + 1].swapaxes(-1, -2), im[..., : n // 2 + 1].swapaxes(-1, -2)
    re, im = fft_fixed(re, im, shifts[rows:], spec)
    return re.swapaxes(-1, -2), im.swapaxes(-1, -2)


def ifft2_fixed(re: np.ndarray, im: np.ndarray, spec: Spec2Fixed) -> np.ndarray:
    """(..., n, n/2 + 1) int64 (re, im) -> (..., n, n) int64: column IFFTs, rows completed by conjugates,
    row IFFTs, real part."""
    n = re.shape[-2]
    shifts = spec.inverse_shifts(n)
    cols = len(shifts) // 2
    zr, zi = fft_fixed(re.swapaxes(-1, -2), im.swapaxes(-1, -2), shifts[:cols], spec, inverse=True)
    zr, zi = zr.swapaxes(-1, -2), zi.swapaxes(-1, -2)
    mirror = slice(n // 2 - 1, 0, -1)
    fr = np.concatenate([zr, zr[..., mirror]], axis=-1)
    fi = np.concatenate([zi, -zi[..., mirror]], axis=-1)
    return fft_fixed(fr, fi, shifts[cols:], spec, inverse=True)[0]


def spectral_mac(xr: np.ndarray, xi: np.ndarray, layer: SpectralLayer, spec: Spec2Fixed) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Input spectra (..., C_in, T_r, T_c, n, n/2 + 1) -> exact accumulators (..., C_out, T_r, T_c, n, n/2 + 1):
    sum over input channels and stored entries of X * W; bins no entry touches stay 0."""
    if layer.c_in > spec.max_c_in:
        raise ValueError(f"C_in={layer.c_in} exceeds max_c_in={spec.max_c_in}")
    lim = 1 << (spec.weight_bits - 1)
    if layer.nnz and (min(layer.re.min(), layer.im.min()) < -lim or max(layer.re.max(), layer.im.max()) >= lim):
        raise ValueError(f"spectral weights do not fit weight_bits={spec.weight_bits}")
    wr, wi = layer.int_weights()
    wr, wi = wr.astype(np.float64), wi.astype(np.float64)
    xr, xi = np.asarray(xr, dtype=np.float64), np.asarray(xi, dtype=np.float64)

    # float64 matmul is exact here: every product and partial sum is an integer below 2^53 (acc_bits <= 53).
    def mix(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.rint(_channel_mix(w, x)).astype(np.int64)

    return mix(wr, xr) - mix(wi, xi), mix(wr, xi) + mix(wi, xr)


def ifft_input(acc_r: np.ndarray, acc_i: np.ndarray, mac_shift: int, spec: Spec2Fixed) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Accumulators -> IFFT input: round-shift by mac_shift, clamp to ifft_in_bits, mirror columns 0 and n/2."""
    yr = _clamp(round_shift(acc_r, mac_shift), spec.ifft_in_bits)
    yi = _clamp(round_shift(acc_i, mac_shift), spec.ifft_in_bits)
    n = yr.shape[-2]
    rows = np.arange(n // 2 + 1, n)
    for col in (0, n // 2):
        yr[..., rows, col] = yr[..., n - rows, col]
        yi[..., rows, col] = -yi[..., n - rows, col]
    return yr, yi


def requantize(v: np.ndarray, quant: QuantParams, spec: Spec2Fixed, relu: bool) -> np.ndarray:
    """Canvas values -> outputs: clamp(rs(v * out_mult + bias_q[o], out_shift)), lower bound 0 with ReLU.
    v is (..., C_out, H, W)."""
    if quant.out_mult >= 1 << spec.mult_bits:
        raise ValueError(f"out_mult={quant.out_mult} does not fit mult_bits={spec.mult_bits}")
    r = np.asarray(v, dtype=np.int64) * quant.out_mult + quant.bias_q[:, None, None]
    y = _clamp(round_shift(r, quant.out_shift), spec.out_bits)
    return np.maximum(y, 0) if relu else y


def spectral_conv_fixed_stages(x_q: np.ndarray, layer: SpectralLayer, spec: Spec2Fixed) -> dict[str, Any]:
    """The fixed-point layer stage by stage (what each RTL block must produce): tiles, spectrum (re, im),
    acc (re, im), ifft_in (re, im), ifft_out, canvas, cropped, out."""
    x_q = np.asarray(x_q)
    if x_q.dtype.kind not in "iu":
        raise ValueError(f"activations must be integers, got {x_q.dtype}")
    if x_q.ndim < 3 or x_q.shape[-3] != layer.c_in:
        raise ValueError(f"input must have shape (..., C_in={layer.c_in}, H, W), got {x_q.shape}")
    if layer.quant is None:
        raise ValueError("the layer has no quantization parameters (calibrate it first)")
    lim = 1 << (spec.ola_bits(layer.oaa) + spec.mult_bits - 1)
    if (np.abs(layer.quant.bias_q) >= lim).any():
        raise ValueError(f"bias_q must be below 2^{spec.ola_bits(layer.oaa) + spec.mult_bits - 1} in magnitude")
    st: dict[str, Any] = {"tiles": tile_input(x_q.astype(np.int64), layer.oaa)}
    st["spectrum"] = fft2_fixed(st["tiles"], spec)
    st["acc"] = spectral_mac(*st["spectrum"], layer, spec)
    st["ifft_in"] = ifft_input(*st["acc"], layer.quant.mac_shift, spec)
    st["ifft_out"] = ifft2_fixed(*st["ifft_in"], spec)
    st["canvas"] = overlap_add(st["ifft_out"], layer.oaa.l)
    st["cropped"] = crop(st["canvas"], layer.oaa, *x_q.shape[-2:])
    st["out"] = requantize(st["cropped"], layer.quant, spec, bool(layer.relu))
    return st


def spectral_conv_fixed(x_q: np.ndarray, layer: SpectralLayer, spec: Spec2Fixed | None = None) -> np.ndarray:
    """The bit-exact layer: signed act_bits integers (..., C_in, H, W) -> int64 (..., C_out, H_out, W_out)."""
    return spectral_conv_fixed_stages(x_q, layer, spec or Spec2Fixed())["out"]


def canvas_scale(layer: SpectralLayer, spec: Spec2Fixed) -> float:
    """Real value of one canvas LSB: 2^(mac_shift + F) in_scale weight_scale."""
    if layer.quant is None:
        raise ValueError("the layer has no quantization parameters")
    f = spec.forward_exponent(layer.oaa.n)
    return 2.0 ** (layer.quant.mac_shift + f) * layer.quant.in_scale * layer.weight_scale


def quant_params(layer: SpectralLayer, in_scale: float, out_scale: float, mac_shift: int,
                 spec: Spec2Fixed) -> QuantParams:
    """out_mult 2^-out_shift ~ canvas LSB / out_scale with out_mult in [2^(mult_bits-1), 2^mult_bits);
    bias_q = round(bias / out_scale * 2^out_shift)."""
    in_scale, out_scale = float(np.float32(in_scale)), float(np.float32(out_scale))
    f = spec.forward_exponent(layer.oaa.n)
    ratio = 2.0 ** (mac_shift + f) * in_scale * layer.weight_scale / out_scale
    frac, exp = math.frexp(ratio)
    mult, shift = round(frac * 2**spec.mult_bits), spec.mult_bits - exp
    if mult == 1 << spec.mult_bits:
        mult, shift = mult >> 1, shift - 1
    if not 0 <= shift <= 62:
        raise ValueError(f"requantization ratio {ratio:g} needs out_shift={shift}, outside 0..62")
    bias_q = np.floor(layer.bias.astype(np.float64) / out_scale * 2.0**shift + 0.5).astype(np.int64)
    return QuantParams(in_scale, out_scale, int(mac_shift), int(mult), int(shift), bias_q)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum |ref|^2 / sum |ref - test|^2) (real or complex); inf when they are equal."""
    reference, test = np.asarray(reference), np.asarray(test)
    noise = float(np.sum(np.abs(reference - test) ** 2))
    signal = float(np.sum(np.abs(reference) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def layer_sqnr(x_q: np.ndarray, layer: SpectralLayer, spec: Spec2Fixed | None = None) -> dict[str, float]:
    """SQNR (dB) of the fixed-point layer against `spectral_conv_float` on the dequantized input:
    "canvas" before requantization (FFT, MAC, IFFT rounding), "output" after it (as the next layer sees it)."""
    spec = spec or Spec2Fixed()
    st = spectral_conv_fixed_stages(x_q, layer, spec)
    x = np.asarray(x_q, dtype=np.float64) * layer.quant.in_scale
    canvas = oaa_conv_float(x, layer.half_spectrum(), layer.oaa)
    return {"canvas": sqnr_db(canvas, st["cropped"] * canvas_scale(layer, spec)),
            "output": sqnr_db(spectral_conv_float(x, layer), st["out"] * layer.quant.out_scale)}


# --- the .npz file ---------------------------------------------------------------------------------------

_INTS = ("version", "c_out", "c_in", "n", "k", "l", "relu", "p", "b")
_REQUIRED = (*_INTS, "padding", "weight_scale", "counts", "index", "re", "im", "bias", "groups", "order")
_QUANT = ("in_scale", "out_scale", "mac_shift", "out_mult", "out_shift", "bias_q")


def layer_fields(layer: SpectralLayer) -> dict[str, np.ndarray]:
    """The arrays of `layer`'s .npz file (docs/formats.md) by field name; the layer must carry a schedule."""
    sch = layer.schedule
    if sch is None:
        raise ValueError("the layer has no schedule (the file carries the conflict-free order)")
    o = layer.oaa
    fields: dict[str, np.ndarray] = {
        "version": np.int64(FORMAT_VERSION), "c_out": np.int64(layer.c_out), "c_in": np.int64(layer.c_in),
        "n": np.int64(o.n), "k": np.int64(o.k), "l": np.int64(o.l), "padding": np.array(o.padding),
        "relu": np.int64(bool(layer.relu)), "p": np.int64(sch.p), "b": np.int64(sch.b),
        "weight_scale": np.float32(layer.weight_scale), "counts": layer.counts.astype(np.int32),
        "index": layer.index.astype(np.uint16), "re": layer.re, "im": layer.im, "bias": layer.bias,
        "groups": sch.groups.astype(np.int32), "order": sch.order.astype(np.int32),
    }
    if (q := layer.quant) is not None:
        fields.update({"in_scale": np.float32(q.in_scale), "out_scale": np.float32(q.out_scale),
                       "mac_shift": np.int64(q.mac_shift), "out_mult": np.int64(q.out_mult),
                       "out_shift": np.int64(q.out_shift), "bias_q": q.bias_q})
    return fields


def save_spectral(path: str | Path, layer: SpectralLayer) -> None:
    """Write `layer` (which must carry a schedule) as the .npz file of docs/formats.md (uncompressed)."""
    fields = layer_fields(layer)
    with open(path, "wb") as f:
        np.savez(f, **fields)


def load_spectral(path: str | Path) -> SpectralLayer:
    """Read and check a sparse spectral layer file; SpectralFormatError (one line, naming the field) if malformed."""
    return load_checked(path, SpectralFormatError, layer_from_fields)


def _int_scalar(raw: Mapping[str, np.ndarray], name: str) -> int:
    value = raw[name]
    if value.shape != () or value.dtype.kind not in "iu":
        raise _bad(name, f"expected an integer scalar, got {value.dtype} {value.shape}")
    return int(value)


def _float_scalar(raw: Mapping[str, np.ndarray], name: str) -> float:
    value = raw[name]
    if value.shape != () or value.dtype != np.float32:
        raise _bad(name, f"expected a float32 scalar, got {value.dtype} {value.shape}")
    return float(value)


def _int_array(raw: Mapping[str, np.ndarray], name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    value = raw[name]
    if value.dtype != dtype or value.shape != shape:
        raise _bad(name, f"expected {np.dtype(dtype)} of shape {shape}, got {value.dtype} {value.shape}")
    return value.astype(np.int64)


def layer_from_fields(raw: Mapping[str, np.ndarray]) -> SpectralLayer:
    """The layer held by a file's arrays (the inverse of `layer_fields`), every field checked; SpectralFormatError
    (one line, naming the field) if one is missing or malformed."""
    for name in _REQUIRED:
        if name not in raw:
            raise SpectralFormatError(f"missing field '{name}'")
    ints = {name: _int_scalar(raw, name) for name in _INTS}
    if ints["version"] != FORMAT_VERSION:
        raise _bad("version", f"unknown version {ints['version']} (this reader knows {FORMAT_VERSION})")
    padding = raw["padding"]
    if padding.shape != () or padding.dtype.kind != "U":
        raise _bad("padding", f"expected a string scalar, got {padding.dtype} {padding.shape}")
    try:
        oaa = OaaParams(ints["n"], ints["k"], ints["l"], str(padding))
    except ValueError as error:
        raise _bad(str(error).split(" ", 1)[0], str(error)) from None
    if ints["relu"] not in (0, 1):
        raise _bad("relu", f"must be 0 or 1, got {ints['relu']}")
    for name in ("c_out", "c_in"):
        if ints[name] < 1:
            raise _bad(name, f"must be >= 1, got {ints[name]}")
    kernels = (ints["c_out"], ints["c_in"])
    counts = _int_array(raw, "counts", np.int32, kernels)
    most = int(canonical_mask(oaa.n).sum())
    if (counts < 0).any() or (counts > most).any():
        raise _bad("counts", f"entries per kernel must be in 0..{most} (canonical bins at n={oaa.n})")
    nnz = int(counts.sum())
    groups = _int_array(raw, "groups", np.int32, kernels)
    if (groups < 0).any():
        raise _bad("groups", "negative group count")
    if ints["p"] < 1:
        raise _bad("p", f"must be >= 1, got {ints['p']}")
    bias = raw["bias"]
    if bias.dtype != np.float32 or bias.shape != (kernels[0],):
        raise _bad("bias", f"expected float32 of shape ({kernels[0]},), got {bias.dtype} {bias.shape}")
    for name in ("re", "im"):
        if raw[name].dtype != np.int16 or raw[name].shape != (nnz,):
            raise _bad(name, f"expected int16 of shape ({nnz},) = sum of counts, got {raw[name].dtype} "
                             f"{raw[name].shape}")
    schedule = Schedule(ints["p"], ints["b"], groups,
                        _int_array(raw, "order", np.int32, (int(groups.sum()) * ints["p"],)))
    present = [name for name in _QUANT if name in raw]
    quant = None
    if present:
        if len(present) < len(_QUANT):
            missing = next(name for name in _QUANT if name not in raw)
            raise SpectralFormatError(f"missing field '{missing}' (the quantization fields come all or none)")
        quant = QuantParams(_float_scalar(raw, "in_scale"), _float_scalar(raw, "out_scale"),
                            _int_scalar(raw, "mac_shift"), _int_scalar(raw, "out_mult"),
                            _int_scalar(raw, "out_shift"), _int_array(raw, "bias_q", np.int64, (kernels[0],)))
    return SpectralLayer(
        oaa=oaa, c_out=kernels[0], c_in=kernels[1], counts=counts,
        index=_int_array(raw, "index", np.uint16, (nnz,)), re=raw["re"], im=raw["im"],
        weight_scale=_float_scalar(raw, "weight_scale"), bias=bias, relu=bool(ints["relu"]),
        schedule=schedule, quant=quant,
    )
