"""Golden model of the XOR-gate weight format (Kwon et al., CVPR 2020): the one home of its math.

A pruned weight matrix W (rows x cols) is quantized by binary coding, w ~= sum_i alpha[r, i] * b_i with
b_i in {-1, +1}; bit-plane i stores b_i as a bit, 1 meaning +1 and 0 meaning -1. Each bit-plane is
flattened row-major (C order, W[r, c] at r * cols + c), padded at the end with don't-care bits to a whole
number S = ceil(rows * cols / n_out) of n_out-bit slices, and slice k covers flat positions
[k * n_out, (k + 1) * n_out). Planes follow one another: slice k of plane i is slice i * S + k overall.

Each slice is stored as n_in bits x; the decoder outputs y = M x mod 2 (M an n_out x n_in 0/1 matrix) and
then flips the slice's patch positions. y equals the slice on every kept (care) position; pruned and
padding positions are don't-care, so the pruning mask is needed to zero them (`bcq_dequantize`).

`XorWeights` is a whole encoded matrix; `save_xor` / `load_xor` read and write its .npz file, which
docs/formats.md describes field by field. The encoder lives in `host.compress.xor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .npzfile import MAX_WEIGHTS, load_checked
from .params import check_int, to_int

FORMAT_VERSION = 1
#: The widest slice: a decoder's M has n_out rows, and decoding holds blocks of slices times n_out in memory.
MAX_N_OUT = 1024

# Slices per block in decode_slices: bounds the float32 product to about 50 MB at n_out = 200.
_DECODE_BLOCK = 1 << 16


class XorFormatError(ValueError):
    """A malformed or inconsistent XOR weight file or object; the message names the field."""


def check_sizes(n_in: object, n_out: object) -> tuple[int, int]:
    """(n_in, n_out) as ints; ValueError naming the field unless 1 <= n_in < n_out (a slice decodes to more bits
    than it stores) <= MAX_N_OUT."""
    n_in = check_int("n_in", n_in, 1)
    n_out = to_int("n_out", n_out)
    if n_out <= n_in:
        raise ValueError(f"n_out must be greater than n_in={n_in}, got {n_out}")
    return n_in, check_int("n_out", n_out, n_in + 1, MAX_N_OUT)


def position_width(n_out: int) -> int:
    """Bits per patch position: ceil(log2 n_out)."""
    return max(1, (n_out - 1).bit_length())


@dataclass(frozen=True)
class XorParams:
    """Parameters of one XOR-encoded matrix.

    n_in, n_out: stored and decoded bits per slice (1 <= n_in < n_out <= MAX_N_OUT). bits: bit-planes q (1..8).
    max_patches: patch positions one decoder beat carries (`hw.spec.xor_stream`); a slice with more
    patches spans several beats, so it limits the decoding rate, not what the format can store.
    seed: the seed `xor_matrix` drew M from (the file stores M itself).
    """

    n_in: int
    n_out: int
    bits: int = 1
    max_patches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_sizes(self.n_in, self.n_out)
        check_int("bits", self.bits, 1, 8)
        check_int("max_patches", self.max_patches, 1)
        check_int("seed", self.seed, 0, 2**63 - 1)

    @property
    def position_width(self) -> int:
        return position_width(self.n_out)


def gf2_rank(m: np.ndarray) -> int:
    """Rank over GF(2) of a 0/1 matrix."""
    a = np.array(m, dtype=bool)
    rank = 0
    for c in range(a.shape[1] if a.ndim == 2 else 0):
        below = np.flatnonzero(a[rank:, c])
        if below.size == 0:
            continue
        p = rank + below[0]
        a[[rank, p]] = a[[p, rank]]
        hit = a[:, c].copy()
        hit[rank] = False
        a[hit] ^= a[rank]
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


def xor_matrix(n_out: int, n_in: int, seed: int) -> np.ndarray:
    """The (n_out, n_in) uint8 0/1 matrix M for `seed`: Bernoulli(0.5) rows, no zero row, full column rank.

    rng = np.random.default_rng(seed) draws all rows; rows that came out all zero are redrawn (in order)
    until none is; the whole matrix is redrawn while its GF(2) column rank is below n_in.
    """
    n_in, n_out = check_sizes(n_in, n_out)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    rng = np.random.default_rng(seed)
    while True:
        m = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        # Redrawing only the zero rows keeps rows i.i.d. uniform over nonzero vectors; redrawing the whole
        # matrix would almost never end for small n_in (P(no zero row) = (1 - 2^-n_in)^n_out).
        while (zero := ~m.any(axis=1)).any():
            m[zero] = rng.integers(0, 2, size=(int(zero.sum()), n_in), dtype=np.uint8)
        if gf2_rank(m) == n_in:
            return m


def num_slices(n_weights: int, n_out: int) -> int:
    """Slices per bit-plane: ceil(n_weights / n_out), the last one padded with don't-care bits."""
    return -(-n_weights // n_out)


def planes_to_slices(planes: np.ndarray, n_out: int) -> np.ndarray:
    """(bits, rows, cols) 0/1 planes -> (bits * S, n_out) uint8 slices, padding positions 0."""
    planes = np.asarray(planes)
    q, n = planes.shape[0], planes[0].size
    s = num_slices(n, n_out)
    out = np.zeros((q, s * n_out), dtype=np.uint8)
    out[:, :n] = planes.reshape(q, n)
    return out.reshape(q * s, n_out)


def care_slices(mask: np.ndarray, n_out: int) -> np.ndarray:
    """(rows, cols) keep mask -> (S, n_out) bool care bits of one plane's slices (padding not cared)."""
    mask = np.asarray(mask, dtype=bool)
    s = num_slices(mask.size, n_out)
    out = np.zeros(s * n_out, dtype=bool)
    out[:mask.size] = mask.reshape(-1)
    return out.reshape(s, n_out)


def slices_to_planes(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(bits * S, n_out) decoded slices -> (bits, rows, cols) uint8 planes, padding dropped."""
    rows, cols = shape
    n_out = y.shape[1]
    s = num_slices(rows * cols, n_out)
    q = y.shape[0] // s
    return np.ascontiguousarray(y.reshape(q, s * n_out)[:, :rows * cols]).reshape(q, rows, cols)


def decode_slices(m: np.ndarray, x: np.ndarray, patch_counts: np.ndarray, patch_positions: np.ndarray) -> np.ndarray:
    """(S, n_out) uint8: y = M x mod 2 per slice, then each slice's patch positions flipped.

    patch_positions holds sum(patch_counts) positions, slice by slice; a position listed twice flips twice.
    """
    m = np.asarray(m)
    x = np.asarray(x)
    counts = np.asarray(patch_counts)
    positions = np.asarray(patch_positions)
    if m.ndim != 2:
        raise ValueError(f"m must be 2-D (n_out, n_in), got shape {m.shape}")
    n_out, n_in = m.shape
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must have shape (S, n_in={n_in}), got {x.shape}")
    s = x.shape[0]
    if counts.shape != (s,):
        raise ValueError(f"patch_counts must have shape ({s},), got {counts.shape}")
    if s and counts.min() < 0:
        raise ValueError("patch_counts must be >= 0")
    if positions.ndim != 1 or positions.size != int(counts.sum()):
        raise ValueError(f"patch_positions must be 1-D of length sum(patch_counts)={int(counts.sum())}, "
                         f"got shape {positions.shape}")
    if positions.size and (positions.min() < 0 or positions.max() >= n_out):
        raise ValueError(f"patch_positions must be in 0..{n_out - 1}")
    # float32 BLAS is exact here: every sum is an integer <= n_in < 2^24.
    mt = np.ascontiguousarray(m.T, dtype=np.float32)
    y = np.empty((s, n_out), dtype=np.uint8)
    for start in range(0, s, _DECODE_BLOCK):
        block = x[start:start + _DECODE_BLOCK].astype(np.float32) @ mt
        y[start:start + _DECODE_BLOCK] = block.astype(np.uint32) & 1
    if positions.size:
        flat = np.repeat(np.arange(s, dtype=np.int64), counts.astype(np.int64)) * n_out + positions.astype(np.int64)
        where, times = np.unique(flat, return_counts=True)
        y.reshape(-1)[where[times & 1 == 1]] ^= 1
    return y


def bcq_dequantize(alpha: np.ndarray, planes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dense float32 weights sum_i alpha[:, i] * (2 * plane_i - 1) on kept positions, exactly 0 elsewhere.

    Summed in float64 in plane order, rounded to float32 once.
    """
    alpha = np.asarray(alpha)
    planes = np.asarray(planes)
    mask = np.asarray(mask, dtype=bool)
    if alpha.ndim != 2 or planes.shape != (alpha.shape[1], *mask.shape) or alpha.shape[0] != mask.shape[0]:
        raise ValueError(f"alpha {alpha.shape}, planes {planes.shape} and mask {mask.shape} disagree: "
                         "expected alpha (rows, bits), planes (bits, rows, cols), mask (rows, cols)")
    total = np.zeros(mask.shape, dtype=np.float64)
    for i in range(alpha.shape[1]):
        total += alpha[:, i, None].astype(np.float64) * (planes[i].astype(np.float64) * 2.0 - 1.0)
    total[~mask] = 0.0
    return total.astype(np.float32)


def storage_bits(n_in: int, n_out: int, n_slices: int, n_patches: int) -> dict[str, int]:
    """Stored bits of the payload: x (n_in per slice), patch positions, patch counts (unary: count + 1)."""
    x = n_slices * n_in
    positions = n_patches * position_width(n_out)
    counts = n_slices + n_patches
    return {"x": x, "patch_positions": positions, "patch_counts": counts, "total": x + positions + counts}


@dataclass(frozen=True, eq=False)
class XorWeights:
    """One XOR-encoded matrix: params, shape, M, alpha (rows, bits), slices and patches, optional mask."""

    params: XorParams
    shape: tuple[int, int]
    m: np.ndarray                   # (n_out, n_in) uint8
    alpha: np.ndarray               # (rows, bits) float32
    x: np.ndarray                   # (bits * S, n_in) uint8, plane-major slice order
    patch_counts: np.ndarray        # (bits * S,) int64
    patch_positions: np.ndarray     # (sum(patch_counts),) int64, ascending within a slice
    mask: np.ndarray | None = None  # (rows, cols) bool, when the file carries it

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def slices_per_plane(self) -> int:
        return num_slices(self.shape[0] * self.shape[1], self.params.n_out)

    def planes(self) -> np.ndarray:
        """Decoded (bits, rows, cols) uint8 bit-planes (1 = +1); pruned positions hold whatever M x gives."""
        y = decode_slices(self.m, self.x, self.patch_counts, self.patch_positions)
        return slices_to_planes(y, self.shape)

    def dense(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Dense float32 weights, pruned positions exactly 0; `mask` defaults to the carried one."""
        if mask is None:
            if self.mask is None:
                raise ValueError("no mask: pass one (this file was written without its mask)")
            mask = self.mask
        mask = np.asarray(mask)
        if mask.shape != self.shape:
            raise ValueError(f"mask must have shape {self.shape}, got {mask.shape}")
        return bcq_dequantize(self.alpha, self.planes(), mask.astype(bool))

    def storage_bits(self) -> dict[str, int]:
        """Payload bits (see `storage_bits`); alpha and the mask are counted apart."""
        p = self.params
        return storage_bits(p.n_in, p.n_out, self.x.shape[0], int(self.patch_positions.size))


def _bad(field: str, message: str) -> XorFormatError:
    return XorFormatError(f"field '{field}': {message}")


def _check_shape(shape: object) -> tuple[int, int]:
    """(rows, cols) as ints; XorFormatError naming 'shape' unless two integers >= 1 of at most MAX_WEIGHTS weights."""
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in shape)):
        raise _bad("shape", f"must be two positive sizes (rows, cols), got {str(shape)[:80]}")
    rows, cols = int(shape[0]), int(shape[1])
    if min(rows, cols) < 1 or rows * cols > MAX_WEIGHTS:
        raise _bad("shape", f"must be two positive sizes (rows, cols) of at most {MAX_WEIGHTS} weights, got "
                            f"{(rows, cols)}")
    return rows, cols


def _validate(w: XorWeights) -> None:
    bad = _bad
    p = w.params
    if not isinstance(p, XorParams):
        raise bad("params", f"must be XorParams, got {type(p).__name__}")
    rows, cols = _check_shape(w.shape)
    s_total = p.bits * num_slices(rows * cols, p.n_out)
    checks = [("m", w.m, (p.n_out, p.n_in), np.uint8), ("alpha", w.alpha, (rows, p.bits), np.float32),
              ("x", w.x, (s_total, p.n_in), np.uint8), ("patch_counts", w.patch_counts, (s_total,), np.int64)]
    for field, value, shape, dtype in checks:
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise bad(field, f"expected {np.dtype(dtype)} of shape {shape}, got {got}")
    if (w.m > 1).any() or (w.x > 1).any():
        raise bad("m" if (w.m > 1).any() else "x", "entries must be 0 or 1")
    if (rank := gf2_rank(w.m)) != p.n_in:
        raise bad("m", f"GF(2) column rank {rank} is below n_in={p.n_in}")
    if not np.isfinite(w.alpha).all():
        raise bad("alpha", "has non-finite values")
    if (w.alpha < 0).any():
        raise bad("alpha", f"scales must be >= 0 (binary coding's sign lives in the planes), got {w.alpha.min():g}")
    if (w.patch_counts < 0).any():
        raise bad("patch_counts", "negative count")
    pos = w.patch_positions
    n_patches = int(w.patch_counts.sum())
    if not isinstance(pos, np.ndarray) or pos.dtype != np.int64 or pos.shape != (n_patches,):
        got = f"{pos.dtype} {pos.shape}" if isinstance(pos, np.ndarray) else type(pos).__name__
        raise bad("patch_positions", f"expected int64 of shape ({n_patches},) = sum of patch_counts, got {got}")
    if pos.size:
        if pos.min() < 0 or pos.max() >= p.n_out:
            raise bad("patch_positions", f"position {int(pos.max() if pos.max() >= p.n_out else pos.min())} "
                                         f"outside 0..{p.n_out - 1} (n_out={p.n_out})")
        # Within a slice positions must strictly increase; a slice starts where the running count starts.
        starts = np.zeros(pos.size, dtype=bool)
        firsts = (np.cumsum(w.patch_counts) - w.patch_counts)[w.patch_counts > 0]
        starts[firsts] = True
        if (np.diff(pos)[~starts[1:]] <= 0).any():
            raise bad("patch_positions", "positions within a slice must be strictly ascending")
    if w.mask is not None:
        if not isinstance(w.mask, np.ndarray) or w.mask.dtype != bool or w.mask.shape != w.shape:
            raise bad("mask", f"expected bool of shape {w.shape}")


# --- the .npz file ---------------------------------------------------------------------------------------

_SCALARS = ("version", "n_in", "n_out", "bits", "max_patches", "seed")
_FIELDS = (*_SCALARS, "shape", "m", "alpha", "x", "patch_counts", "patch_positions")


def _pack_unary(counts: np.ndarray) -> np.ndarray:
    """Each count c as c one-bits and a terminating zero bit, all slices in order, packed MSB first."""
    ends = np.cumsum(counts.astype(np.int64) + 1) - 1
    bits = np.ones(int(ends[-1]) + 1 if ends.size else 0, dtype=np.uint8)
    bits[ends] = 0
    return np.packbits(bits)


def _unpack_unary(data: np.ndarray, n_slices: int) -> np.ndarray:
    bits = np.unpackbits(data)
    ends = np.flatnonzero(bits == 0)[:n_slices]
    if ends.size < n_slices:
        raise XorFormatError(f"field 'patch_counts': {ends.size} terminating zero bits, expected {n_slices}")
    used = int(ends[-1]) + 1
    if data.size != -(-used // 8) or bits[used:].any():
        raise XorFormatError(f"field 'patch_counts': {data.size} bytes, expected {-(-used // 8)} "
                             "(unary code of the counts, zero padding)")
    return np.diff(ends, prepend=-1) - 1


def _pack_fixed(values: np.ndarray, width: int) -> np.ndarray:
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return np.packbits(((values.astype(np.int64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))


def _unpack_fixed(data: np.ndarray, count: int, width: int, field: str) -> np.ndarray:
    if data.size != -(-count * width // 8):
        raise XorFormatError(f"field '{field}': {data.size} bytes, expected {-(-count * width // 8)} "
                             f"({count} values of {width} bits)")
    bits = np.unpackbits(data)
    if bits[count * width:].any():
        raise XorFormatError(f"field '{field}': padding bits are not zero")
    weights = np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64)
    return bits[:count * width].reshape(count, width).astype(np.int64) @ weights


def _unpack_bits(data: np.ndarray, shape: tuple[int, ...], field: str) -> np.ndarray:
    n = math.prod(shape)
    if data.size != -(-n // 8):
        raise XorFormatError(f"field '{field}': {data.size} bytes, expected {-(-n // 8)} ({n} bits of {shape})")
    bits = np.unpackbits(data)
    if bits[n:].any():
        raise XorFormatError(f"field '{field}': padding bits are not zero")
    return np.ascontiguousarray(bits[:n]).reshape(shape)


def xor_fields(weights: XorWeights) -> dict[str, np.ndarray]:
    """The arrays of `weights`' .npz file (docs/formats.md) by field name."""
    p = weights.params
    fields = {
        "version": np.int64(FORMAT_VERSION), "n_in": np.int64(p.n_in), "n_out": np.int64(p.n_out),
        "bits": np.int64(p.bits), "max_patches": np.int64(p.max_patches), "seed": np.int64(p.seed),
        "shape": np.array(weights.shape, dtype=np.int64),
        "m": np.packbits(weights.m.reshape(-1)),
        "alpha": weights.alpha,
        "x": np.packbits(weights.x.reshape(-1)),
        "patch_counts": _pack_unary(weights.patch_counts),
        "patch_positions": _pack_fixed(weights.patch_positions, p.position_width),
    }
    if weights.mask is not None:
        fields["mask"] = np.packbits(weights.mask.reshape(-1))
    return fields


def save_xor(path: str | Path, weights: XorWeights) -> None:
    """Write `weights` as the .npz file of docs/formats.md (uncompressed)."""
    fields = xor_fields(weights)
    with open(path, "wb") as f:
        np.savez(f, **fields)


def load_xor(path: str | Path) -> XorWeights:
    """Read and check an .npz XOR weight file; XorFormatError (one line, naming the field) if malformed."""
    return load_checked(path, XorFormatError, xor_from_fields)


def xor_from_fields(raw: dict[str, np.ndarray]) -> XorWeights:
    """Check and decode an XOR file's arrays (see `load_xor`); XorFormatError naming the field."""
    for name in _FIELDS:
        if name not in raw:
            raise XorFormatError(f"missing field '{name}'")
    ints = {}
    for name in _SCALARS:
        value = raw[name]
        if value.shape != () or value.dtype.kind not in "iu":
            raise XorFormatError(f"field '{name}': expected an integer scalar, got {value.dtype} {value.shape}")
        ints[name] = int(value)
    if ints["version"] != FORMAT_VERSION:
        raise XorFormatError(f"field 'version': unknown version {ints['version']} (this reader knows "
                             f"{FORMAT_VERSION})")
    try:
        params = XorParams(ints["n_in"], ints["n_out"], ints["bits"], ints["max_patches"], ints["seed"])
    except ValueError as error:
        name = str(error).split(" ", 1)[0]
        raise XorFormatError(f"field '{name}': {error}") from None
    shape_field = raw["shape"]
    if shape_field.shape != (2,) or shape_field.dtype.kind not in "iu":
        raise XorFormatError(f"field 'shape': expected two positive integers, got {shape_field.dtype} "
                             f"{shape_field.shape}")
    shape = _check_shape((int(shape_field[0]), int(shape_field[1])))
    for name in ("m", "x", "patch_counts", "patch_positions", "mask"):
        if name in raw and (raw[name].dtype != np.uint8 or raw[name].ndim != 1):
            raise XorFormatError(f"field '{name}': expected 1-D uint8 packed bits, got {raw[name].dtype} "
                                 f"{raw[name].shape}")
    alpha = raw["alpha"]
    if alpha.dtype != np.float32 or alpha.shape != (shape[0], params.bits):
        raise XorFormatError(f"field 'alpha': expected float32 of shape {(shape[0], params.bits)}, "
                             f"got {alpha.dtype} {alpha.shape}")
    s_total = params.bits * num_slices(shape[0] * shape[1], params.n_out)
    counts = _unpack_unary(raw["patch_counts"], s_total)
    positions = _unpack_fixed(raw["patch_positions"], int(counts.sum()), params.position_width, "patch_positions")
    mask = _unpack_bits(raw["mask"], shape, "mask").astype(bool) if "mask" in raw else None
    return XorWeights(
        params=params, shape=shape,
        m=_unpack_bits(raw["m"], (params.n_out, params.n_in), "m"),
        alpha=alpha,
        x=_unpack_bits(raw["x"], (s_total, params.n_in), "x"),
        patch_counts=counts.astype(np.int64), patch_positions=positions, mask=mask,
    )
