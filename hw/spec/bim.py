"""Golden model of the binary-index-matrix (BIM) mask format (Lee et al., arXiv 1905.05686): the one home of its math.

A pruning mask (rows x cols, True = kept) is cut into tiles of m_t x n_t, laid out row-major: tile (a, b)
covers rows [a * m_t, (a + 1) * m_t) and columns [b * n_t, (b + 1) * n_t), for a < T_r = ceil(rows / m_t)
and b < T_c = ceil(cols / n_t). Each tile's mask is the Boolean product of P (m_t x r) and Z (r x n_t):

    mask[i, j] = OR_k (P[i, k] AND Z[k, j])

Edge tiles are padded to a full m_t x n_t at their bottom and right: the padding rows and columns are
computed like any other and then cut off, so they carry no information and a factorizer may set their
bits to anything. Index storage is r * (m_t + n_t) bits per tile, padded tiles included.

`BimMask` is a whole factored mask; `BimMask.save` / `BimMask.load` write and read its .npz file, which
docs/formats.md describes field by field. The factorizer lives in `host.compress.bim`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .npzfile import MAX_WEIGHTS, load_checked
from .params import check_int

FORMAT_VERSION = 1


class BimFormatError(ValueError):
    """A malformed or inconsistent BIM mask file or object; the message names the field."""


@dataclass(frozen=True)
class BimParams:
    """Tile rows m_t, tile columns n_t and rank r of a BIM mask (each >= 1; r may exceed min(m_t, n_t))."""

    m_t: int
    n_t: int
    r: int

    def __post_init__(self) -> None:
        for name in ("m_t", "n_t", "r"):
            check_int(name, getattr(self, name), 1)

    @property
    def tile_bits(self) -> int:
        """Index bits per tile: r * (m_t + n_t)."""
        return self.r * (self.m_t + self.n_t)


def tile_grid(shape: tuple[int, int], m_t: int, n_t: int) -> tuple[int, int]:
    """(T_r, T_c) = (ceil(rows / m_t), ceil(cols / n_t)): tiles per column and per row of the matrix."""
    rows, cols = shape
    return -(-rows // m_t), -(-cols // n_t)


def _as_bits(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "fiu" or not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold booleans or 0/1, got dtype {a.dtype} with other values")
    return a != 0


def boolean_product(p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(..., m_t, r), (..., r, n_t) -> (..., m_t, n_t) bool: OR_k (p[..., i, k] AND z[..., k, j]) per leading index."""
    p = _as_bits(p, "p")
    z = _as_bits(z, "z")
    if p.ndim < 2 or z.ndim < 2 or p.shape[-1] != z.shape[-2]:
        raise ValueError(f"p (..., m_t, r) and z (..., r, n_t) disagree: got shapes {p.shape} and {z.shape}")
    try:
        lead = np.broadcast_shapes(p.shape[:-2], z.shape[:-2])
    except ValueError:
        raise ValueError(f"p and z have leading (tile) dimensions that do not broadcast: {p.shape} and "
                         f"{z.shape}") from None
    out = np.zeros((*lead, p.shape[-2], z.shape[-1]), dtype=bool)
    # Row i is the OR of the Z rows that P's row i selects: what the unpacker computes, one rank at a time.
    for k in range(p.shape[-1]):
        out |= p[..., :, k, None] & z[..., None, k, :]
    return out


def to_tiles(a: np.ndarray, m_t: int, n_t: int, fill: Any = 0) -> np.ndarray:
    """(rows, cols) -> (T_r, T_c, m_t, n_t) tiles, row-major, edge tiles padded with `fill`."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {a.shape}")
    t_r, t_c = tile_grid(a.shape, m_t, n_t)
    padded = np.full((t_r * m_t, t_c * n_t), fill, dtype=a.dtype)
    padded[:a.shape[0], :a.shape[1]] = a
    return np.ascontiguousarray(padded.reshape(t_r, m_t, t_c, n_t).transpose(0, 2, 1, 3))


def from_tiles(tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(T_r, T_c, m_t, n_t) tiles -> the (rows, cols) matrix, padding cut off."""
    tiles = np.asarray(tiles)
    t_r, t_c, m_t, n_t = tiles.shape
    rows, cols = shape
    if tile_grid(shape, m_t, n_t) != (t_r, t_c):
        raise ValueError(f"{t_r} x {t_c} tiles of {m_t} x {n_t} do not cover shape {tuple(shape)} exactly "
                         f"(expected {tile_grid(shape, m_t, n_t)})")
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(t_r * m_t, t_c * n_t)[:rows, :cols])


