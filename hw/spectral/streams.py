"""The streams of one `SpectralConv` layer as integer beats: `encode` builds the inputs from a `SpectralLayer` and
an input map with the spec's packers (`hw.spec.spectral.stream`) on the engine's own layouts, `decode_output`
reads the output map back. For testbenches and `sim.spectral`; the host packs from INFO's field tables instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hw.spec.spectral import stream as beats
from hw.spec.spectral.engine import check_layer_fits
from hw.spec.spectral.layer import SpectralLayer

from ..layouts import layout_fields
from .pipeline import SpectralConvParams


def encode(params: SpectralConvParams, layer: SpectralLayer, x_q: np.ndarray) -> dict[str, list[int]]:
    """The input streams of one layer on one input (C_in, H, W) as integer beats per port: cfg, x, w, quant."""
    x_q = np.asarray(x_q)
    check_layer_fits(params.describe(), layer, x_q.shape, valid_as_crop=False)
    _, h, w = x_q.shape
    return {"cfg": [beats.cfg_beat(layout_fields(params.cfg_layout), layer, h, w)],
            "x": beats.act_beats(x_q, params.spec.act_bits),
            "w": beats.kernel_beats(layout_fields(params.kernel_layout), layer, params.p),
            "quant": beats.quant_beats(layout_fields(params.quant_layout), layer)}


def decode_output(params: SpectralConvParams, words: Sequence[int], shape: tuple[int, int, int]) -> np.ndarray:
    """Output beats (unsigned words) -> the signed int64 map of `shape` (C_out, H_out, W_out)."""
    bits = params.spec.out_bits
    v = np.asarray(list(words), dtype=np.int64) & ((1 << bits) - 1)
    if v.size != int(np.prod(shape)):
        raise ValueError(f"expected {int(np.prod(shape))} output values for {shape}, got {v.size}")
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v).reshape(shape)


__all__ = ["encode", "decode_output"]
