"""The integer arithmetic every fixed-point spec shares: round-half-up right shifts and saturation."""

from __future__ import annotations

import numpy as np


def round_shift(v: np.ndarray, s: int) -> np.ndarray:
    """Round-half-up right shift of integers, (v + 2^(s-1)) >> s, as int64; v itself for s = 0.

    Exact for every int64 v and every s >= 0: it is computed as (v >> s) + bit s-1 of v, so v + 2^(s-1) never
    has to fit int64, and for s >= 64 it is 0 (NumPy's >> fills with the sign bit past the width). The FC
    engine's shifts are 0..62, the spectral engine's 0..62 too (its run-time fields), its FFT's a few bits.
    """
    v = np.asarray(v, dtype=np.int64)
    if s <= 0:
        return v
    return (v >> s) + ((v >> (s - 1)) & 1)


def saturate(v: np.ndarray, bits: int) -> np.ndarray:
    """v clamped to signed `bits`: -2^(bits-1)..2^(bits-1) - 1."""
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