def tiles_to_mask(p: np.ndarray, z: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool mask from per-tile factors p (T_r, T_c, m_t, r) and z (T_r, T_c, r, n_t)."""
    p = np.asarray(p)
    z = np.asarray(z)
    if p.ndim != 4 or z.ndim != 4:
        raise ValueError(f"p must be (T_r, T_c, m_t, r) and z (T_r, T_c, r, n_t), got shapes {p.shape} and {z.shape}")
    if z.shape[:3] != (*p.shape[:2], p.shape[3]):
        raise ValueError(f"p {p.shape} and z {z.shape} disagree: expected z of shape "
                         f"(T_r, T_c, r, n_t) = {(*p.shape[:2], p.shape[3], z.shape[3])}")
    return from_tiles(boolean_product(p, z), shape)


# --- the mask object -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BimMask:
    """A factored mask: shape (rows, cols), params, p (T_r, T_c, m_t, r) bool and z (T_r, T_c, r, n_t) bool."""

    shape: tuple[int, int]
    params: BimParams
    p: np.ndarray
    z: np.ndarray

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @property
    def grid(self) -> tuple[int, int]:
        """(T_r, T_c): tiles down and across."""
        return tile_grid(self.shape, self.params.m_t, self.params.n_t)

    def mask(self) -> np.ndarray:
        """The (rows, cols) bool mask, True = kept."""
        return tiles_to_mask(self.p, self.z, self.shape)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Dense weights: `values` where the mask keeps them, exactly 0 elsewhere (dtype kept)."""
        values = np.asarray(values)
        if values.shape != self.shape:
            raise ValueError(f"values must have shape {self.shape}, got {values.shape}")
        return np.where(self.mask(), values, np.zeros((), dtype=values.dtype))

    def index_bits(self) -> int:
        """Index storage: r * (m_t + n_t) bits per tile, times the number of tiles (padded ones included)."""
        t_r, t_c = self.grid
        return self.params.tile_bits * t_r * t_c

    def save(self, path: str | Path) -> None:
        """Write the .npz file of docs/formats.md (uncompressed)."""
        fields = bim_fields(self)
        with open(path, "wb") as f:
            np.savez(f, **fields)

    @classmethod
    def load(cls, path: str | Path) -> BimMask:
        """Read and check a .npz BIM file; BimFormatError (one line, naming the field) if malformed."""
        return load_checked(path, BimFormatError, bim_from_fields)


def decode(path: str | Path) -> np.ndarray:
    """The (rows, cols) bool mask stored in a .npz BIM file."""
    return BimMask.load(path).mask()


def _check_size(shape: tuple[int, int], params: BimParams) -> tuple[int, int]:
    """(T_r, T_c); BimFormatError naming 'shape' when the padded tiles (what `mask` computes) hold more than
    MAX_WEIGHTS weights."""
    t_r, t_c = tile_grid(shape, params.m_t, params.n_t)
    if t_r * params.m_t * t_c * params.n_t > MAX_WEIGHTS:
        raise BimFormatError(f"field 'shape': {tuple(shape)} in tiles of {params.m_t} x {params.n_t} pads to "
                             f"{t_r * params.m_t} x {t_c * params.n_t}, more than {MAX_WEIGHTS} weights")
    return t_r, t_c


def _validate(m: BimMask) -> None:
    def bad(field: str, message: str) -> BimFormatError:
        return BimFormatError(f"field '{field}': {message}")

    if not isinstance(m.params, BimParams):
        raise bad("params", f"must be BimParams, got {type(m.params).__name__}")
    shape = m.shape
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1
                       for v in shape)):
        raise bad("shape", f"must be two positive integers (rows, cols), got {str(shape)[:80]}")
    t_r, t_c = _check_size(shape, m.params)
    p = m.params
    for field, value, expected in (("p", m.p, (t_r, t_c, p.m_t, p.r)), ("z", m.z, (t_r, t_c, p.r, p.n_t))):
        if not isinstance(value, np.ndarray) or value.dtype != bool or value.shape != expected:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise bad(field, f"expected bool of shape {expected} (T_r, T_c, ...) for shape {tuple(shape)}, got {got}")


