"""The sparse spectral layer's .npz file (docs/formats.md): its fields, writing it, and reading it with every
field checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hw.spec.npzfile import load_checked
from hw.spec.spectral.geometry import OaaParams, canonical_mask
from hw.spec.spectral.layer import QuantParams, Schedule, SpectralFormatError, SpectralLayer, _bad

#: 2: a schedule's groups per output channel, across its kernels; 1 (still read): per kernel.
FORMAT_VERSION = 2

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
    if ints["version"] not in (1, FORMAT_VERSION):
        raise _bad("version", f"unknown version {ints['version']} (this reader knows 1 and {FORMAT_VERSION})")
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
    groups = _int_array(raw, "groups", np.int32, kernels if ints["version"] == 1 else kernels[:1])
    if (groups < 0).any():
        raise _bad("groups", "negative group count")
    if ints["p"] < 1:
        raise _bad("p", f"must be >= 1, got {ints['p']}")
    order = _int_array(raw, "order", np.int32, (int(groups.sum()) * ints["p"],))
    if ints["version"] == 1:
        groups, order = _per_output_channel(groups, order, counts, ints["p"])
    bias = raw["bias"]
    if bias.dtype != np.float32 or bias.shape != (kernels[0],):
        raise _bad("bias", f"expected float32 of shape ({kernels[0]},), got {bias.dtype} {bias.shape}")
    for name in ("re", "im"):
        if raw[name].dtype != np.int16 or raw[name].shape != (nnz,):
            raise _bad(name, f"expected int16 of shape ({nnz},) = sum of counts, got {raw[name].dtype} "
                             f"{raw[name].shape}")
    schedule = Schedule(ints["p"], ints["b"], groups, order)
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


def _per_output_channel(groups: np.ndarray, order: np.ndarray, counts: np.ndarray, p: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """A version-1 schedule (groups per kernel, positions within the kernel) as the version-2 schedule it is: its
    groups per output channel, positions within the output channel's entries (the kernel's first entry's added)."""
    before = np.cumsum(counts, axis=1) - counts  # entries of the output channel before each kernel
    slot_kernel = np.repeat(np.repeat(np.arange(counts.size), groups.reshape(-1)), p)
    outside = (order < -1) | (order >= counts.reshape(-1)[slot_kernel])
    if outside.any():
        o, i = divmod(int(slot_kernel[np.argmax(outside)]), counts.shape[1])
        raise _bad("order", f"a slot of kernel (o={o}, i={i}) outside -1..{int(counts[o, i]) - 1}")
    return groups.sum(axis=1), np.where(order >= 0, order + before.reshape(-1)[slot_kernel], order)

