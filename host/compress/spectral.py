"""Encoder of the sparse spectral layer format (SPEC2): spatial or spectral kernels -> pruned, quantized,
bank-conflict-free `SpectralLayer`, and its fixed-point calibration.

The format's math (canonical bins, the operator, the fixed-point model, the file) lives in
`hw.spec.spectral`; this module only produces it.

Pruning keeps the largest canonical bins by complex magnitude. Each canonical bin stands for itself and,
off the self-conjugate ones, its conjugate partner, so keeping or dropping it keeps or drops the Hermitian
pair together and the pruned spectrum stays Hermitian. Sparsity counts canonical bins (34 per kernel at
N = 8): one stored entry is one MAC product.

Scheduling is greedy per output channel, over its kernels' entries one after the other: each group takes the
next entry of each of the P banks with the most entries left (ties to the lower bank), which reaches the lower
bound max(ceil(count / P), largest bank count) groups: the banks holding that many are all served every cycle
until the bound drops. A group thus takes entries of several kernels where one kernel's few entries would leave
lanes idle (a kernel at 75 % holds 8.5 entries on average). A plain Python loop of one group a turn is cheap
enough (about 0.1 s for a 64 x 64 layer); vectorizing would buy little.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from hw.spec.spectral.fixed import SpectralFixed, fft2_fixed, quant_params, round_shift, spectral_mac
from hw.spec.spectral.geometry import OaaParams, canonical_mask, kernel_spectrum, self_conjugate_mask
from hw.spec.spectral.layer import Schedule, SpectralLayer
from hw.spec.spectral.operator import spectral_conv_float, tile_input


def prune_mask(half: np.ndarray, sparsity: float = 0.75, scope: Literal["layer", "kernel"] = "layer") -> np.ndarray:
    """(C_out, C_in, n, n/2 + 1) keep mask: round(sparsity * bins) of the canonical bins per layer (or per
    kernel) dropped, the smallest |value| first (ties: the later bin first); non-canonical bins False."""
    half = np.asarray(half)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in 0..1, got {sparsity}")
    if scope not in ("layer", "kernel"):
        raise ValueError(f"scope must be 'layer' or 'kernel', got {scope!r}")
    c_out, c_in, n, cols = half.shape
    canonical = canonical_mask(n).reshape(-1)
    mag = np.abs(half.reshape(c_out * c_in, n * cols)[:, canonical])
    if scope == "layer":
        mag = mag.reshape(1, -1)
    drop = int(np.floor(sparsity * mag.shape[1] + 0.5))
    # A stable sort on -|v| keeps the earlier bin of a tie; the last `drop` of each row go.
    rank = np.empty_like(mag, dtype=np.int64)
    np.put_along_axis(rank, np.argsort(-mag, axis=1, kind="stable"), np.arange(mag.shape[1]), axis=1)
    keep = np.zeros((c_out * c_in, n * cols), dtype=bool)
    keep[:, canonical] = (rank < mag.shape[1] - drop).reshape(c_out * c_in, -1)
    return keep.reshape(half.shape)


def quantize_values(values: np.ndarray, bits: int = 16) -> tuple[np.ndarray, np.ndarray, float]:
    """Complex values -> int16 (re, im) and one float32 scale: the largest component maps to 2^(bits-1) - 1."""
    values = np.asarray(values, dtype=np.complex128)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    top = (1 << (bits - 1)) - 1
    peak = float(max(np.abs(values.real).max(initial=0.0), np.abs(values.imag).max(initial=0.0)))
    scale = float(np.float32(peak / top)) if peak > 0 else 1.0
    re = np.clip(np.rint(values.real / scale), -top, top).astype(np.int16)
    im = np.clip(np.rint(values.imag / scale), -top, top).astype(np.int16)
    return re, im, scale


def schedule_entries(index: np.ndarray, p: int, b: int) -> np.ndarray:
    """One output channel's slots (positions in `index`, its kernels' entries one after the other; -1 for
    padding) in groups of p with distinct banks (index mod b), each group sorted by bank, padding on its lowest
    free banks; as few groups as possible."""
    banks = np.asarray(index, dtype=np.int64) % b
    queues = [list(np.flatnonzero(banks == k)) for k in range(b)]
    slots: list[int] = []
    while live := [k for k in range(b) if queues[k]]:
        pick = sorted(live, key=lambda k: -len(queues[k]))[:p]  # stable: ties go to the lower bank
        taken = {k: int(queues[k].pop(0)) for k in pick}
        pads = [k for k in range(b) if k not in taken][: p - len(pick)]
        slots.extend(taken.get(k, -1) for k in sorted([*pick, *pads]))
    return np.array(slots, dtype=np.int64)


def schedule_layer(counts: np.ndarray, index: np.ndarray, p: int, b: int) -> Schedule:
    """The conflict-free order of every output channel, its groups across its kernels."""
    if p < 1 or b < p:
        raise ValueError(f"need 1 <= p <= b, got p={p}, b={b}")
    per_out = np.asarray(counts).reshape(np.shape(counts)[0], -1).sum(axis=1)
    bounds = np.concatenate([[0], np.cumsum(per_out)])
    orders = [schedule_entries(index[bounds[o]:bounds[o + 1]], p, b) for o in range(per_out.size)]
    groups = np.array([o.size // p for o in orders], dtype=np.int64)
    order = np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)
    return Schedule(p, b, groups, order.astype(np.int64))


def layer_from_half(half: np.ndarray, oaa: OaaParams, p: int = 4, b: int | None = None,
                    bias: np.ndarray | None = None, relu: bool = False, weight_bits: int = 16) -> SpectralLayer:
    """A (pruned) (C_out, C_in, n, n/2 + 1) spectrum -> SpectralLayer scheduled for p lanes and b banks (default
    2 p: see docs/formats.md). Only canonical bins are read (self-conjugate ones by their real part); bins that
    are 0, or round to 0, are not stored."""
    half = np.asarray(half, dtype=np.complex128)
    b = min(2 * p, oaa.bins) if b is None else b
    c_out, c_in = half.shape[:2]
    if half.shape[2:] != (oaa.n, oaa.half_cols):
        raise ValueError(f"spectrum must have shape (C_out, C_in, {oaa.n}, {oaa.half_cols}), got {half.shape}")
    flat = half.reshape(c_out * c_in, oaa.bins).copy()
    real_only = self_conjugate_mask(oaa.n).reshape(-1)
    flat[:, real_only] = flat[:, real_only].real
    flat[:, ~canonical_mask(oaa.n).reshape(-1)] = 0
    re, im, scale = quantize_values(flat[flat != 0], weight_bits)
    kernel, index = np.nonzero(flat)
    kept = (re != 0) | (im != 0)
    kernel, index = kernel[kept], index[kept].astype(np.int64)
    counts = np.bincount(kernel, minlength=c_out * c_in).astype(np.int64).reshape(c_out, c_in)
    bias = np.zeros(c_out, dtype=np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
    return SpectralLayer(oaa=oaa, c_out=c_out, c_in=c_in, counts=counts, index=index, re=re[kept], im=im[kept],
                         weight_scale=scale, bias=bias, relu=bool(relu),
                         schedule=schedule_layer(counts, index, p, b))


def compress_spatial(w: np.ndarray, oaa: OaaParams | None = None, sparsity: float = 0.75, p: int = 4,
                     b: int | None = None, bias: np.ndarray | None = None, relu: bool = False,
                     scope: Literal["layer", "kernel"] = "layer") -> SpectralLayer:
    """Spatial kernels (C_out, C_in, K, K) -> a magnitude-pruned, quantized, scheduled sparse spectral layer
    (b defaults to 2 p)."""
    w = np.asarray(w, dtype=np.float64)
    oaa = oaa or OaaParams(k=w.shape[-1])
    if w.ndim != 4 or w.shape[2:] != (oaa.k, oaa.k):
        raise ValueError(f"kernels must have shape (C_out, C_in, {oaa.k}, {oaa.k}), got {w.shape}")
    half = kernel_spectrum(w, oaa.n)
    return layer_from_half(np.where(prune_mask(half, sparsity, scope), half, 0), oaa, p, b, bias, relu)


def calibrate(layer: SpectralLayer, x_q: np.ndarray, in_scale: float, spec: SpectralFixed | None = None,
              out_percentile: float | None = None, batch: int | None = None) -> SpectralLayer:
    """The layer with quantization parameters from sample inputs x_q (..., C_in, H, W), activations of scale
    in_scale: the smallest mac_shift that clamps no sample accumulator, and an out_scale that maps the
    out_percentile-th percentile of |output| to the largest output code, or (None) minimises the output
    quantization error on the samples. `batch` samples at a time (None: all at once) bounds the spectra held."""
    spec = spec or SpectralFixed()
    x_q = np.asarray(x_q)
    samples = x_q.reshape(-1, *x_q.shape[-3:])
    step = batch or max(len(samples), 1)
    peak, outputs = 0, []
    for start in range(0, len(samples), step):
        chunk = samples[start:start + step]
        acc_r, acc_i = spectral_mac(*fft2_fixed(tile_input(chunk.astype(np.int64), layer.oaa), spec), layer, spec)
        peak = max(peak, int(max(np.abs(acc_r).max(initial=0), np.abs(acc_i).max(initial=0))))
        y = spectral_conv_float(chunk.astype(np.float64) * float(np.float32(in_scale)), layer)
        outputs.append(y.reshape(-1))
    limit = (1 << (spec.ifft_in_bits - 1)) - 1
    mac_shift = 0
    while int(round_shift(np.int64(peak), mac_shift)) > limit:
        mac_shift += 1
    y = np.concatenate(outputs) if outputs else np.zeros(0)
    out_scale = _output_scale(y, spec.out_bits, bool(layer.relu), out_percentile)
    return dataclasses.replace(layer, quant=quant_params(layer, in_scale, out_scale, mac_shift, spec))


# Samples and candidate clipping levels of the output-scale search.
_SCALE_SAMPLES = 1 << 18
_SCALE_CANDIDATES = np.geomspace(0.25, 1.0, 97)


def _output_scale(y: np.ndarray, bits: int, relu: bool, percentile: float | None) -> float:
    top_code = (1 << (bits - 1)) - 1
    if y.size > _SCALE_SAMPLES:  # an evenly spaced subsample is plenty for a one-parameter fit
        y = y[:: -(-y.size // _SCALE_SAMPLES)]
    peak = float(np.abs(y).max(initial=0.0))
    if peak == 0:
        return 1.0
    if percentile is not None:
        return max(float(np.percentile(np.abs(y), percentile)), peak * 1e-6) / top_code
    low = 0 if relu else -top_code - 1
    errors = [float(np.sum((np.clip(np.floor(y / s + 0.5), low, top_code) * s - y) ** 2))
              for s in _SCALE_CANDIDATES * peak / top_code]
    return float(_SCALE_CANDIDATES[int(np.argmin(errors))] * peak / top_code)


def schedule_stats(layer: SpectralLayer) -> dict[str, float | int]:
    """Lane utilisation (useful products / lane-cycles) of the layer's schedule, and the figure without bank
    constraints (ceil(count / p) groups per output channel) for comparison."""
    sch = layer.schedule
    if sch is None:
        raise ValueError("the layer has no schedule")
    groups = int(sch.groups.sum())
    unbanked = int((-(-layer.counts.sum(axis=1) // sch.p)).sum())
    return {"p": sch.p, "b": sch.b, "entries": layer.nnz, "groups": groups, "lane_cycles": groups * sch.p,
            "utilization": layer.nnz / (groups * sch.p) if groups else 1.0,
            "utilization_no_banks": layer.nnz / (unbanked * sch.p) if unbanked else 1.0}