# --- the .npz file ---------------------------------------------------------------------------------------

_SCALARS = ("version", "m_t", "n_t", "r")
_FIELDS = (*_SCALARS, "shape", "p", "z")


def _unpack_bits(data: np.ndarray, shape: tuple[int, ...], field: str) -> np.ndarray:
    if data.dtype != np.uint8 or data.ndim != 1:
        raise BimFormatError(f"field '{field}': expected 1-D uint8 packed bits, got {data.dtype} {data.shape}")
    n = math.prod(shape)
    if data.size != -(-n // 8):
        raise BimFormatError(f"field '{field}': {data.size} bytes, expected {-(-n // 8)} ({n} bits of {shape})")
    bits = np.unpackbits(data)
    if bits[n:].any():
        raise BimFormatError(f"field '{field}': padding bits are not zero")
    return np.ascontiguousarray(bits[:n]).reshape(shape).astype(bool)


def bim_fields(mask: BimMask) -> dict[str, np.ndarray]:
    """The arrays of `mask`'s .npz file (docs/formats.md) by field name."""
    return {
        "version": np.int64(FORMAT_VERSION),
        "shape": np.array(mask.shape, dtype=np.int64),
        "m_t": np.int64(mask.params.m_t), "n_t": np.int64(mask.params.n_t), "r": np.int64(mask.params.r),
        "p": np.packbits(mask.p.reshape(-1)),
        "z": np.packbits(mask.z.reshape(-1)),
    }


def bim_from_fields(raw: dict[str, np.ndarray]) -> BimMask:
    """Check and decode a BIM file's arrays (see `BimMask.load`); BimFormatError naming the field."""
    for name in _FIELDS:
        if name not in raw:
            raise BimFormatError(f"missing field '{name}'")
    ints = {}
    for name in _SCALARS:
        value = raw[name]
        if value.shape != () or value.dtype.kind not in "iu":
            raise BimFormatError(f"field '{name}': expected an integer scalar, got {value.dtype} {value.shape}")
        ints[name] = int(value)
    if ints["version"] != FORMAT_VERSION:
        raise BimFormatError(f"field 'version': unknown version {ints['version']} (this reader knows "
                             f"{FORMAT_VERSION})")
    try:
        params = BimParams(ints["m_t"], ints["n_t"], ints["r"])
    except ValueError as error:
        name = str(error).split(" ", 1)[0]
        raise BimFormatError(f"field '{name}': {error}") from None
    shape_field = raw["shape"]
    if shape_field.shape != (2,) or shape_field.dtype.kind not in "iu" or (shape_field < 1).any():
        got = shape_field.tolist() if shape_field.shape == (2,) else shape_field.shape
        raise BimFormatError(f"field 'shape': expected two positive integers, got {shape_field.dtype} {got}")
    shape = (int(shape_field[0]), int(shape_field[1]))
    t_r, t_c = _check_size(shape, params)
    p = _unpack_bits(raw["p"], (t_r, t_c, params.m_t, params.r), "p")
    z = _unpack_bits(raw["z"], (t_r, t_c, params.r, params.n_t), "z")
    return BimMask(shape=shape, params=params, p=p, z=z)
