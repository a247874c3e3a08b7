"""The streams of one `SpectralConv` layer as integer beats: `encode` builds the inputs from a `SpectralLayer` and
an input map with the spec's packers (`hw.spec.spectral.stream`) on the engine's own layouts, `decode_output`
reads the output map back. For testbenches and `sim.spectral`; the host packs from INFO's field tables instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hw.spec.fields import pack_fields
from hw.spec.pool import max_pool
from hw.spec.spectral import stream as beats
from hw.spec.spectral.engine import check_layer_fits
from hw.spec.spectral.layer import SpectralLayer

from ..layouts import layout_fields
from .pipeline import SpectralConvParams

#: A layer's post settings on an engine with post stages: crop window (top, left, height, width) and pool flag.
Window = tuple[int, int, int, int, bool]


def encode(params: SpectralConvParams, layer: SpectralLayer, x_q: np.ndarray,
           window: Window | None = None) -> dict[str, list[int]]:
    """The input streams of one layer on one input (C_in, H, W) as integer beats per port: cfg, x, w, quant and,
    on an engine with post stages, post: `window` (top, left, height, width, pool), by default the whole map."""
    x_q = np.asarray(x_q)
    check_layer_fits(params.describe(), layer, x_q.shape, valid_as_crop=False)
    _, h, w = x_q.shape
    streams = {"cfg": [beats.cfg_beat(layout_fields(params.cfg_layout), layer, h, w)],
               "x": beats.act_beats(x_q, params.spec.act_bits),
               "w": beats.kernel_beats(layout_fields(params.kernel_layout), layer, params.p),
               "quant": beats.quant_beats(layout_fields(params.quant_layout), layer)}
    if params.post:
        top, left, height, width, pool = window or (0, 0, *layer.oaa.output_shape(h, w), False)
        streams["post"] = [pack_fields(layout_fields(params.window_layout), {
            "top": top, "left": left, "height": height, "width": width, "pool": int(pool)})]
    elif window is not None:
        raise ValueError("a window needs an engine with post stages (SpectralConvParams.post)")
    return streams


def post_output(out: np.ndarray, window: Window | None) -> np.ndarray:
    """What an engine with post stages gives of the output map `out` (C, H, W): its window, pooled 2 x 2 if set."""
    if window is None:
        return out
    top, left, height, width, pool = window
    out = out[:, top:top + height, left:left + width]
    return max_pool(out) if pool else out


def decode_output(params: SpectralConvParams, words: Sequence[int], shape: tuple[int, int, int]) -> np.ndarray:
    """Output beats (unsigned words) -> the signed int64 map of `shape` (C_out, H_out, W_out)."""
    bits = params.spec.out_bits
    v = np.asarray(list(words), dtype=np.int64) & ((1 << bits) - 1)
    if v.size != int(np.prod(shape)):
        raise ValueError(f"expected {int(np.prod(shape))} output values for {shape}, got {v.size}")
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v).reshape(shape)


__all__ = ["Window", "encode", "post_output", "decode_output"]
