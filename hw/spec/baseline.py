"""Golden model of the dense baseline convolution (`hw.baseline.conv`): exact integer cross-correlation
(torch.nn.Conv2d's definition, stride 1, "same" or "valid"), then SPEC2's output stage (`spectral.fixed.requantize`).

y[o, r, c] = sum_{i,u,v} w[o, i, u, v] x[i, r + u - p, c + v - p], zero outside the map; p = (K - 1) // 2
for "same" (an even K's extra pad at the bottom/right, as torch), p = 0 for "valid" (H_out = H - K + 1).
"""

from __future__ import annotations

import numpy as np

from hw.spec.spectral.fixed import SpectralFixed, requantize
from hw.spec.spectral.geometry import PADDINGS
from hw.spec.spectral.layer import QuantParams


def conv2d_int(x: np.ndarray, w: np.ndarray, padding: str) -> np.ndarray:
    """Integer x (C_in, H, W) and w (C_out, C_in, K, K) -> exact int64 (C_out, H_out, W_out)."""
    x, w = np.asarray(x, dtype=np.int64), np.asarray(w, dtype=np.int64)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if x.ndim != 3 or w.ndim != 4 or w.shape[1] != x.shape[0] or w.shape[2] != w.shape[3]:
        raise ValueError(f"shapes must be x (C_in, H, W), w (C_out, C_in, K, K); got {x.shape}, {w.shape}")
    c_in, h, wd = x.shape
    k = w.shape[2]
    if padding == "same":
        p = (k - 1) // 2
        h_out, w_out = h, wd
    else:
        if h < k or wd < k:
            raise ValueError(f"'valid' padding needs a map of at least {k} x {k}, got {h} x {wd}")
        p, h_out, w_out = 0, h - k + 1, wd - k + 1
    padded = np.zeros((c_in, h_out + k - 1, w_out + k - 1), dtype=np.int64)
    rows, cols = min(h, h_out + k - 1 - p), min(wd, w_out + k - 1 - p)
    padded[:, p:p + rows, p:p + cols] = x[:, :rows, :cols]
    y = np.zeros((w.shape[0], h_out, w_out), dtype=np.int64)
    for u in range(k):
        for v in range(k):
            y += np.einsum("oi,ihw->ohw", w[:, :, u, v], padded[:, u:u + h_out, v:v + w_out])
    return y


def baseline_conv_fixed(x: np.ndarray, w: np.ndarray, padding: str, out_mult: int, out_shift: int,
                        bias_q: np.ndarray, relu: bool, spec: SpectralFixed | None = None) -> np.ndarray:
    """The bit-exact baseline layer: `conv2d_int`, then clamp(rs(v * out_mult + bias_q[o], out_shift))."""
    quant = QuantParams(1.0, 1.0, 0, int(out_mult), int(out_shift), np.asarray(bias_q, dtype=np.int64))
    return requantize(conv2d_int(x, w, padding), quant, spec or SpectralFixed(), relu)
