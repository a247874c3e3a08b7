"""The sparse spectral conv layer as an object, every field checked when it is made: its entries, its
quantization parameters and its bank-conflict-free schedule, and the kernel stream that schedule gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec.params import check_int, check_range
from hw.spec.spectral.geometry import OaaParams, bins, canonical_mask, complete_half, self_conjugate_mask


class SpectralFormatError(ValueError):
    """A malformed or inconsistent sparse spectral layer (file or object); the message names the field."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """Bank-conflict-free order: p lanes, b banks; groups[o] groups for output channel o, whose entries are its
    kernels' (o, 0), (o, 1), ... one after the other; order holds sum(groups) * p slots, output channel by output
    channel, each the position of an entry within its output channel's entries or -1 for a zero padding entry.
    A group may take entries of several kernels of its output channel."""

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


def _validate(layer: SpectralLayer) -> None:
    if not isinstance(layer.oaa, OaaParams):
        raise _bad("oaa", f"must be OaaParams, got {type(layer.oaa).__name__}")
    for name in ("c_out", "c_in"):
        try:
            check_int(name, getattr(layer, name), 1)
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
            check_int(name, getattr(q, name), low, high)
        except ValueError as error:
            raise _bad(name, str(error)) from None
    _array("bias_q", q.bias_q, np.int64, (c_out,))
    # The datapath bounds |bias_q|, a magnitude int64's minimum does not have.
    top = np.iinfo(np.int64).max
    try:
        check_range("bias_q", q.bias_q, -top, top)
    except ValueError as error:
        raise _bad("bias_q", str(error)) from None


def _group_layout(sch: Schedule, counts: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
    """Per slot: entry number (-1 padding), bank, output and input channel, checking the schedule's rules on the
    way. A padding slot's input channel is its group's first entry's."""
    p, b = sch.p, sch.b
    c_out, c_in = counts.shape
    per_out = counts.sum(axis=1)
    n_groups = int(sch.groups.sum())
    slots = sch.order.reshape(n_groups, p)
    out = np.repeat(np.arange(c_out), sch.groups)
    real = slots >= 0
    if (slots < -1).any() or (slots >= per_out[out][:, None]).any():
        g = int(np.argmax(((slots < -1) | (slots >= per_out[out][:, None])).any(axis=1)))
        raise _bad("order", f"group {g} of output channel {out[g]}: position outside -1..{int(per_out[out[g]]) - 1}")
    if n_groups and not real.any(axis=1).all():
        g = int(np.argmin(real.any(axis=1)))
        raise _bad("order", f"group {g} of output channel {out[g]} holds only padding")
    starts = np.cumsum(per_out) - per_out
    entry = np.where(real, starts[out][:, None] + slots, -1)
    seen = np.bincount(entry[real], minlength=index.size)
    if (seen != 1).any():
        e = int(np.argmax(seen != 1))
        o = int(np.searchsorted(np.cumsum(per_out), e, side="right"))
        raise _bad("order", f"entry {e - int(starts[o])} of output channel {o} appears {int(seen[e])} times "
                            "(every entry exactly once)")
    banks = np.where(real, index[np.maximum(entry, 0)] % b, b)
    ordered = np.sort(np.where(real, banks, b + np.arange(p)), axis=1)
    if (np.diff(ordered, axis=1) == 0).any():
        g = int(np.argmax((np.diff(ordered, axis=1) == 0).any(axis=1)))
        raise _bad("order", f"group {g} of output channel {out[g]}: two entries in one bank")
    rows = np.arange(n_groups)[:, None]
    # Padding takes a group's lowest free banks, p - (its entries) of them: all below p, so banks 0..p-1 place it
    # (and nothing here grows with b).
    low = real & (banks < p)
    used = np.zeros((n_groups, p), dtype=bool)
    used[np.broadcast_to(rows, banks.shape)[low], banks[low]] = True
    pad = ~used & (np.cumsum(~used, axis=1) <= (p - real.sum(axis=1))[:, None])
    expected = np.sort(np.concatenate([banks, np.where(pad, np.arange(p), b)], axis=1), axis=1)[:, :p]
    expected_pad = (expected < p) & pad[rows, np.minimum(expected, p - 1)]
    wrong = (real == expected_pad) | (real & (banks != expected))
    if wrong.any():
        g = int(np.argmax(wrong.any(axis=1)))
        raise _bad("order", f"group {g} of output channel {out[g]}: slots must run in ascending bank order with "
                            "padding on the lowest free banks")
    entry_in = np.repeat(np.tile(np.arange(c_in), c_out), counts.reshape(-1))
    first = entry[rows[:, 0], np.argmax(real, axis=1)]  # every group holds an entry (checked above)
    chan = np.where(real, entry_in[np.maximum(entry, 0)], entry_in[first][:, None])
    return {"entry": entry.reshape(-1), "bank": expected.reshape(-1), "out": np.repeat(out, p),
            "in": chan.reshape(-1)}


def check_schedule(sch: Schedule, counts: np.ndarray, index: np.ndarray, n: int) -> None:
    """Raise SpectralFormatError (naming the field) unless `sch` is a conflict-free order of these entries."""
    if not isinstance(sch, Schedule):
        raise _bad("schedule", f"must be Schedule, got {type(sch).__name__}")
    most = bins(n)
    try:
        check_int("p", sch.p, 1)
        check_int("b", sch.b, sch.p, most, what=f" (at least p={sch.p}, at most the {most} bins)")
    except ValueError as error:
        raise _bad(str(error).split(" ", 1)[0], str(error)) from None
    _array("groups", sch.groups, np.int64, counts.shape[:1])
    if (sch.groups < 0).any():
        raise _bad("groups", "negative group count")
    _array("order", sch.order, np.int64, (int(sch.groups.sum()) * sch.p,))
    _group_layout(sch, counts, index)


def stream_entries(layer: SpectralLayer) -> dict[str, np.ndarray]:
    """The kernel stream slot by slot (P slots a cycle): out, in (channels), index, re, im (int64), valid.

    Padding slots carry index = their bank, value 0 and their group's first entry's input channel."""
    sch = layer.schedule
    if sch is None:
        raise ValueError("the layer has no schedule")
    lay = _group_layout(sch, layer.counts, layer.index)
    valid = lay["entry"] >= 0
    e = np.maximum(lay["entry"], 0)
    return {"out": lay["out"], "in": lay["in"], "index": np.where(valid, layer.index[e], lay["bank"]),
            "re": np.where(valid, layer.re[e].astype(np.int64), 0),
            "im": np.where(valid, layer.im[e].astype(np.int64), 0), "valid": valid}
