"""The SPEC2 operator in float64, steps 1-5 of `hw.spec.spectral`: tiles, spectral channel mix, overlap-add,
crop; for spectral weights, spatial kernels or a whole sparse layer.
"""

from __future__ import annotations

import math

import numpy as np

from hw.spec.spectral.geometry import OaaParams, kernel_spectrum
from hw.spec.spectral.layer import SpectralLayer


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


def spectral_conv_float(x: np.ndarray, layer: SpectralLayer) -> np.ndarray:
    """The layer's operator in float64: (..., C_in, H, W) -> (..., C_out, H_out, W_out), bias and ReLU included."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 3 or x.shape[-3] != layer.c_in:
        raise ValueError(f"input must have shape (..., C_in={layer.c_in}, H, W), got {x.shape}")
    y = oaa_conv_float(x, layer.half_spectrum(), layer.oaa) + layer.bias.astype(np.float64)[:, None, None]
    return np.maximum(y, 0.0) if layer.relu else y
